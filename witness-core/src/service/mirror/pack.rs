//! Packing a log into a mirror bundle: the checkpoint, for an incremental
//! bundle the compact range of `[0, start)` and a consistency proof (computed
//! from a tlog-tiles log's hash tiles, or read from a Rekor v1 shard's proofs),
//! then every entry bundle of `[start, size)`, fetched a few at a time in order
//! and written as they come. What differs between the two kinds of log is a
//! [`PackSource`]; everything else here is shared.
//!
//! Memory is bounded: a handful of entry bundles in flight, the O(log n)
//! Merkle state, and the list of bundle CIDs the INDEX needs. The root
//! recomputed from the entries must be the checkpoint's before anything is
//! signed.
//!
//! Resumable: the CAR is written to `rekor-mirror.car.partial`, and after every
//! few bundles a line is appended to `rekor-mirror.car.journal` recording the
//! file's committed length, the bundles' CIDs and the Merkle state. A new run
//! in the same directory truncates the partial file to the last committed
//! length and continues from there, with the checkpoint of the first run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};

use super::TrustedTree;
use super::rekor_v1::RekorV1Source;
use crate::checkpoint::verify_checkpoint;
use crate::merkle::{
    Hash, RootBuilder, leaf_hash, prove_consistency, subtree_hash, verify_consistency,
};
use crate::mirror::{
    BundleSpan, CAR_FILE, ENVELOPE_FILE, FORMAT, IndexedBundle, LogKind, MAX_BLOCK_SIZE,
    MirrorFault, MirrorIndex, MirrorPredicate, PAYLOAD_TYPE, bundle_spans, encode_hashes,
    frontier_subtrees, push_entry, serialize_index, serialize_statement, tile_paths,
};
use crate::mirror_car::{block_cid, header_bytes, parse_cid, section_bytes};
use crate::note::{MAX_NOTE_SIZE, VerifierKey};
use crate::service::archive::ManifestSigner;
use crate::service::feeder::LogUrl;
use crate::service::feeder::http::{HttpFetcher, Resource};
use crate::service::feeder::tiles::fetch_tile;
use crate::service::metrics::WitnessMetrics;
use crate::tiles::{TILE_WIDTH, TileHashSource, TileId, parse_entry_bundle, required_tiles};
use crate::{Error, Result};

/// Entry bundles of a tlog-tiles log fetched at once (in order).
const FETCHES_IN_FLIGHT: usize = 8;
/// Bundles written between two journal commits.
const BUNDLES_PER_COMMIT: usize = 64;
/// The partial CAR file.
const PARTIAL_FILE: &str = "rekor-mirror.car.partial";
/// The resume journal.
const JOURNAL_FILE: &str = "rekor-mirror.car.journal";

/// Where a bundle starts.
#[derive(Clone, Copy, Debug)]
pub enum PackStart {
    /// From entry 0.
    Full,
    /// From this size, unchecked (the verifier checks it against its own
    /// trusted tree).
    FromSize(u64),
    /// From the previous bundle's tree, which the log's tiles must extend.
    Previous(TrustedTree),
}

/// What to pack.
pub struct PackOptions {
    /// The log's tlog-tiles prefix, or Rekor v1's base URL (without `/api/v1`).
    pub log: LogUrl,
    /// The log's checkpoint key.
    pub log_key: VerifierKey,
    /// The origin the checkpoint must have (default: any). For Rekor v1 it
    /// picks the shard (default: the active one).
    pub origin: Option<String>,
    /// The bundle directory.
    pub out: PathBuf,
    /// Where the bundle starts.
    pub start: PackStart,
    /// Limit on one HTTP request.
    pub request_timeout: Duration,
}

/// Told `(entries packed, entries in the range)` after each bundle.
pub type PackProgress<'a> = &'a mut (dyn FnMut(u64, u64) + Send);

