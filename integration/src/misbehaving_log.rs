//! The misbehaving log: the one imitation log of the end-to-end tests, because
//! real logs cannot be made to misbehave on demand.
//!
//! One server on loopback holds an honest Merkle tree and serves it through
//! two faces at once:
//! - c2sp.org/tlog-tiles: `GET /checkpoint` (a signed note, Ed25519 key),
//!   `GET /tile/<L>/<N>[.p/<W>]` and `GET /tile/entries/<N>[.p/<W>]`;
//! - the Rekor v1 REST subset the witness's `rekor-v1` feeder reads:
//!   `GET /api/v1/log`, `GET /api/v1/log/proof?firstSize=&lastSize=&treeID=`
//!   and `GET /api/v1/log/entries?logIndex=`, with the JSON shapes real Rekor v1
//!   returns and checkpoints signed as Rekor v1 signs them (ECDSA P-256 signed
//!   notes, origin `<name> - <treeID>`, one active shard).
//!
//! Both faces show the same tree. A test switches the log's [`Mode`] at run
//! time through a shared handle ([`MisbehavingLog::set_mode`]), without a
//! restart, so the witness first cosigns honest checkpoints and then meets the
//! misbehaviour on its next poll. Every mode is documented on its variant.
//!
//! The log remembers the largest tree it served honestly (its *published*
//! size, see [`MisbehavingLog::published_size`]): forks and rollbacks are
//! relative to it. A test waits until the witness cosigned the published size
//! on every face before switching to a misbehaviour, so that what the witness
//! sees next is provably bad.
//!
//! Nothing here is used by the witness: it is test equipment, built from the
//! same core Merkle helpers (`witness_core::merkle`, `witness_core::tiles`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::Signer as _;
use p256::pkcs8::EncodePublicKey as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;
use witness_core::merkle::{
    HASH_SIZE, Hash, LeafHashes, leaf_hash, prove_consistency, prove_inclusion, tree_root,
};
use witness_core::note::{Note, NoteSignature, SignatureType, VerifierKey};
use witness_core::tiles::{TILE_HEIGHT, TILE_WIDTH};

/// How the log behaves from now on. Switched with [`MisbehavingLog::set_mode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Serves the honest tree as it is, on both faces, correctly signed.
    Honest,
    /// Like [`Mode::Honest`], but appends `n` entries before answering each
    /// checkpoint request (`/checkpoint`, `/api/v1/log`), like a busy log.
    Grow(u64),
    /// A split view: a second tree that agrees with the honest one up to the
    /// entry before the published size, then has a different entry at
    /// `published - 1` (so at the published size it has a different root), and
    /// `extra` further entries of its own. `Fork { extra: 0 }` is two roots at
    /// one size; a larger `extra` is a consistent-looking continuation of the
    /// fork: its checkpoints, tiles, entries and proofs all agree with each
    /// other, just not with what the log published before. Switching between
    /// fork modes keeps the same fork (the entries are deterministic).
    /// Correctly signed. Needs a published size of at least 1.
    Fork { extra: u64 },
    /// Serves the honest tree's prefix `by` entries shorter than the published
    /// size (a smaller checkpoint after a bigger one), correctly signed.
    Rollback { by: u64 },
    /// Serves the honest tree's head signed by another key of the same name
    /// (its own key ID): the log's key never signed it.
    WrongKey,
    /// Like [`Mode::WrongKey`], but the signature line claims the log's own key
    /// ID, so a verifier that trusted the key ID alone would be fooled.
    ImpersonatedKey,
    /// Serves the honest head, correctly signed, with wrong hashes: every tile
    /// has its first hash altered, and every Rekor v1 consistency proof hash is
    /// altered. Entry bundles and Rekor v1 entries (with their inclusion proofs)
    /// stay honest, so a Rekor v1 client gets as far as the consistency proof.
    BadProof,
    /// Accepts connections and reads requests, but never answers: each request
    /// is held open until the mode changes or the log stops, and then answered
    /// 503.
    Stall,
    /// Answers honestly, but sends the body one byte per `every` (the status
    /// and headers go out at once).
    Trickle { every: Duration },
}

/// The two APIs the log serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Face {
    /// c2sp.org/tlog-tiles, signed with the Ed25519 key.
    Tiles,
    /// Rekor v1 REST, signed with the P-256 key.
    RekorV1,
}

/// A checkpoint as the log would serve it now on one face.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// The checkpoint's origin line.
    pub origin: String,
    /// Its tree size.
    pub size: u64,
    /// Its root hash.
    pub root: Hash,
    /// The signed note, byte for byte.
    pub note: Vec<u8>,
}

