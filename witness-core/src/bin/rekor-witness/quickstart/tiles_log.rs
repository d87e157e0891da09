//! The quickstart's built-in log: a small c2sp.org/tlog-tiles log that grows on
//! a timer, with an Ed25519 checkpoint key, served on loopback.
//!
//! Its entries are appended to a file in the data directory (a 2-byte
//! big-endian length, then the entry), so a second run continues the same tree
//! instead of forking it: the witness, which remembers what it cosigned, would
//! rightly refuse a log that started over with the same key.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ed25519_dalek::Signer as _;
use witness_core::checkpoint::Checkpoint;
use witness_core::merkle::{Hash, RootBuilder, leaf_hash, node_hash};
use witness_core::note::{Note, NoteSignature, VerifierKey};

/// Hashes per tile (tlog-tiles' tile height of 8).
const TILE_WIDTH: usize = 256;

/// The log's tree: its entries and the hashes tiles are cut from.
struct Tree {
    entries: Vec<Vec<u8>>,
    /// `levels[l][k]`: the hash of the `k`-th complete subtree of `256^l`
    /// leaves (level 0: the leaf hashes).
    levels: Vec<Vec<Hash>>,
    /// The latest signed checkpoint.
    checkpoint: Vec<u8>,
}

/// The log, shared by the server and the timer that grows it.
pub struct TilesLog {
    origin: String,
    signing: ed25519_dalek::SigningKey,
    verifier: VerifierKey,
    entries_path: PathBuf,
    tree: RwLock<Tree>,
}

impl TilesLog {
    /// Opens the log persisted in `entries_path` (created empty if absent).
    pub fn open(
        origin: &str,
        signing: ed25519_dalek::SigningKey,
        entries_path: &Path,
    ) -> Result<TilesLog, String> {
        let verifier = VerifierKey::from_material(
            origin,
            witness_core::note::SignatureType::Ed25519,
            signing.verifying_key().as_bytes(),
        )
        .map_err(|e| format!("log key: {e}"))?;
        let entries = match std::fs::read(entries_path) {
            Ok(bytes) => parse_entries(&bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("reading {}: {e}", entries_path.display())),
        };
        let log = TilesLog {
            origin: origin.to_owned(),
            signing,
            verifier,
            entries_path: entries_path.to_path_buf(),
            tree: RwLock::new(Tree {
                entries: Vec::new(),
                levels: vec![Vec::new()],
                checkpoint: Vec::new(),
            }),
        };
        {
            let mut tree = log.tree.write().map_err(|_| "log lock poisoned")?;
            for entry in entries {
                push_entry(&mut tree, entry);
            }
            tree.checkpoint = log.sign(&tree)?;
        }
        Ok(log)
    }

    /// The log's verifier key, in vkey form.
    pub fn vkey(&self) -> String {
        self.verifier.to_vkey()
    }

    /// The current tree size.
    pub fn size(&self) -> u64 {
        self.tree.read().map_or(0, |tree| tree.entries.len() as u64)
    }

    /// Appends `count` entries (made durable first), then publishes a checkpoint
    /// at the new size.
    pub fn grow(&self, count: usize) -> Result<u64, String> {
        let mut tree = self.tree.write().map_err(|_| "log lock poisoned")?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let first = tree.entries.len();
        let new: Vec<Vec<u8>> = (first..first + count)
            .map(|index| format!("rekor-witness quickstart entry {index} at {now}\n").into_bytes())
            .collect();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.entries_path)
            .map_err(|e| format!("opening {}: {e}", self.entries_path.display()))?;
        let mut bytes = Vec::new();
        for entry in &new {
            bytes.extend_from_slice(&(entry.len() as u16).to_be_bytes());
            bytes.extend_from_slice(entry);
        }
        file.write_all(&bytes)
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("writing {}: {e}", self.entries_path.display()))?;
        for entry in new {
            push_entry(&mut tree, entry);
        }
        tree.checkpoint = self.sign(&tree)?;
        Ok(tree.entries.len() as u64)
    }

    fn sign(&self, tree: &Tree) -> Result<Vec<u8>, String> {
        let mut root = RootBuilder::new();
        for leaf in &tree.levels[0] {
            root.push(*leaf);
        }
        let checkpoint = Checkpoint::new(&self.origin, root.size(), root.root(), Vec::new())
            .map_err(|e| format!("checkpoint: {e}"))?;
        let text = checkpoint.to_text();
        let signature = NoteSignature::new(
            self.verifier.name(),
            self.verifier.key_id(),
            self.signing.sign(text.as_bytes()).to_bytes().to_vec(),
        )
        .map_err(|e| format!("signature: {e}"))?;
        Ok(Note::new(&text, vec![signature])
            .map_err(|e| format!("note: {e}"))?
            .to_bytes())
    }

    /// The tlog-tiles read API: `/checkpoint`, `/tile/<L>/<N>[.p/<W>]` and
    /// `/tile/entries/<N>[.p/<W>]`.
    pub fn router(self: Arc<TilesLog>) -> Router {
        Router::new()
            .route("/checkpoint", get(checkpoint))
            .route("/tile/{*path}", get(tile))
            .with_state(self)
    }
}