/// A bundle written and signed.
#[derive(Clone, Debug)]
pub struct PackedMirror {
    /// The log's origin.
    pub origin: String,
    /// First entry carried.
    pub start: u64,
    /// The checkpoint's size.
    pub size: u64,
    /// The checkpoint's root.
    pub root: Hash,
    /// SHA-256 of the CAR file.
    pub car_sha256: [u8; 32],
    /// Entry bundles fetched by this run (fewer than the range's on a resume).
    pub fetched_bundles: u64,
}

/// The journal's first line: what the run packs.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalHead {
    checkpoint: String,
    start: u64,
    checkpoint_cid: String,
    frontier_cid: Option<String>,
    proof_cid: Option<String>,
}

/// A journal commit: the file is good up to `car_len`, with these bundles
/// written since the previous commit.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalCommit {
    car_len: u64,
    leaves: u64,
    frontier: Vec<String>,
    bundles: Vec<String>,
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Archive {
        detail: format!("{}: {e}", path.display()),
    }
}

/// Packs `[start, size)` of a tlog-tiles log, `size` being its current
/// checkpoint's (or the checkpoint of the run being resumed), and signs it
/// with `signer`.
pub async fn pack_tiles(
    options: &PackOptions,
    signer: &dyn ManifestSigner,
    progress: PackProgress<'_>,
) -> Result<PackedMirror> {
    let source = TilesSource {
        http: fetcher(options)?,
        url: &options.log,
    };
    pack(options, &source, signer, progress).await
}

/// Packs `[start, size)` of one shard of a Rekor v1 log (`options.log` is
/// Rekor's base URL): the shard whose checkpoint origin is `options.origin`
/// (`<host> - <treeID>`), else the active one. Its leaves are the entries'
/// canonicalized bodies, fetched one by one through `GET /api/v1/log/entries`;
/// see [`super::rekor_v1`].
pub async fn pack_rekor_v1(
    options: &PackOptions,
    signer: &dyn ManifestSigner,
    progress: PackProgress<'_>,
) -> Result<PackedMirror> {
    let source = RekorV1Source::connect(fetcher(options)?, options).await?;
    pack(options, &source, signer, progress).await
}

fn fetcher(options: &PackOptions) -> Result<HttpFetcher> {
    HttpFetcher::new(
        options.request_timeout,
        concat!("rekor-witness-mirror/", env!("CARGO_PKG_VERSION")),
        Arc::new(WitnessMetrics::new()?),
    )
}

/// Where a pack's blocks come from: a tlog-tiles log or a Rekor v1 shard. The
/// rest of a pack (journal, resume, CAR layout, root check, signing) is the
/// same for both.
#[async_trait]
pub(super) trait PackSource: Sync {
    /// The INDEX's `log_kind`.
    fn kind(&self) -> LogKind;

    /// The origin the checkpoint must have, when the source fixes it.
    fn origin(&self) -> Option<&str>;

    /// Entry bundles fetched at once.
    fn bundles_in_flight(&self) -> usize;

    /// The log's signed checkpoint note, as served (verified by the caller).
    async fn checkpoint(&self) -> Result<Vec<u8>>;

    /// The FRONTIER of `[0, start)` and the consistency proof from `start` to
    /// `size` (`0 < start <= size`; checked by the caller).
    async fn incremental(&self, start: u64, size: u64) -> Result<(Vec<Hash>, Vec<Hash>)>;

    /// The block of one span: the entries it carries, in the entry bundle
    /// format.
    async fn bundle(&self, span: BundleSpan) -> Result<Vec<u8>>;
}