/// A running misbehaving log. Stops (and answers every stalled request) when
/// dropped.
pub struct MisbehavingLog {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl MisbehavingLog {
    /// Starts an honest log of `entries` entries on `127.0.0.1:<free port>`.
    /// `name` makes the keys, origins and entries (deterministic per name, so a
    /// restarted test log with the same name is the same log).
    pub async fn start(name: &str, entries: u64) -> Result<MisbehavingLog, String> {
        let shared = Arc::new(Shared::new(name, entries)?);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| format!("misbehaving log {name}: binding 127.0.0.1:0: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("misbehaving log {name}: {e}"))?;
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let mut changes = shared.changes.subscribe();
        let stopping = shared.clone();
        let server = tokio::spawn(async move {
            let shutdown = async move {
                while !stopping.stopped.load(Ordering::SeqCst) {
                    if changes.changed().await.is_err() {
                        return;
                    }
                }
            };
            // Errors of single connections are not interesting to a test; the
            // listener itself does not fail on loopback.
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await;
        });
        Ok(MisbehavingLog {
            shared,
            addr,
            server: Some(server),
        })
    }

    /// The base URL of both faces: `http://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The tiles face's origin (also its key name).
    pub fn tiles_origin(&self) -> &str {
        self.shared.tiles_key.verifier().name()
    }

    /// The tiles face's Ed25519 verifier key, as a vkey.
    pub fn tiles_vkey(&self) -> String {
        self.shared.tiles_key.verifier().to_vkey()
    }

    /// The Rekor v1 face's key name (the `<host>` part of its origin).
    pub fn rekor_v1_name(&self) -> &str {
        self.shared.rekor_key.verifier().name()
    }

    /// The Rekor v1 face's single shard's origin, `<name> - <treeID>`.
    pub fn rekor_v1_origin(&self) -> String {
        self.shared.rekor_origin()
    }

    /// The Rekor v1 shard's Trillian tree ID.
    pub fn rekor_v1_tree_id(&self) -> i64 {
        self.shared.tree_id
    }

    /// The Rekor v1 face's ECDSA P-256 verifier key, as a vkey.
    pub fn rekor_v1_vkey(&self) -> String {
        self.shared.rekor_key.verifier().to_vkey()
    }

    /// A witness `[[log]]` block pulling the tiles face.
    pub fn tiles_log_toml(&self) -> String {
        format!(
            "[[log]]\nkey = \"{}\"\nfeed = \"tiles\"\nurl = \"{}\"\n",
            self.tiles_vkey(),
            self.url()
        )
    }

    /// A witness `[[log]]` block pulling the Rekor v1 face.
    pub fn rekor_v1_log_toml(&self) -> String {
        format!(
            "[[log]]\nkey = \"{}\"\nfeed = \"rekor-v1\"\nurl = \"{}\"\n",
            self.rekor_v1_vkey(),
            self.url()
        )
    }

    /// The witness origin of a face: the tiles origin, or the Rekor v1 shard.
    pub fn origin(&self, face: Face) -> String {
        match face {
            Face::Tiles => self.tiles_origin().to_owned(),
            Face::RekorV1 => self.rekor_v1_origin(),
        }
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.shared.lock().mode
    }

    /// Switches the mode; requests already stalled are answered 503.
    pub fn set_mode(&self, mode: Mode) {
        self.grow_then_set_mode(0, mode);
    }

    /// Appends `n` honest entries and switches the mode, atomically: no request
    /// sees the grown tree in the old mode (so a misbehaviour can be made about
    /// a size the witness has not cosigned yet).
    pub fn grow_then_set_mode(&self, n: u64, mode: Mode) {
        {
            let mut state = self.shared.lock();
            state.honest.grow(&self.shared.name, false, n);
            state.mode = mode;
            if let Mode::Fork { extra } = mode {
                state.fork = state.honest.fork(&self.shared.name, state.published, extra);
            }
        }
        self.shared.changes.send_modify(|epoch| *epoch += 1);
    }

    /// Appends `n` honest entries (served from the next request on, in the
    /// modes that serve the honest head).
    pub fn grow(&self, n: u64) {
        self.shared.lock().honest.grow(&self.shared.name, false, n);
    }

    /// The largest tree served in [`Mode::Honest`] or [`Mode::Grow`].
    pub fn published_size(&self) -> u64 {
        self.shared.lock().published
    }

    /// Entries in the honest tree (served or not yet).
    pub fn honest_size(&self) -> u64 {
        self.shared.lock().honest.len()
    }

    /// The honest tree's root at `size` (at most [`MisbehavingLog::honest_size`]).
    pub fn honest_root(&self, size: u64) -> Option<Hash> {
        self.shared.lock().honest.root(size)
    }

    /// The checkpoint the current mode serves on `face`, computed without
    /// serving it (no growth, nothing published).
    pub fn served(&self, face: Face) -> Served {
        let state = self.shared.lock();
        let view = state.view();
        let note = self.shared.checkpoint_note(face, &view);
        Served {
            origin: self.origin(face),
            size: view.size,
            root: view.root(),
            note,
        }
    }

    /// Requests received so far (any path).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Requests being held open by [`Mode::Stall`] right now.
    pub fn stalled_requests(&self) -> u64 {
        self.shared.stalled.load(Ordering::SeqCst)
    }

    /// Stops the server: answers stalled requests, finishes the others, and
    /// waits for the listener to close.
    pub async fn stop(mut self) {
        self.signal_stop();
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
    }

    fn signal_stop(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.changes.send_modify(|epoch| *epoch += 1);
    }
}

impl Drop for MisbehavingLog {
    fn drop(&mut self) {
        self.signal_stop();
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// A note signing key and its verifier.
enum NoteKey {
    Ed25519 {
        signing: ed25519_dalek::SigningKey,
        verifier: VerifierKey,
    },
    P256 {
        signing: Box<p256::ecdsa::SigningKey>,
        verifier: VerifierKey,
        spki_der: Vec<u8>,
    },
}

impl NoteKey {
    fn ed25519(name: &str, seed: &[u8]) -> Result<NoteKey, String> {
        let signing = ed25519_dalek::SigningKey::from_bytes(&derive(seed));
        let verifier = VerifierKey::from_material(
            name,
            SignatureType::Ed25519,
            signing.verifying_key().as_bytes(),
        )
        .map_err(|e| format!("Ed25519 key {name}: {e}"))?;
        Ok(NoteKey::Ed25519 { signing, verifier })
    }

    fn p256(name: &str, seed: &[u8]) -> Result<NoteKey, String> {
        let signing = p256::ecdsa::SigningKey::from_slice(&derive(seed))
            .map_err(|e| format!("P-256 key {name}: {e}"))?;
        let spki_der = signing
            .verifying_key()
            .to_public_key_der()
            .map_err(|e| format!("P-256 key {name}: {e}"))?
            .into_vec();
        let verifier = VerifierKey::from_material(name, SignatureType::EcdsaP256, &spki_der)
            .map_err(|e| format!("P-256 key {name}: {e}"))?;
        Ok(NoteKey::P256 {
            signing: Box::new(signing),
            verifier,
            spki_der,
        })
    }

    fn verifier(&self) -> &VerifierKey {
        match self {
            NoteKey::Ed25519 { verifier, .. } | NoteKey::P256 { verifier, .. } => verifier,
        }
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            NoteKey::Ed25519 { signing, .. } => signing.sign(message).to_bytes().to_vec(),
            NoteKey::P256 { signing, .. } => {
                let signature: p256::ecdsa::Signature =
                    p256::ecdsa::signature::Signer::sign(signing.as_ref(), message);
                signature.to_der().as_bytes().to_vec()
            }
        }
    }
}

/// A 32-byte secret from a seed (test keys, deterministic per log name).
fn derive(seed: &[u8]) -> [u8; 32] {
    Sha256::digest(seed).into()
}

/// What the server shares with every request and with the test's handle.
struct Shared {
    name: String,
    tiles_key: NoteKey,
    rekor_key: NoteKey,
    /// Same names as the log's keys, other key material.
    other_tiles_key: NoteKey,
    other_rekor_key: NoteKey,
    tree_id: i64,
    // A std mutex: every request computes its answer without awaiting, and the
    // test's handle switches modes from synchronous code.
    state: Mutex<LogState>,
    /// Bumped on every mode switch and on stop; stalled requests wait on it.
    changes: watch::Sender<u64>,
    stopped: AtomicBool,
    requests: AtomicU64,
    stalled: AtomicU64,
}

impl Shared {
    fn new(name: &str, entries: u64) -> Result<Shared, String> {
        let tiles_name = format!("misbehaving.test/{name}");
        let rekor_name = format!("{name}.rekor-v1.misbehaving.test");
        let seed = |purpose: &str| format!("misbehaving log {name}: {purpose}").into_bytes();
        let tree_id = i64::from_be_bytes(
            derive(&seed("tree ID"))[..8]
                .try_into()
                .map_err(|_| "tree ID: a SHA-256 digest has 8 bytes".to_owned())?,
        ) & i64::MAX;
        let mut honest = Tree::default();
        honest.grow(name, false, entries);
        let (changes, _) = watch::channel(0);
        Ok(Shared {
            name: name.to_owned(),
            tiles_key: NoteKey::ed25519(&tiles_name, &seed("tiles key"))?,
            rekor_key: NoteKey::p256(&rekor_name, &seed("rekor key"))?,
            other_tiles_key: NoteKey::ed25519(&tiles_name, &seed("other tiles key"))?,
            other_rekor_key: NoteKey::p256(&rekor_name, &seed("other rekor key"))?,
            tree_id: tree_id.max(1),
            state: Mutex::new(LogState {
                mode: Mode::Honest,
                published: 0,
                honest,
                fork: Tree::default(),
            }),
            changes,
            stopped: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            stalled: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        // A panic while holding the lock cannot leave the state half-updated
        // in a way that matters to a test log.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn rekor_origin(&self) -> String {
        format!("{} - {}", self.rekor_key.verifier().name(), self.tree_id)
    }

    /// The signed checkpoint note of `view` on `face`.
    fn checkpoint_note(&self, face: Face, view: &View<'_>) -> Vec<u8> {
        let (origin, key, other) = match face {
            Face::Tiles => (
                self.tiles_key.verifier().name().to_owned(),
                &self.tiles_key,
                &self.other_tiles_key,
            ),
            Face::RekorV1 => (self.rekor_origin(), &self.rekor_key, &self.other_rekor_key),
        };
        let text = format!("{origin}\n{}\n{}\n", view.size, view.root().to_base64());
        let (signer, key_id) = match view.signing {
            Signing::LogKey => (key, key.verifier().key_id()),
            Signing::OtherKey => (other, other.verifier().key_id()),
            Signing::OtherKeyClaimingLogKeyId => (other, key.verifier().key_id()),
        };
        let signature = signer.sign(text.as_bytes());
        // The name is a valid key name (it made a verifier key above), so the
        // note always assembles; an empty body would only fail a test loudly.
        NoteSignature::new(key.verifier().name(), key_id, signature)
            .and_then(|line| Note::new(&text, vec![line]))
            .map(|note| note.to_bytes())
            .unwrap_or_default()
    }
}

/// The log's mutable state.
struct LogState {
    mode: Mode,
    /// Largest tree size served in an honest mode.
    published: u64,
    honest: Tree,
    /// The fork of [`Mode::Fork`], built when switching to it.
    fork: Tree,
}

impl LogState {
    /// What the current mode serves.
    fn view(&self) -> View<'_> {
        let honest = |signing, corrupt| View {
            tree: &self.honest,
            size: self.honest.len(),
            signing,
            corrupt,
        };
        match self.mode {
            Mode::Honest | Mode::Grow(_) | Mode::Stall | Mode::Trickle { .. } => {
                honest(Signing::LogKey, false)
            }
            Mode::WrongKey => honest(Signing::OtherKey, false),
            Mode::ImpersonatedKey => honest(Signing::OtherKeyClaimingLogKeyId, false),
            Mode::BadProof => honest(Signing::LogKey, true),
            Mode::Fork { .. } => View {
                tree: &self.fork,
                size: self.fork.len(),
                signing: Signing::LogKey,
                corrupt: false,
            },
            Mode::Rollback { by } => View {
                tree: &self.honest,
                size: self.published.saturating_sub(by).min(self.honest.len()),
                signing: Signing::LogKey,
                corrupt: false,
            },
        }
    }

    /// A checkpoint request's side effects: growth, and the published size.
    fn before_checkpoint(&mut self, name: &str) {
        if let Mode::Grow(n) = self.mode {
            self.honest.grow(name, false, n);
        }
        if matches!(self.mode, Mode::Honest | Mode::Grow(_)) {
            self.published = self.published.max(self.honest.len());
        }
    }
}

/// Who signs a served checkpoint.
#[derive(Clone, Copy)]
enum Signing {
    LogKey,
    OtherKey,
    OtherKeyClaimingLogKeyId,
}

/// A tree at the size one mode serves.
struct View<'a> {
    tree: &'a Tree,
    size: u64,
    signing: Signing,
    /// Alter tile hashes and consistency proofs.
    corrupt: bool,
}

impl View<'_> {
    fn root(&self) -> Hash {
        self.tree
            .root(self.size)
            .unwrap_or(witness_core::merkle::empty_root())
    }
}

/// Entries and their leaf hashes.
#[derive(Clone, Default)]
struct Tree {
    entries: Vec<Vec<u8>>,
    leaves: Vec<Hash>,
}

impl Tree {
    fn len(&self) -> u64 {
        self.leaves.len() as u64
    }

