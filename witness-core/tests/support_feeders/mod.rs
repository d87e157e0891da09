//! Test logs and a verifying witness for the feeder tests: an in-memory
//! [`CheckpointSink`] that checks signatures and consistency proofs with the
//! core, a Rekor v1 server (recorded staging responses, or a synthetic log with
//! entries), and a tlog-tiles server built from real leaves.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::Signer as _;
use rand::Rng as _;
use witness_core::checkpoint::{parse_checkpoint_text, verify_checkpoint};
use witness_core::merkle::{
    Hash, LeafHashes, RootBuilder, leaf_hash, prove_consistency, prove_inclusion,
    verify_consistency,
};
use witness_core::note::{Note, NoteSignature, SignatureType, VerifierKey, parse_note};
use witness_core::service::feeder::CheckpointSink;
use witness_core::service::metrics::WitnessMetrics;
use witness_core::service::store::StoredTree;
use witness_core::{Error, Result};

// ---------------------------------------------------------------------------
// Shared data and keys
// ---------------------------------------------------------------------------

/// A file below `../shared/testdata`.
pub fn data(relative: &str) -> Vec<u8> {
    let path = format!(
        "{}/{relative}",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The real Rekor staging log key (ECDSA P-256, note type 0x02).
pub fn staging_key() -> VerifierKey {
    let pem = String::from_utf8(data("rekor/keys/rekor.sigstage.dev.pub.pem")).unwrap();
    VerifierKey::from_pem("rekor.sigstage.dev", &pem).unwrap()
}

/// An Ed25519 note key from a fixed seed.
pub fn ed25519_key(name: &str, seed: u8) -> (ed25519_dalek::SigningKey, VerifierKey) {
    let signing = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let verifier = VerifierKey::from_material(
        name,
        SignatureType::Ed25519,
        signing.verifying_key().as_bytes(),
    )
    .unwrap();
    (signing, verifier)
}

/// A checkpoint note signed by an Ed25519 key.
pub fn signed_checkpoint(
    signing: &ed25519_dalek::SigningKey,
    verifier: &VerifierKey,
    origin: &str,
    size: u64,
    root: &Hash,
) -> Vec<u8> {
    let text = format!("{origin}\n{size}\n{}\n", root.to_base64());
    let signature = NoteSignature::new(
        verifier.name(),
        verifier.key_id(),
        signing.sign(text.as_bytes()).to_bytes().to_vec(),
    )
    .unwrap();
    Note::new(&text, vec![signature]).unwrap().to_bytes()
}

/// The root of the first `size` leaves.
pub fn root_of(leaves: &[Hash], size: u64) -> Hash {
    let mut builder = RootBuilder::new();
    for leaf in &leaves[..size as usize] {
        builder.push(*leaf);
    }
    builder.root()
}

// ---------------------------------------------------------------------------
// A witness in memory
// ---------------------------------------------------------------------------

/// One `add_checkpoint` call and its result.
#[derive(Clone, Debug)]
pub struct Submission {
    pub origin: String,
    pub old_size: u64,
    pub size: u64,
    pub proof: Vec<Hash>,
    pub result: std::result::Result<(), &'static str>,
}

/// A witness that verifies like the real one: the log's signature on the note,
/// the old size against its state, and the consistency proof against the
/// stored root, with the core's functions. Like the real one, it counts its
/// answers in `witness_cosignatures_total` when given metrics.
pub struct MemorySink {
    trusted: HashMap<String, Vec<VerifierKey>>,
    metrics: Option<Arc<WitnessMetrics>>,
    state: Mutex<HashMap<String, StoredTree>>,
    pub submissions: Mutex<Vec<Submission>>,
    /// `cosigned_tree` answers "nothing" this many more times, as a replica
    /// that read its state before another one stored a checkpoint would.
    pub stale_reads: AtomicUsize,
}

impl MemorySink {
    pub fn new(trusted: impl IntoIterator<Item = (String, VerifierKey)>) -> MemorySink {
        let mut map: HashMap<String, Vec<VerifierKey>> = HashMap::new();
        for (origin, key) in trusted {
            map.entry(origin).or_default().push(key);
        }
        MemorySink {
            trusted: map,
            metrics: None,
            state: Mutex::new(HashMap::new()),
            submissions: Mutex::new(Vec::new()),
            stale_reads: AtomicUsize::new(0),
        }
    }

    /// Counts every answer to a trusted origin, as the real witness does.
    pub fn counting(mut self, metrics: Arc<WitnessMetrics>) -> MemorySink {
        self.metrics = Some(metrics);
        self
    }

    /// The stored tree of `origin`.
    pub fn tree(&self, origin: &str) -> Option<StoredTree> {
        self.state.lock().unwrap().get(origin).copied()
    }

    pub fn submission_count(&self) -> usize {
        self.submissions.lock().unwrap().len()
    }

    fn verify_and_store(&self, old_size: u64, proof: &[Hash], note: &[u8]) -> Result<Vec<String>> {
        let parsed = parse_note(note)?;
        let checkpoint = parse_checkpoint_text(parsed.text())?;
        let origin = checkpoint.origin();
        let keys = self.trusted.get(origin).ok_or(Error::UnknownOrigin {
            origin: origin.to_owned(),
        })?;
        verify_checkpoint(note, keys, Some(origin))?;
        let (size, root) = (checkpoint.size(), *checkpoint.root_hash());
        if old_size > size {
            return Err(Error::OldSizeAboveSize { old_size, size });
        }
        let mut state = self.state.lock().unwrap();
        let stored = state.get(origin).copied();
        let stored_size = stored.map_or(0, |tree| tree.size);
        if old_size != stored_size {
            return Err(Error::OldSizeMismatch {
                old_size,
                stored_size,
            });
        }
        match stored {
            None if !proof.is_empty() => {
                return Err(Error::ConsistencyProofInvalid {
                    reason: "proof from the empty tree must be empty",
                });
            }
            None => {}
            Some(tree) if tree.size == size && tree.root != root => {
                return Err(Error::RootMismatch { size });
            }
            Some(tree) if tree.size == size => {}
            Some(tree) => verify_consistency(tree.size, size, &tree.root, &root, proof)?,
        }
        state.insert(origin.to_owned(), StoredTree { size, root });
        Ok(vec![format!("— memory-witness {origin} {size}")])
    }
}

#[async_trait]
impl CheckpointSink for MemorySink {
    async fn cosigned_tree(&self, origin: &str) -> Result<Option<StoredTree>> {
        if !self.trusted.contains_key(origin) {
            return Err(Error::UnknownOrigin {
                origin: origin.to_owned(),
            });
        }
        let stale = self
            .stale_reads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if stale {
            return Ok(None);
        }
        Ok(self.tree(origin))
    }

    async fn add_checkpoint(
        &self,
        old_size: u64,
        consistency_proof: Vec<Hash>,
        note: Vec<u8>,
    ) -> Result<Vec<String>> {
        let result = self.verify_and_store(old_size, &consistency_proof, &note);
        let checkpoint = parse_note(&note)
            .ok()
            .and_then(|n| parse_checkpoint_text(n.text()).ok());
        if let (Some(metrics), Some(checkpoint)) = (&self.metrics, &checkpoint)
            && self.trusted.contains_key(checkpoint.origin())
        {
            metrics.cosignature(checkpoint.origin(), result.as_ref().map(|_| ()));
        }
        self.submissions.lock().unwrap().push(Submission {
            origin: checkpoint
                .as_ref()
                .map_or(String::new(), |c| c.origin().to_owned()),
            old_size,
            size: checkpoint.as_ref().map_or(0, |c| c.size()),
            proof: consistency_proof,
            result: result.as_ref().map(|_| ()).map_err(Error::kind),
        });
        result
    }
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// Serves `router` on 127.0.0.1 and returns its base URL.
pub async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

fn not_found() -> Response {
    StatusCode::NOT_FOUND.into_response()
}

// ---------------------------------------------------------------------------
// Rekor v1
// ---------------------------------------------------------------------------

/// A Rekor v1 server answering from fixed bodies.
#[derive(Default)]
pub struct RekorV1Server {
    /// The `GET /api/v1/log` body.
    pub log_info: Mutex<Vec<u8>>,
    /// `GET /api/v1/log/proof` bodies by (firstSize, lastSize, treeID).
    pub proofs: Mutex<HashMap<(u64, u64, i64), Vec<u8>>>,
    /// `GET /api/v1/log/entries?logIndex=` bodies by virtual index.
    pub entries: Mutex<HashMap<u64, Vec<u8>>>,
    /// `GET /api/v1/log` answers 503 this many more times.
    pub failures_left: AtomicUsize,
    /// Every request (path and query), in order, with its (possibly paused)
    /// arrival time.
    pub requests: Mutex<Vec<(String, tokio::time::Instant)>>,
}

impl RekorV1Server {
    pub async fn start(log_info: Vec<u8>) -> (Arc<RekorV1Server>, String) {
        let server = Arc::new(RekorV1Server {
            log_info: Mutex::new(log_info),
            ..RekorV1Server::default()
        });
        let router = Router::new()
            .route("/api/v1/log", get(rekor_log_info))
            .route("/api/v1/log/proof", get(rekor_proof))
            .route("/api/v1/log/entries", get(rekor_entry))
            .with_state(server.clone());
        (server, serve(router).await)
    }

    fn record(&self, uri: &Uri) {
        self.requests
            .lock()
            .unwrap()
            .push((uri.to_string(), tokio::time::Instant::now()));
    }

    pub fn set_log_info(&self, body: Vec<u8>) {
        *self.log_info.lock().unwrap() = body;
    }

    /// The query parameters of every proof request so far.
    pub fn proof_requests(&self) -> Vec<HashMap<String, String>> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(uri, _)| uri.starts_with("/api/v1/log/proof?"))
            .map(|(uri, _)| query_map(uri))
            .collect()
    }

    /// The paths of requests whose path starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(uri, _)| uri.starts_with(prefix))
            .map(|(uri, _)| uri.clone())
            .collect()
    }

    pub fn clear_requests(&self) {
        self.requests.lock().unwrap().clear();
    }
}