async fn pack<S: PackSource>(
    options: &PackOptions,
    source: &S,
    signer: &dyn ManifestSigner,
    progress: PackProgress<'_>,
) -> Result<PackedMirror> {
    let out = &options.out;
    tokio::fs::create_dir_all(out)
        .await
        .map_err(io_error(out))?;
    if tokio::fs::try_exists(out.join(CAR_FILE))
        .await
        .unwrap_or(true)
    {
        return Err(Error::Config {
            detail: format!("{} already holds a bundle", out.display()),
        });
    }
    let journal_path = out.join(JOURNAL_FILE);
    let partial_path = out.join(PARTIAL_FILE);
    let state = match read_journal(&journal_path).await? {
        Some(state) => state,
        None => begin(options, source, &partial_path, &journal_path).await?,
    };
    let State {
        head,
        mut builder,
        mut bundles,
        car_len,
    } = state;
    let verified = verify_checkpoint(
        head.checkpoint.as_bytes(),
        std::slice::from_ref(&options.log_key),
        source.origin().or(options.origin.as_deref()),
    )?;
    let checkpoint = verified.checkpoint().clone();
    let (start, size) = (head.start, checkpoint.size());
    if start != requested_start(options.start) {
        return Err(Error::Config {
            detail: format!(
                "{} holds an interrupted pack from size {start}; remove {JOURNAL_FILE} to start over",
                out.display()
            ),
        });
    }

    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .open(&partial_path)
        .await
        .map_err(io_error(&partial_path))?;
    file.set_len(car_len)
        .await
        .map_err(io_error(&partial_path))?;
    file.seek(std::io::SeekFrom::End(0))
        .await
        .map_err(io_error(&partial_path))?;
    let mut journal = tokio::fs::OpenOptions::new()
        .append(true)
        .open(&journal_path)
        .await
        .map_err(io_error(&journal_path))?;

    let spans: Vec<_> = bundle_spans(start, size).skip(bundles.len()).collect();
    let total = size - start;
    let mut written = car_len;
    let mut uncommitted: Vec<String> = Vec::new();
    let mut fetched_bundles = 0u64;
    let mut fetches = futures::stream::iter(spans)
        .map(|span| async move { (span, source.bundle(span).await) })
        .buffered(source.bundles_in_flight());
    let result: Result<()> = async {
        while let Some((span, fetched)) = fetches.next().await {
            let block = fetched?;
            for entry in parse_entry_bundle(&block, span.count())? {
                builder.push(leaf_hash(entry));
            }
            let cid = block_cid(&block)?;
            let section = section_bytes(&cid, &block);
            file.write_all(&section)
                .await
                .map_err(io_error(&partial_path))?;
            written += section.len() as u64;
            uncommitted.push(cid.to_string());
            bundles.push(cid.to_string());
            fetched_bundles += 1;
            progress(builder.size() - start, total);
            if uncommitted.len() >= BUNDLES_PER_COMMIT {
                commit(&mut file, &mut journal, written, &builder, &mut uncommitted).await?;
            }
        }
        Ok(())
    }
    .await;
    drop(fetches);
    commit(&mut file, &mut journal, written, &builder, &mut uncommitted).await?;
    result?;

    if builder.size() != size || builder.root() != *checkpoint.root_hash() {
        return Err(Error::CheckpointProofMismatch {
            reason: "the log's entries do not hash to its checkpoint's root",
        });
    }
    let spans = bundle_spans(start, size);
    let index = MirrorIndex {
        format: FORMAT.to_owned(),
        origin: checkpoint.origin().to_owned(),
        log_kind: source.kind(),
        start,
        size,
        previous_size: (start > 0).then_some(start),
        checkpoint: head.checkpoint_cid.clone(),
        entry_bundles: spans
            .zip(&bundles)
            .map(|(span, cid)| IndexedBundle {
                index: span.tile.index,
                width: span.tile.width,
                cid: cid.clone(),
            })
            .collect(),
        frontier: head.frontier_cid.clone(),
        consistency_proof: head.proof_cid.clone(),
    };
    let index_block = serialize_index(&index)?;
    if index_block.len() + 64 > MAX_BLOCK_SIZE {
        return Err(Error::TooLarge {
            what: "mirror INDEX (split the range into incremental bundles)",
            size: index_block.len(),
            max: MAX_BLOCK_SIZE - 64,
        });
    }
    let index_cid = block_cid(&index_block)?;
    file.write_all(&section_bytes(&index_cid, &index_block))
        .await
        .map_err(io_error(&partial_path))?;
    file.seek(std::io::SeekFrom::Start(0))
        .await
        .map_err(io_error(&partial_path))?;
    file.write_all(&header_bytes(index_cid)?)
        .await
        .map_err(io_error(&partial_path))?;
    file.sync_all().await.map_err(io_error(&partial_path))?;
    drop(file);

    let car_sha256 = file_sha256(&partial_path).await?;
    let predicate = MirrorPredicate {
        origin: checkpoint.origin().to_owned(),
        size,
        root_hash: checkpoint.root_hash().to_base64(),
        start,
        previous_size: index.previous_size,
        checkpoint: head.checkpoint.clone(),
        tiles: tile_paths(start, size),
    };
    let statement = serialize_statement(&car_sha256, &predicate)?;
    let envelope = signer.sign_manifest(PAYLOAD_TYPE, statement).await?;
    let envelope_tmp = out.join(format!("{ENVELOPE_FILE}.tmp"));
    tokio::fs::write(&envelope_tmp, &envelope)
        .await
        .map_err(io_error(&envelope_tmp))?;
    tokio::fs::rename(&partial_path, out.join(CAR_FILE))
        .await
        .map_err(io_error(&partial_path))?;
    tokio::fs::rename(&envelope_tmp, out.join(ENVELOPE_FILE))
        .await
        .map_err(io_error(&envelope_tmp))?;
    tokio::fs::remove_file(&journal_path)
        .await
        .map_err(io_error(&journal_path))?;
    Ok(PackedMirror {
        origin: checkpoint.origin().to_owned(),
        start,
        size,
        root: *checkpoint.root_hash(),
        car_sha256,
        fetched_bundles,
    })
}