    /// Appends `n` entries; fork entries differ from honest ones at each index.
    fn grow(&mut self, name: &str, fork: bool, n: u64) {
        for _ in 0..n {
            let index = self.leaves.len();
            let kind = if fork { "fork" } else { "honest" };
            let entry = format!(
                "{{\"log\":\"misbehaving.test/{name}\",\"index\":{index},\"kind\":\"{kind}\"}}"
            )
            .into_bytes();
            self.leaves.push(leaf_hash(&entry));
            self.entries.push(entry);
        }
    }

    /// The fork of this tree at `at` (see [`Mode::Fork`]).
    fn fork(&self, name: &str, at: u64, extra: u64) -> Tree {
        let keep = at.saturating_sub(1).min(self.len()) as usize;
        let mut fork = Tree {
            entries: self.entries[..keep].to_vec(),
            leaves: self.leaves[..keep].to_vec(),
        };
        fork.grow(name, true, at.max(1) - keep as u64 + extra);
        fork
    }

    fn prefix(&self, size: u64) -> Option<LeafHashes<'_>> {
        self.leaves
            .get(..usize::try_from(size).ok()?)
            .map(LeafHashes)
    }

    fn root(&self, size: u64) -> Option<Hash> {
        tree_root(&mut self.prefix(size)?, size).ok()
    }