fn query_map(uri: &str) -> HashMap<String, String> {
    uri.split_once('?')
        .map(|(_, query)| query)
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

async fn rekor_log_info(State(server): State<Arc<RekorV1Server>>, uri: Uri) -> Response {
    server.record(&uri);
    let failing = server
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    server.log_info.lock().unwrap().clone().into_response()
}

async fn rekor_proof(
    State(server): State<Arc<RekorV1Server>>,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    server.record(&uri);
    let parsed = (|| {
        Some((
            query.get("firstSize")?.parse().ok()?,
            query.get("lastSize")?.parse().ok()?,
            query.get("treeID")?.parse().ok()?,
        ))
    })();
    let Some(key) = parsed else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match server.proofs.lock().unwrap().get(&key) {
        Some(body) => body.clone().into_response(),
        None => not_found(),
    }
}

async fn rekor_entry(
    State(server): State<Arc<RekorV1Server>>,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    server.record(&uri);
    let Some(index) = query.get("logIndex").and_then(|i| i.parse::<u64>().ok()) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match server.entries.lock().unwrap().get(&index) {
        Some(body) => body.clone().into_response(),
        None => not_found(),
    }
}

/// A Rekor v1 shard made here, signed with an Ed25519 key named after its host.
pub struct SyntheticShard {
    pub tree_id: i64,
    pub origin: String,
    pub bodies: Vec<Vec<u8>>,
    leaves: Vec<Hash>,
    signing: ed25519_dalek::SigningKey,
    pub verifier: VerifierKey,
}

impl SyntheticShard {
    pub fn new(host: &str, tree_id: i64, entries: usize) -> SyntheticShard {
        let (signing, verifier) = ed25519_key(host, 7);
        let bodies: Vec<Vec<u8>> = (0..entries)
            .map(|i| format!("{{\"entry\":{i},\"tree\":{tree_id}}}").into_bytes())
            .collect();
        let leaves = bodies.iter().map(|body| leaf_hash(body)).collect();
        SyntheticShard {
            tree_id,
            origin: format!("{host} - {tree_id}"),
            bodies,
            leaves,
            signing,
            verifier,
        }
    }

    pub fn root(&self, size: u64) -> Hash {
        root_of(&self.leaves, size)
    }

    /// The same shard with entry `index` replaced: a fork from there on.
    pub fn forked_at(&self, index: usize) -> SyntheticShard {
        let mut bodies = self.bodies.clone();
        bodies[index].extend_from_slice(b" (forked)");
        SyntheticShard {
            tree_id: self.tree_id,
            origin: self.origin.clone(),
            leaves: bodies.iter().map(|body| leaf_hash(body)).collect(),
            bodies,
            signing: self.signing.clone(),
            verifier: self.verifier.clone(),
        }
    }

    pub fn signed_tree_head(&self, size: u64) -> String {
        let note = signed_checkpoint(
            &self.signing,
            &self.verifier,
            &self.origin,
            size,
            &self.root(size),
        );
        String::from_utf8(note).unwrap()
    }

    /// The shard as `GET /api/v1/log` lists it at `size`.
    pub fn shard_json(&self, size: u64) -> serde_json::Value {
        serde_json::json!({
            "rootHash": self.root(size).to_hex(),
            "signedTreeHead": self.signed_tree_head(size),
            "treeID": self.tree_id.to_string(),
            "treeSize": size,
        })
    }

    /// A `GET /api/v1/log/proof` body; `rootHash` is the root at `new`.
    pub fn proof_json(&self, old: u64, new: u64) -> Vec<u8> {
        let proof = prove_consistency(&mut LeafHashes(&self.leaves), old, new).unwrap();
        serde_json::to_vec(&serde_json::json!({
            "hashes": proof.iter().map(Hash::to_hex).collect::<Vec<_>>(),
            "rootHash": self.root(new).to_hex(),
        }))
        .unwrap()
    }

    /// A `GET /api/v1/log/entries` body for leaf `local`, proven in the tree of
    /// `proof_size` leaves; `offset` is the shard's first virtual index.
    pub fn entry_json(&self, offset: u64, local: u64, proof_size: u64, body: &[u8]) -> Vec<u8> {
        let proof = prove_inclusion(&mut LeafHashes(&self.leaves), local, proof_size).unwrap();
        // The UUID names the served body, so a tampered body is caught by the
        // Merkle proof rather than by the UUID check.
        let uuid = format!("{:016x}{}", self.tree_id, leaf_hash(body).to_hex());
        serde_json::to_vec(&serde_json::json!({
            uuid: {
                "body": BASE64.encode(body),
                "integratedTime": 1_700_000_000,
                "logID": "00".repeat(32),
                "logIndex": offset + local,
                "verification": {
                    "inclusionProof": {
                        "hashes": proof.iter().map(Hash::to_hex).collect::<Vec<_>>(),
                        "logIndex": local,
                        "rootHash": self.root(proof_size).to_hex(),
                        "treeSize": proof_size,
                        "checkpoint": self.signed_tree_head(proof_size),
                    },
                    "signedEntryTimestamp": "AA==",
                }
            }
        }))
        .unwrap()
    }
}

/// A `GET /api/v1/log` body.
pub fn log_info_json(active: serde_json::Value, inactive: Vec<serde_json::Value>) -> Vec<u8> {
    let mut info = active;
    info["inactiveShards"] = serde_json::Value::Array(inactive);
    serde_json::to_vec(&info).unwrap()
}

// ---------------------------------------------------------------------------
// tlog-tiles
// ---------------------------------------------------------------------------

/// A tlog-tiles log in memory: random entries, their tiles at every level,
/// and a checkpoint signed with an Ed25519 note key.
pub struct TilesLog {
    pub origin: String,
    entries: Vec<Vec<u8>>,
    leaves: Vec<Hash>,
    /// Hashes of complete 256^level-leaf subtrees, per tile level.
    levels: Vec<Vec<Hash>>,
    published: BTreeSet<u64>,
    signing: ed25519_dalek::SigningKey,
    pub verifier: VerifierKey,
}

impl TilesLog {
    pub fn new(origin: &str) -> TilesLog {
        let (signing, verifier) = ed25519_key(origin, 42);
        TilesLog {
            origin: origin.to_owned(),
            entries: Vec::new(),
            leaves: Vec::new(),
            levels: Vec::new(),
            published: BTreeSet::new(),
            signing,
            verifier,
        }
    }

    /// Appends `count` random entries (1 to 64 bytes) and publishes a
    /// checkpoint at the new size.
    pub fn grow(&mut self, count: usize) {
        let mut rng = rand::rng();
        for _ in 0..count {
            let mut entry = vec![0u8; rng.random_range(1..=64)];
            rng.fill(&mut entry[..]);
            self.leaves.push(leaf_hash(&entry));
            self.entries.push(entry);
        }
        self.levels = vec![self.leaves.clone()];
        loop {
            let above: Vec<Hash> = self.levels[self.levels.len() - 1]
                .chunks_exact(256)
                .map(|chunk| root_of(chunk, 256))
                .collect();
            if above.is_empty() {
                break;
            }
            self.levels.push(above);
        }
        self.published.insert(self.size());
    }

    pub fn size(&self) -> u64 {
        self.leaves.len() as u64
    }

    pub fn leaves(&self) -> &[Hash] {
        &self.leaves
    }

    pub fn root(&self) -> Hash {
        root_of(&self.leaves, self.size())
    }

    pub fn checkpoint(&self) -> Vec<u8> {
        signed_checkpoint(
            &self.signing,
            &self.verifier,
            &self.origin,
            self.size(),
            &self.root(),
        )
    }

    /// Whether the tile of `width` at `level` and `index` exists: full tiles
    /// once complete, partial ones only at the widths of published sizes.
    fn exists(&self, level: usize, index: u64, width: Option<u16>) -> bool {
        let available = self.levels.get(level).map_or(0, Vec::len) as u64;
        match width {
            None => (index + 1) * 256 <= available,
            Some(width) => self.published.iter().any(|size| {
                let hashes = size >> (8 * level);
                hashes / 256 == index && hashes % 256 == u64::from(width)
            }),
        }
    }

    pub fn tile(&self, level: usize, index: u64, width: Option<u16>) -> Option<Vec<u8>> {
        if !self.exists(level, index, width) {
            return None;
        }
        let start = (index * 256) as usize;
        let end = start + usize::from(width.unwrap_or(256));
        Some(
            self.levels[level][start..end]
                .iter()
                .flat_map(|h| h.0)
                .collect(),
        )
    }

    /// An entry bundle; `tamper` flips the last byte of every entry.
    pub fn bundle(&self, index: u64, width: Option<u16>, tamper: bool) -> Option<Vec<u8>> {
        if !self.exists(0, index, width) {
            return None;
        }
        let start = (index * 256) as usize;
        let end = start + usize::from(width.unwrap_or(256));
        let mut bundle = Vec::new();
        for entry in &self.entries[start..end] {
            let mut entry = entry.clone();
            if tamper && let Some(last) = entry.last_mut() {
                *last ^= 1;
            }
            bundle.extend_from_slice(&(entry.len() as u16).to_be_bytes());
            bundle.extend_from_slice(&entry);
        }
        Some(bundle)
    }
}

/// Serves a [`TilesLog`] exactly per c2sp.org/tlog-tiles, counting requests.
pub struct TilesServer {
    pub log: Mutex<TilesLog>,
    /// Every request path, in order.
    pub requests: Mutex<Vec<String>>,
    /// Tile paths (`tile/0/x001/234.p/5`) served with their first byte flipped.
    pub tampered_tiles: Mutex<HashSet<String>>,
    /// Entry bundles are served with every entry's last byte flipped.
    pub tamper_entries: AtomicBool,
    /// Partial tiles and bundles whose full tile exists are gone (404), as a
    /// log may delete them.
    pub partials_deleted: AtomicBool,
    /// `/checkpoint` serves this instead of the latest checkpoint (a cached,
    /// older one).
    pub pinned_checkpoint: Mutex<Option<Vec<u8>>>,
}

impl TilesServer {
    pub async fn start(log: TilesLog) -> (Arc<TilesServer>, String) {
        let server = Arc::new(TilesServer {
            log: Mutex::new(log),
            requests: Mutex::new(Vec::new()),
            tampered_tiles: Mutex::new(HashSet::new()),
            tamper_entries: AtomicBool::new(false),
            partials_deleted: AtomicBool::new(false),
            pinned_checkpoint: Mutex::new(None),
        });
        let router = Router::new()
            .route("/log/checkpoint", get(tiles_checkpoint))
            .route("/log/tile/{*rest}", get(tiles_tile))
            .with_state(server.clone());
        (server, format!("{}/log", serve(router).await))
    }

    pub fn take_requests(&self) -> Vec<String> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }
}