fn requested_start(start: PackStart) -> u64 {
    match start {
        PackStart::Full => 0,
        PackStart::FromSize(size) => size,
        PackStart::Previous(tree) => tree.size,
    }
}

/// A run's state: its journal head, the Merkle state and bundle CIDs of what
/// is committed, and the committed length of the partial file.
struct State {
    head: JournalHead,
    builder: RootBuilder,
    bundles: Vec<String>,
    car_len: u64,
}

/// Starts a run: fetches and checks the checkpoint, computes the incremental
/// blocks from the tiles, writes the file's first blocks and the journal.
async fn begin(
    options: &PackOptions,
    source: &impl PackSource,
    partial_path: &Path,
    journal_path: &Path,
) -> Result<State> {
    let note = source.checkpoint().await?;
    if note.len() > MAX_NOTE_SIZE {
        return Err(Error::TooLarge {
            what: "checkpoint",
            size: note.len(),
            max: MAX_NOTE_SIZE,
        });
    }
    let verified = verify_checkpoint(
        &note,
        std::slice::from_ref(&options.log_key),
        source.origin().or(options.origin.as_deref()),
    )?;
    let checkpoint = verified.checkpoint();
    let (start, size) = (requested_start(options.start), checkpoint.size());
    if start > size {
        return Err(MirrorFault::Rollback.error(format!(
            "the log's checkpoint is at size {size}, below the start {start}"
        )));
    }
    let note_text = String::from_utf8(note.clone()).map_err(|_| Error::MalformedNote {
        reason: "note is not UTF-8",
    })?;
    let checkpoint_cid = block_cid(&note)?;
    let mut car = header_bytes(checkpoint_cid)?;
    car.extend(section_bytes(&checkpoint_cid, &note));
    let (builder, frontier_cid, proof_cid) = if start > 0 {
        let (frontier, proof) = source.incremental(start, size).await?;
        let builder = RootBuilder::from_frontier(start, &frontier)?;
        if let PackStart::Previous(previous) = options.start
            && builder.root() != previous.root
        {
            return Err(MirrorFault::Fork.error(format!(
                "the log's tree at size {start} does not have the previous bundle's root"
            )));
        }
        verify_consistency(start, size, &builder.root(), checkpoint.root_hash(), &proof).map_err(
            |e| {
                MirrorFault::Fork.error(format!(
                    "the log's tree at size {start} does not lead to its checkpoint: {e}"
                ))
            },
        )?;
        let frontier_block = encode_hashes(&frontier);
        let proof_block = encode_hashes(&proof);
        let frontier_cid = block_cid(&frontier_block)?;
        let proof_cid = block_cid(&proof_block)?;
        car.extend(section_bytes(&frontier_cid, &frontier_block));
        car.extend(section_bytes(&proof_cid, &proof_block));
        (
            builder,
            Some(frontier_cid.to_string()),
            Some(proof_cid.to_string()),
        )
    } else {
        (RootBuilder::new(), None, None)
    };
    tokio::fs::write(partial_path, &car)
        .await
        .map_err(io_error(partial_path))?;
    let head = JournalHead {
        checkpoint: note_text,
        start,
        checkpoint_cid: checkpoint_cid.to_string(),
        frontier_cid,
        proof_cid,
    };
    let commit = JournalCommit {
        car_len: car.len() as u64,
        leaves: builder.size(),
        frontier: builder.frontier().iter().map(Hash::to_hex).collect(),
        bundles: Vec::new(),
    };
    let mut journal = json_line(&head)?;
    journal.extend(json_line(&commit)?);
    tokio::fs::write(journal_path, &journal)
        .await
        .map_err(io_error(journal_path))?;
    Ok(State {
        head,
        builder,
        bundles: Vec::new(),
        car_len: car.len() as u64,
    })
}