    fn consistency(&self, old: u64, new: u64) -> Option<Vec<Hash>> {
        if old == new {
            return Some(Vec::new());
        }
        prove_consistency(&mut self.prefix(new)?, old, new).ok()
    }

    fn inclusion(&self, index: u64, size: u64) -> Option<Vec<Hash>> {
        prove_inclusion(&mut self.prefix(size)?, index, size).ok()
    }

    /// Tile `level`/`index` of `width` hashes in the tree of `size` leaves.
    fn tile(&self, size: u64, level: u8, index: u64, width: u64) -> Option<Vec<u8>> {
        let height = level.checked_mul(TILE_HEIGHT)?;
        let available = size.checked_shr(u32::from(height)).unwrap_or(0);
        let first = index.checked_mul(TILE_WIDTH)?;
        if first.checked_add(width)? > available {
            return None;
        }
        let mut source = self.prefix(size)?;
        let mut bytes = Vec::with_capacity(width as usize * HASH_SIZE);
        for k in first..first + width {
            use witness_core::merkle::SubtreeHashSource as _;
            bytes.extend_from_slice(&source.subtree_hash(height, k).ok()?.0);
        }
        Some(bytes)
    }

    /// Entry bundle `index` of `width` entries in the tree of `size` leaves.
    fn bundle(&self, size: u64, index: u64, width: u64) -> Option<Vec<u8>> {
        let first = index.checked_mul(TILE_WIDTH)?;
        if first.checked_add(width)? > size {
            return None;
        }
        let mut bytes = Vec::new();
        for entry in self.entries.get(first as usize..(first + width) as usize)? {
            bytes.extend_from_slice(&u16::try_from(entry.len()).ok()?.to_be_bytes());
            bytes.extend_from_slice(entry);
        }
        Some(bytes)
    }
}

/// A hash with one bit flipped.
fn altered(hash: &Hash) -> Hash {
    let mut bytes = hash.0;
    bytes[0] ^= 1;
    Hash(bytes)
}

/// An answer computed under the lock, sent after it is released.
struct Answer {
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Answer {
    fn ok(content_type: &'static str, body: Vec<u8>) -> Answer {
        Answer {
            status: StatusCode::OK,
            content_type,
            body,
        }
    }

    fn json(value: &serde_json::Value) -> Answer {
        Answer::ok(
            "application/json",
            serde_json::to_vec(value).unwrap_or_default(),
        )
    }

    fn text(status: StatusCode, message: &str) -> Answer {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{message}\n").into_bytes(),
        }
    }