async fn tiles_checkpoint(State(server): State<Arc<TilesServer>>) -> Response {
    server.requests.lock().unwrap().push("checkpoint".into());
    if let Some(pinned) = server.pinned_checkpoint.lock().unwrap().clone() {
        return pinned.into_response();
    }
    server.log.lock().unwrap().checkpoint().into_response()
}

async fn tiles_tile(State(server): State<Arc<TilesServer>>, Path(rest): Path<String>) -> Response {
    let path = format!("tile/{rest}");
    server.requests.lock().unwrap().push(path.clone());
    let Some((kind, index, width)) = parse_tile_path(&rest) else {
        return not_found();
    };
    let log = server.log.lock().unwrap();
    let level = match kind {
        TileKind::Hashes(level) => level,
        TileKind::Entries => 0,
    };
    if width.is_some()
        && server.partials_deleted.load(Ordering::SeqCst)
        && log.exists(level, index, None)
    {
        return not_found();
    }
    let body = match kind {
        TileKind::Hashes(level) => log.tile(level, index, width),
        TileKind::Entries => log.bundle(index, width, server.tamper_entries.load(Ordering::SeqCst)),
    };
    let Some(mut body) = body else {
        return not_found();
    };
    if server.tampered_tiles.lock().unwrap().contains(&path) {
        body[0] ^= 1;
    }
    body.into_response()
}