fn json_line(value: &impl Serialize) -> Result<Vec<u8>> {
    let mut line = serde_json::to_vec(value).map_err(|e| Error::Archive {
        detail: format!("journal: {e}"),
    })?;
    line.push(b'\n');
    Ok(line)
}

/// Makes what was written durable, then records it in the journal.
async fn commit(
    file: &mut tokio::fs::File,
    journal: &mut tokio::fs::File,
    car_len: u64,
    builder: &RootBuilder,
    uncommitted: &mut Vec<String>,
) -> Result<()> {
    let failed = |e: std::io::Error| Error::Archive {
        detail: format!("committing the partial bundle: {e}"),
    };
    file.flush().await.map_err(failed)?;
    file.sync_data().await.map_err(failed)?;
    let line = json_line(&JournalCommit {
        car_len,
        leaves: builder.size(),
        frontier: builder.frontier().iter().map(Hash::to_hex).collect(),
        bundles: std::mem::take(uncommitted),
    })?;
    journal.write_all(&line).await.map_err(failed)?;
    journal.sync_data().await.map_err(failed)
}

/// Reads the journal of an interrupted run, if any. A last line cut short by
/// the interruption is ignored.
async fn read_journal(path: &Path) -> Result<Option<State>> {
    let text = match tokio::fs::read_to_string(path).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path)(e)),
    };
    let malformed = |detail: &str| Error::Config {
        detail: format!("{}: {detail}; remove it to start over", path.display()),
    };
    let mut lines = text.lines();
    let head: JournalHead = lines
        .next()
        .and_then(|line| serde_json::from_str(line).ok())
        .ok_or(malformed("the journal has no head"))?;
    let mut bundles = Vec::new();
    let mut last = None;
    for line in lines {
        let Ok(commit) = serde_json::from_str::<JournalCommit>(line) else {
            break;
        };
        bundles.extend(commit.bundles.iter().cloned());
        last = Some(commit);
    }
    let last = last.ok_or(malformed("the journal has no commit"))?;
    let frontier = last
        .frontier
        .iter()
        .map(|h| Hash::parse_hex(h))
        .collect::<Result<Vec<Hash>>>()?;
    for cid in &bundles {
        parse_cid(cid, "journal")?;
    }
    Ok(Some(State {
        head,
        builder: RootBuilder::from_frontier(last.leaves, &frontier)?,
        bundles,
        car_len: last.car_len,
    }))
}

async fn file_sha256(path: &Path) -> Result<[u8; 32]> {
    let mut file = tokio::fs::File::open(path).await.map_err(io_error(path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).await.map_err(io_error(path))?;
        if read == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buffer[..read]);
    }
}