    /// A Rekor v1 error body: `{"code": <status>, "message": ...}`.
    fn rekor_error(status: StatusCode, message: &str) -> Answer {
        Answer {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(&serde_json::json!({
                "code": status.as_u16(),
                "message": message,
            }))
            .unwrap_or_default(),
        }
    }

    fn not_found() -> Answer {
        Answer::text(StatusCode::NOT_FOUND, "not found")
    }
}

async fn handle(State(shared): State<Arc<Shared>>, method: Method, uri: Uri) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    if method != Method::GET {
        return Answer::text(StatusCode::METHOD_NOT_ALLOWED, "only GET").into_response();
    }
    let mode = shared.lock().mode;
    if mode == Mode::Stall {
        return stall(&shared).await;
    }
    let answer = answer(&shared, uri.path(), uri.query().unwrap_or(""));
    match mode {
        Mode::Trickle { every } => trickle(answer, every),
        _ => answer.into_response(),
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        (self.status, [(CONTENT_TYPE, self.content_type)], self.body).into_response()
    }
}

/// Holds a request until the mode changes or the log stops.
async fn stall(shared: &Shared) -> Response {
    let mut changes = shared.changes.subscribe();
    shared.stalled.fetch_add(1, Ordering::SeqCst);
    // Err: the log is gone.
    let _ = changes.changed().await;
    shared.stalled.fetch_sub(1, Ordering::SeqCst);
    Answer::text(StatusCode::SERVICE_UNAVAILABLE, "stalled").into_response()
}

/// Sends `answer`'s body one byte per `every`.
fn trickle(answer: Answer, every: Duration) -> Response {
    let bytes = futures::stream::unfold((answer.body, 0usize), move |(body, sent)| async move {
        let byte = *body.get(sent)?;
        tokio::time::sleep(every).await;
        Some((Ok::<_, std::io::Error>(vec![byte]), (body, sent + 1)))
    });
    (
        answer.status,
        [(CONTENT_TYPE, answer.content_type)],
        Body::from_stream(bytes),
    )
        .into_response()
}

fn answer(shared: &Shared, path: &str, query: &str) -> Answer {
    let mut state = shared.lock();
    match path {
        "/checkpoint" => {
            state.before_checkpoint(&shared.name);
            let view = state.view();
            Answer::ok(
                "text/plain; charset=utf-8",
                shared.checkpoint_note(Face::Tiles, &view),
            )
        }
        "/api/v1/log" => {
            state.before_checkpoint(&shared.name);
            log_info(shared, &state.view())
        }
        "/api/v1/log/proof" => consistency_proof(shared, &state.view(), query),
        "/api/v1/log/entries" => log_entry(shared, &state.view(), query),
        _ => match path.strip_prefix("/tile/") {
            Some(tile) => tile_resource(&state.view(), tile),
            None => Answer::not_found(),
        },
    }
}

/// `GET /tile/<L>/<N>[.p/<W>]` and `GET /tile/entries/<N>[.p/<W>]`.
fn tile_resource(view: &View<'_>, path: &str) -> Answer {
    let Some(tile) = parse_tile_path(path) else {
        return Answer::text(StatusCode::BAD_REQUEST, "malformed tile path");
    };
    let found = match tile.level {
        None => view.tree.bundle(view.size, tile.index, tile.width),
        Some(level) => view
            .tree
            .tile(view.size, level, tile.index, tile.width)
            .map(|mut bytes| {
                if view.corrupt {
                    bytes[0] ^= 1;
                }
                bytes
            }),
    };
    match found {
        Some(bytes) => Answer::ok("application/octet-stream", bytes),
        None => Answer::not_found(),
    }
}

/// A requested tile: `level` is `None` for an entry bundle.
#[derive(Debug, PartialEq, Eq)]
struct TilePath {
    level: Option<u8>,
    index: u64,
    width: u64,
}