fn push_entry(tree: &mut Tree, entry: Vec<u8>) {
    tree.levels[0].push(leaf_hash(&entry));
    tree.entries.push(entry);
    // Each completed group of 256 hashes makes one hash a level up.
    let mut level = 0;
    while tree.levels[level].len().is_multiple_of(TILE_WIDTH) {
        let start = tree.levels[level].len() - TILE_WIDTH;
        let hash = subtree_of(&tree.levels[level][start..]);
        if tree.levels.len() == level + 1 {
            tree.levels.push(Vec::new());
        }
        tree.levels[level + 1].push(hash);
        level += 1;
    }
}

/// The root of a power-of-two run of equal-height subtree hashes.
fn subtree_of(hashes: &[Hash]) -> Hash {
    let mut layer = hashes.to_vec();
    while layer.len() > 1 {
        layer = layer
            .chunks_exact(2)
            .map(|pair| node_hash(&pair[0], &pair[1]))
            .collect();
    }
    layer[0]
}

fn parse_entries(mut bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let (length, rest) = bytes
            .split_first_chunk::<2>()
            .ok_or("the entries file ends inside a length")?;
        let length = usize::from(u16::from_be_bytes(*length));
        if rest.len() < length {
            // A crash during an append: the unsynced tail was never published.
            break;
        }
        entries.push(rest[..length].to_vec());
        bytes = &rest[length..];
    }
    Ok(entries)
}

async fn checkpoint(State(log): State<Arc<TilesLog>>) -> Response {
    match log.tree.read() {
        Ok(tree) => (
            [
                (CONTENT_TYPE, "text/plain; charset=utf-8"),
                (CACHE_CONTROL, "no-store"),
            ],
            tree.checkpoint.clone(),
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A tile request: level (`None` for entry bundles), index and width.
fn parse_tile_path(path: &str) -> Option<(Option<usize>, u64, usize)> {
    let (kind, rest) = path.split_once('/')?;
    let level = match kind {
        "entries" => None,
        digits => Some(digits.parse::<usize>().ok().filter(|l| *l < 64)?),
    };
    let (index_path, width) = match rest.split_once(".p/") {
        Some((index_path, width)) => {
            let width: usize = width.parse().ok()?;
            if width == 0 || width >= TILE_WIDTH {
                return None;
            }
            (index_path, width)
        }
        None => (rest, TILE_WIDTH),
    };
    // `x001/x234/067`: three-digit groups, all but the last prefixed with `x`.
    let groups: Vec<&str> = index_path.split('/').collect();
    let mut index: u64 = 0;
    for (i, group) in groups.iter().enumerate() {
        let digits = if i + 1 < groups.len() {
            group.strip_prefix('x')?
        } else {
            group
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        index = index.checked_mul(1000)?.checked_add(digits.parse().ok()?)?;
    }
    Some((level, index, width))
}

async fn tile(State(log): State<Arc<TilesLog>>, UrlPath(path): UrlPath<String>) -> Response {
    let Some((level, index, width)) = parse_tile_path(&path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Ok(tree) = log.tree.read() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Ok(start) = usize::try_from(index).map(|i| i.saturating_mul(TILE_WIDTH)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let end = start.saturating_add(width);
    let body: Option<Vec<u8>> = match level {
        Some(level) => tree
            .levels
            .get(level)
            .and_then(|hashes| hashes.get(start..end))
            .map(|hashes| hashes.iter().flat_map(|h| h.0).collect()),
        None => tree.entries.get(start..end).map(|entries| {
            let mut bundle = Vec::new();
            for entry in entries {
                bundle.extend_from_slice(&(entry.len() as u16).to_be_bytes());
                bundle.extend_from_slice(entry);
            }
            bundle
        }),
    };
    match body {
        // Full tiles never change; partial ones are replaced by wider ones.
        Some(body) if width == TILE_WIDTH => (
            [(CACHE_CONTROL, "public, max-age=31536000, immutable")],
            body,
        )
            .into_response(),
        Some(body) => body.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Grows `log` by one to four entries every `interval`, until the task is
/// dropped.
pub async fn grow_forever(log: Arc<TilesLog>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round: usize = 0;
    loop {
        ticker.tick().await;
        round += 1;
        if let Err(error) = log.grow(1 + round % 4) {
            eprintln!("rekor-witness quickstart: the built-in log cannot grow: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_paths_parse_per_the_spec() {
        assert_eq!(parse_tile_path("0/000"), Some((Some(0), 0, 256)));
        assert_eq!(parse_tile_path("1/x001/234.p/7"), Some((Some(1), 1234, 7)));
        assert_eq!(parse_tile_path("entries/005.p/255"), Some((None, 5, 255)));
        for bad in [
            "0/1",
            "0/x001",
            "0/000.p/0",
            "0/000.p/256",
            "a/000",
            "0/001/002",
        ] {
            assert_eq!(parse_tile_path(bad), None, "{bad}");
        }
    }
}