enum TileKind {
    Hashes(usize),
    Entries,
}

/// Parses `<L>/<N>[.p/<W>]` or `entries/<N>[.p/<W>]` strictly per the spec,
/// independently of the feeder's own path encoding.
fn parse_tile_path(rest: &str) -> Option<(TileKind, u64, Option<u16>)> {
    let canonical = |text: &str| !text.is_empty() && (text == "0" || !text.starts_with('0'));
    let mut parts: Vec<&str> = rest.split('/').collect();
    let kind = match parts.remove(0) {
        "entries" => TileKind::Entries,
        level if canonical(level) => {
            let level: usize = level.parse().ok()?;
            (level <= 63).then_some(TileKind::Hashes(level))?
        }
        _ => return None,
    };
    let mut width = None;
    if parts.len() >= 2 && parts[parts.len() - 2].ends_with(".p") {
        let w = parts.pop()?;
        if !canonical(w) || !w.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let w: u16 = w.parse().ok()?;
        if !(1..=255).contains(&w) {
            return None;
        }
        width = Some(w);
        let last = parts.pop()?.strip_suffix(".p")?;
        parts.push(last);
    }
    let (last, groups) = parts.split_last()?;
    let mut index = 0u64;
    for group in groups {
        let digits = group.strip_prefix('x')?;
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        index = index * 1000 + digits.parse::<u64>().ok()?;
    }
    if last.len() != 3 || !last.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    index = index * 1000 + last.parse::<u64>().ok()?;
    Some((kind, index, width))
}

#[test]
fn tile_paths_parse_per_the_spec() {
    let parsed = |p: &str| parse_tile_path(p).map(|(_, index, width)| (index, width));
    assert_eq!(parsed("0/x001/x234/067"), Some((1_234_067, None)));
    assert_eq!(parsed("1/000.p/17"), Some((0, Some(17))));
    assert_eq!(parsed("entries/273.p/112"), Some((273, Some(112))));
    for bad in [
        "0/1",
        "00/000",
        "0/001/002",
        "0/x1/002",
        "0/000.p/0",
        "0/000.p/256",
        "0/000.p/017",
        "64/000",
    ] {
        assert_eq!(parsed(bad), None, "{bad}");
    }
}