/// Parses `<L>/<N>[.p/<W>]` or `entries/<N>[.p/<W>]` (c2sp.org/tlog-tiles): `N`
/// in groups of three digits, all but the last prefixed `x`; `W` in 1..=255.
fn parse_tile_path(path: &str) -> Option<TilePath> {
    let (level, rest) = path.split_once('/')?;
    let level = match level {
        "entries" => None,
        digits => Some(decimal(digits).filter(|&l| l <= 63).map(|l| l as u8)?),
    };
    let (index_path, width) = match rest.split_once(".p/") {
        Some((index_path, width)) => (
            index_path,
            decimal(width).filter(|w| (1..TILE_WIDTH).contains(w))?,
        ),
        None => (rest, TILE_WIDTH),
    };
    let groups: Vec<&str> = index_path.split('/').collect();
    let (last, leading) = groups.split_last()?;
    let mut index = 0u64;
    for group in leading
        .iter()
        .map(|g| g.strip_prefix('x'))
        .chain([Some(*last)])
    {
        let group = group.filter(|g| g.len() == 3 && g.bytes().all(|b| b.is_ascii_digit()))?;
        index = index.checked_mul(1000)?.checked_add(group.parse().ok()?)?;
    }
    Some(TilePath {
        level,
        index,
        width,
    })
}