/// A tlog-tiles log: its checkpoint, hash tiles and entry bundles.
struct TilesSource<'a> {
    http: HttpFetcher,
    url: &'a LogUrl,
}

#[async_trait]
impl PackSource for TilesSource<'_> {
    fn kind(&self) -> LogKind {
        LogKind::Tiles
    }

    fn origin(&self) -> Option<&str> {
        None
    }

    fn bundles_in_flight(&self) -> usize {
        FETCHES_IN_FLIGHT
    }

    async fn checkpoint(&self) -> Result<Vec<u8>> {
        self.http
            .get(
                self.url.as_str(),
                self.url.join("checkpoint")?,
                Resource::Checkpoint,
            )
            .await
    }

    /// Computed from the hash tiles of the tree of `size` leaves.
    async fn incremental(&self, start: u64, size: u64) -> Result<(Vec<Hash>, Vec<Hash>)> {
        self.compute(size, |source| {
            let frontier = frontier_subtrees(start)
                .into_iter()
                .map(|(level, index)| subtree_hash(source, index << level, (index + 1) << level))
                .collect::<Result<Vec<Hash>>>()?;
            let proof = if start < size {
                prove_consistency(source, start, size)?
            } else {
                Vec::new()
            };
            Ok((frontier, proof))
        })
        .await
    }

    /// A deleted partial bundle is read from the full one.
    async fn bundle(&self, span: BundleSpan) -> Result<Vec<u8>> {
        self.fetch_bundle(span).await
    }
}

impl TilesSource<'_> {
    /// Runs `compute` over the hash tiles of the tree of `size` leaves.
    async fn compute<T>(
        &self,
        size: u64,
        compute: impl Fn(&mut dyn crate::merkle::SubtreeHashSource) -> Result<T>,
    ) -> Result<T> {
        let needed = required_tiles(size, |source| compute(source))?;
        let fetched: HashMap<(u8, u64), Vec<u8>> = futures::stream::iter(needed)
            .map(|tile| fetch_tile(&self.http, self.url.as_str(), self.url, tile))
            .buffer_unordered(FETCHES_IN_FLIGHT)
            .map_ok(|(tile, bytes)| ((tile.level, tile.index), bytes))
            .try_collect()
            .await?;
        let mut source = TileHashSource::new(size, |tile: &TileId| {
            fetched
                .get(&(tile.level, tile.index))
                .cloned()
                .ok_or(Error::ProofUnavailable {
                    reason: "tile was not fetched",
                })
        });
        compute(&mut source)
    }

    async fn fetch_bundle(&self, span: BundleSpan) -> Result<Vec<u8>> {
        let name = self.url.as_str();
        let tile = span.tile;
        let resource = Resource::EntryBundle {
            entries: tile.width,
        };
        let url = self.url.join(&tile.entries_path())?;
        let (width, bytes) = if u64::from(tile.width) == TILE_WIDTH {
            (tile.width, self.http.get(name, url, resource).await?)
        } else if let Some(bytes) = self.http.get_if_found(name, url, resource).await? {
            (tile.width, bytes)
        } else {
            let full = TileId {
                width: TILE_WIDTH as u16,
                ..tile
            };
            let url = self.url.join(&full.entries_path())?;
            let resource = Resource::EntryBundle {
                entries: full.width,
            };
            (full.width, self.http.get(name, url, resource).await?)
        };
        let entries = parse_entry_bundle(&bytes, usize::from(width))?;
        let skip = (span.first - tile.index * TILE_WIDTH) as usize;
        let mut block = Vec::with_capacity(bytes.len());
        for entry in &entries[skip..usize::from(tile.width)] {
            push_entry(&mut block, entry)?;
        }
        if block.len() + 64 > MAX_BLOCK_SIZE {
            return Err(Error::TooLarge {
                what: "entry bundle",
                size: block.len(),
                max: MAX_BLOCK_SIZE - 64,
            });
        }
        Ok(block)
    }
}