/// A decimal number without leading zeros.
fn decimal(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// One `name=value` of a query string.
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// `GET /api/v1/log`: the active shard's tree head (Rekor v1 `LogInfo`).
fn log_info(shared: &Shared, view: &View<'_>) -> Answer {
    let note = shared.checkpoint_note(Face::RekorV1, view);
    Answer::json(&serde_json::json!({
        "rootHash": view.root().to_hex(),
        "signedTreeHead": String::from_utf8_lossy(&note),
        "treeID": shared.tree_id.to_string(),
        "treeSize": view.size,
    }))
}

/// `GET /api/v1/log/proof?firstSize=&lastSize=&treeID=` (Rekor v1
/// `ConsistencyProof`): `rootHash` is the newest root, as in real Rekor.
fn consistency_proof(shared: &Shared, view: &View<'_>, query: &str) -> Answer {
    let bad = |message| Answer::rekor_error(StatusCode::BAD_REQUEST, message);
    if let Some(tree_id) = query_param(query, "treeID")
        && tree_id != shared.tree_id.to_string()
    {
        return bad("unknown treeID");
    }
    let first = match query_param(query, "firstSize") {
        None => Some(1),
        Some(text) => decimal(text),
    };
    let last = query_param(query, "lastSize").and_then(decimal);
    let (Some(first), Some(last)) = (first, last) else {
        return bad("firstSize and lastSize must be decimal sizes");
    };
    if first == 0 || first > last || last > view.size {
        return bad("need 1 <= firstSize <= lastSize <= the tree size");
    }
    let Some(mut hashes) = view.tree.consistency(first, last) else {
        return Answer::rekor_error(StatusCode::INTERNAL_SERVER_ERROR, "no proof");
    };
    if view.corrupt {
        hashes = hashes.iter().map(altered).collect();
    }
    Answer::json(&serde_json::json!({
        "hashes": hashes.iter().map(Hash::to_hex).collect::<Vec<_>>(),
        "rootHash": view.root().to_hex(),
    }))
}

/// `GET /api/v1/log/entries?logIndex=` (Rekor v1 `LogEntry`): one member keyed
/// by the entry UUID (tree ID and leaf hash in hex), with the inclusion proof
/// in the tree being served and its signed checkpoint.
fn log_entry(shared: &Shared, view: &View<'_>, query: &str) -> Answer {
    let Some(index) = query_param(query, "logIndex").and_then(decimal) else {
        return Answer::rekor_error(StatusCode::BAD_REQUEST, "logIndex must be a decimal index");
    };
    let entry = view
        .tree
        .entries
        .get(index as usize)
        .filter(|_| index < view.size);
    let (Some(entry), Some(proof)) = (entry, view.tree.inclusion(index, view.size)) else {
        return Answer::rekor_error(StatusCode::NOT_FOUND, "no entry at this index");
    };
    let NoteKey::P256 {
        signing, spki_der, ..
    } = &shared.rekor_key
    else {
        return Answer::rekor_error(StatusCode::INTERNAL_SERVER_ERROR, "no P-256 key");
    };
    let log_id = hex::encode(Sha256::digest(spki_der));
    let body = BASE64.encode(entry);
    let integrated_time = 1_700_000_000 + index;
    // The signed entry timestamp signs the canonical JSON of these four
    // fields (sorted keys, as serde_json's map keeps them).
    let stamped = serde_json::json!({
        "body": body,
        "integratedTime": integrated_time,
        "logID": log_id,
        "logIndex": index,
    });
    let set: p256::ecdsa::Signature = p256::ecdsa::signature::Signer::sign(
        signing.as_ref(),
        &serde_json::to_vec(&stamped).unwrap_or_default(),
    );
    let note = shared.checkpoint_note(Face::RekorV1, view);
    let mut uuid = format!("{:016x}", shared.tree_id);
    let _ = write!(uuid, "{}", leaf_hash(entry).to_hex());
    Answer::json(&serde_json::json!({
        uuid: {
            "body": body,
            "integratedTime": integrated_time,
            "logID": log_id,
            "logIndex": index,
            "verification": {
                "inclusionProof": {
                    "checkpoint": String::from_utf8_lossy(&note),
                    "hashes": proof.iter().map(Hash::to_hex).collect::<Vec<_>>(),
                    "logIndex": index,
                    "rootHash": view.root().to_hex(),
                    "treeSize": view.size,
                },
                "signedEntryTimestamp": BASE64.encode(set.to_der().as_bytes()),
            },
        }
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use witness_core::checkpoint::verify_checkpoint;
    use witness_core::merkle::{verify_consistency, verify_inclusion};
    use witness_core::rekor::{parse_consistency_proof_response, parse_log_entry, parse_log_info};
    use witness_core::tiles::{TileHashSource, TileId, parse_entry_bundle};

    async fn get(log: &MisbehavingLog, path: &str) -> (u16, Vec<u8>) {
        let response = reqwest::get(format!("{}{path}", log.url())).await.unwrap();
        let status = response.status().as_u16();
        (status, response.bytes().await.unwrap().to_vec())
    }

    fn tiles_key(log: &MisbehavingLog) -> Vec<VerifierKey> {
        vec![VerifierKey::parse_vkey(&log.tiles_vkey()).unwrap()]
    }

    fn rekor_key(log: &MisbehavingLog) -> Vec<VerifierKey> {
        vec![VerifierKey::parse_vkey(&log.rekor_v1_vkey()).unwrap()]
    }

    /// The root of the tree of `size` leaves, computed by a client from the
    /// served tiles.
    async fn root_from_tiles(log: &MisbehavingLog, size: u64) -> Hash {
        let mut tiles = std::collections::HashMap::new();
        let needed =
            witness_core::tiles::required_tiles(size, |source| tree_root(source, size)).unwrap();
        for tile in needed {
            let (status, bytes) = get(log, &tile.path()).await;
            assert_eq!(status, 200, "{}", tile.path());
            tiles.insert((tile.level, tile.index), bytes);
        }
        let mut source = TileHashSource::new(size, |tile: &TileId| {
            Ok(tiles[&(tile.level, tile.index)].clone())
        });
        tree_root(&mut source, size).unwrap()
    }

    #[test]
    fn tile_paths_parse_as_the_spec_writes_them() {
        let parsed = |path| parse_tile_path(path);
        assert_eq!(
            parsed("0/x001/234.p/5"),
            Some(TilePath {
                level: Some(0),
                index: 1234,
                width: 5
            })
        );
        assert_eq!(
            parsed("entries/000"),
            Some(TilePath {
                level: None,
                index: 0,
                width: 256
            })
        );
        for bad in [
            "0/1",
            "0/0001",
            "01/000",
            "0/000.p/0",
            "0/000.p/256",
            "0/y001/000",
            "64/000",
            "0/",
            "entries",
            "0/000.p/05",
        ] {
            assert_eq!(parsed(bad), None, "{bad}");
        }
        for size in [1u64, 255, 256, 70_000, 1_234_567] {
            for level in 0..3 {
                let tile = TileId::for_tree_size(level, 0, size).unwrap_or(TileId {
                    level,
                    index: 0,
                    width: 1,
                });
                let path = tile.path();
                let parsed = parse_tile_path(path.strip_prefix("tile/").unwrap()).unwrap();
                assert_eq!(parsed.index, tile.index);
                assert_eq!(parsed.width, u64::from(tile.width));
            }
        }
    }

    #[tokio::test]
    async fn honest_faces_verify_and_agree_on_the_tree() {
        let log = MisbehavingLog::start("unit-honest", 300).await.unwrap();
        let (status, note) = get(&log, "checkpoint").await;
        assert_eq!(status, 200);
        let tiles = verify_checkpoint(&note, &tiles_key(&log), Some(log.tiles_origin())).unwrap();
        assert_eq!(tiles.checkpoint().size(), 300);
        assert_eq!(log.published_size(), 300);
        let root = *tiles.checkpoint().root_hash();
        assert_eq!(root_from_tiles(&log, 300).await, root);

        let (_, bundle) = get(&log, "tile/entries/001.p/44").await;
        let entries = parse_entry_bundle(&bundle, 44).unwrap();
        assert!(String::from_utf8_lossy(entries[0]).contains("\"index\":256"));

        let (_, info) = get(&log, "api/v1/log").await;
        let info = parse_log_info(&info).unwrap();
        let shard = info.active.verify(&rekor_key(&log)).unwrap();
        assert_eq!(shard.checkpoint().origin(), log.rekor_v1_origin());
        assert_eq!(*shard.checkpoint().root_hash(), root);

        let tree_id = log.rekor_v1_tree_id();
        let (_, proof) = get(
            &log,
            &format!("api/v1/log/proof?firstSize=100&lastSize=300&treeID={tree_id}"),
        )
        .await;
        let proof = parse_consistency_proof_response(&proof).unwrap();
        let old = log.honest_root(100).unwrap();
        verify_consistency(100, 300, &old, &root, &proof.hashes).unwrap();

        let (_, entry) = get(&log, "api/v1/log/entries?logIndex=257").await;
        let entry = parse_log_entry(&entry).unwrap();
        entry.verify_inclusion(&rekor_key(&log)).unwrap();
        let inclusion = entry.inclusion_proof.clone().unwrap();
        verify_inclusion(&entry.leaf_hash(), 257, 300, &inclusion.hashes, &root).unwrap();

        assert_eq!(get(&log, "tile/0/002").await.0, 404);
        assert_eq!(
            get(&log, "api/v1/log/proof?firstSize=1&lastSize=301")
                .await
                .0,
            400
        );
        assert_eq!(get(&log, "api/v1/log/entries?logIndex=300").await.0, 404);
        log.stop().await;
    }

    #[tokio::test]
    async fn fork_serves_a_second_root_at_the_published_size_and_a_consistent_continuation() {
        let log = MisbehavingLog::start("unit-fork", 10).await.unwrap();
        get(&log, "checkpoint").await;
        let published = log.honest_root(10).unwrap();
        log.set_mode(Mode::Fork { extra: 0 });
        let (_, note) = get(&log, "checkpoint").await;
        let fork = verify_checkpoint(&note, &tiles_key(&log), None).unwrap();
        assert_eq!(fork.checkpoint().size(), 10);
        assert_ne!(*fork.checkpoint().root_hash(), published);
        assert_eq!(
            root_from_tiles(&log, 10).await,
            *fork.checkpoint().root_hash()
        );
        // Same prefix up to the forked entry.
        // (One lock at a time: the guard of a temporary lives to the end of
        // its statement, and the mutex is not reentrant.)
        let fork_prefix = log.shared.lock().fork.root(9);
        assert_eq!(
            fork_prefix,
            log.honest_root(9),
            "the fork shares the first 9 entries"
        );

        let fork_root = *fork.checkpoint().root_hash();
        log.set_mode(Mode::Fork { extra: 5 });
        let served = log.served(Face::RekorV1);
        assert_eq!(served.size, 15);
        let (_, proof) = get(&log, "api/v1/log/proof?firstSize=10&lastSize=15").await;
        let proof = parse_consistency_proof_response(&proof).unwrap();
        verify_consistency(10, 15, &fork_root, &served.root, &proof.hashes).unwrap();
        assert!(verify_consistency(10, 15, &published, &served.root, &proof.hashes).is_err());
        log.stop().await;
    }

    #[tokio::test]
    async fn rollback_wrong_key_and_bad_proof_serve_what_they_say() {
        let log = MisbehavingLog::start("unit-modes", 8).await.unwrap();
        get(&log, "checkpoint").await;
        log.set_mode(Mode::Rollback { by: 3 });
        let (_, info) = get(&log, "api/v1/log").await;
        let shard = parse_log_info(&info).unwrap().active;
        assert_eq!(shard.tree_size, 5);
        shard.verify(&rekor_key(&log)).unwrap();
        assert_eq!(log.published_size(), 8, "a rollback is not published");

        for mode in [Mode::WrongKey, Mode::ImpersonatedKey] {
            log.grow_then_set_mode(1, mode);
            let (_, note) = get(&log, "checkpoint").await;
            let error = verify_checkpoint(&note, &tiles_key(&log), None).unwrap_err();
            let (_, info) = get(&log, "api/v1/log").await;
            let shard = parse_log_info(&info).unwrap().active;
            assert!(shard.verify(&rekor_key(&log)).is_err());
            let expected = match mode {
                Mode::WrongKey => "no_trusted_signature",
                _ => "invalid_signature",
            };
            assert_eq!(error.kind(), expected);
        }

        log.grow_then_set_mode(2, Mode::BadProof);
        let (_, note) = get(&log, "checkpoint").await;
        let head = verify_checkpoint(&note, &tiles_key(&log), None).unwrap();
        let size = head.checkpoint().size();
        assert_ne!(
            root_from_tiles(&log, size).await,
            *head.checkpoint().root_hash()
        );
        let (_, proof) = get(
            &log,
            &format!("api/v1/log/proof?firstSize=8&lastSize={size}"),
        )
        .await;
        let proof = parse_consistency_proof_response(&proof).unwrap();
        let error = verify_consistency(
            8,
            size,
            &log.honest_root(8).unwrap(),
            head.checkpoint().root_hash(),
            &proof.hashes,
        );
        assert!(error.is_err());
        log.stop().await;
    }

    #[tokio::test]
    async fn grow_adds_entries_on_each_checkpoint_request() {
        let log = MisbehavingLog::start("unit-grow", 1).await.unwrap();
        log.set_mode(Mode::Grow(3));
        get(&log, "checkpoint").await;
        let (_, info) = get(&log, "api/v1/log").await;
        assert_eq!(parse_log_info(&info).unwrap().active.tree_size, 7);
        assert_eq!(log.published_size(), 7);
        log.stop().await;
    }

    #[tokio::test]
    async fn stall_holds_requests_until_the_mode_changes_and_trickle_is_slow() {
        let log = MisbehavingLog::start("unit-stall", 4).await.unwrap();
        log.set_mode(Mode::Stall);
        let url = format!("{}checkpoint", log.url());
        let stalled = tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status()) });
        let held = tokio::time::timeout(Duration::from_secs(5), async {
            while log.stalled_requests() == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(held.is_ok(), "the request was not held");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!stalled.is_finished(), "a stalled request was answered");
        log.set_mode(Mode::Trickle {
            every: Duration::from_millis(20),
        });
        assert_eq!(stalled.await.unwrap().unwrap(), 503);

        let started = std::time::Instant::now();
        let (status, note) = get(&log, "checkpoint").await;
        assert_eq!(status, 200);
        assert!(started.elapsed() >= Duration::from_millis(20) * (note.len() as u32 - 1));
        verify_checkpoint(&note, &tiles_key(&log), None).unwrap();
        log.stop().await;
    }
}
