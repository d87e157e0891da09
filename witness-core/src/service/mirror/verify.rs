//! Verification of a mirror bundle directory, streaming: the CAR file is read
//! one block at a time through a 1 MiB buffer, and the tree is recomputed with
//! O(log n) state ([`RootBuilder`]). What stays in memory besides is the
//! signed Statement (at most [`MAX_ENVELOPE_SIZE`]) and one block.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use iroh_car::CarReader;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt as _, BufReader};

use super::{TrustedTree, VerifiedMirror};
use crate::checkpoint::verify_checkpoint;
use crate::merkle::{
    Hash, RootBuilder, SubtreeHashSource, leaf_hash, node_hash, prove_consistency,
    verify_consistency,
};
use crate::mirror::{
    CAR_FILE, ENVELOPE_FILE, MirrorFault, MirrorPredicate, bundle_spans, parse_hashes, parse_index,
    parse_statement,
};
use crate::mirror_car::{HashingReader, car_error, check_block, next_block, parse_cid};
use crate::note::VerifierKey;
use crate::service::archive::{MAX_ENVELOPE_SIZE, ManifestVerifier, verify_envelope};
use crate::tiles::parse_entry_bundle;
use crate::{Error, Result};

/// Read buffer of the CAR file: large enough that the per-read cost of the
/// runtime's blocking file reads disappears next to hashing.
const READ_BUFFER: usize = 1 << 20;

/// Verifies a bundle directory: the DSSE signature (`mirror_key`), the CAR's
/// digest against the Statement's subject, every CID, the checkpoint's
/// signature (`log_key`), and the root recomputed from every entry (a full
/// bundle) or from the frontier and the range, plus the consistency proof (an
/// incremental bundle) against `previous`.
///
/// An incremental bundle without `previous`, or whose start is not
/// `previous.size`, is refused; a full bundle with `previous` must contain it
/// (its root at `previous.size` is recomputed from the entries). A bundle
/// smaller than `previous` is a rollback.
pub async fn verify_bundle(
    dir: &Path,
    log_key: &VerifierKey,
    mirror_key: &ManifestVerifier,
    previous: Option<&TrustedTree>,
) -> Result<VerifiedMirror> {
    let envelope = read_envelope(&dir.join(ENVELOPE_FILE)).await?;
    let payload = verify_envelope(&envelope, mirror_key).map_err(|error| match error {
        Error::NoTrustedSignature => MirrorFault::ManifestSignature
            .error("the envelope carries no valid signature by the mirror key"),
        other => MirrorFault::MalformedManifest.error(other.to_string()),
    })?;
    let (car_sha256, predicate) = parse_statement(&payload)?;
    let verified = verify_checkpoint(
        predicate.checkpoint.as_bytes(),
        std::slice::from_ref(log_key),
        Some(&predicate.origin),
    )
    .map_err(|e| MirrorFault::CheckpointSignature.error(e.to_string()))?;
    let checkpoint = verified.checkpoint();
    if checkpoint.size() != predicate.size
        || checkpoint.root_hash().to_base64() != predicate.root_hash
    {
        return Err(MirrorFault::MalformedManifest
            .error("the predicate's size and root are not the checkpoint's"));
    }
    let trusted = check_previous(&predicate, previous)?;
    let root = *checkpoint.root_hash();

    let car_path = dir.join(CAR_FILE);
    let file = tokio::fs::File::open(&car_path)
        .await
        .map_err(|e| MirrorFault::Unreadable.error(format!("{}: {e}", car_path.display())))?;
    let mut file_hash = Sha256::new();
    let at_end = Arc::new(AtomicBool::new(false));
    let reader = HashingReader::new(
        BufReader::with_capacity(READ_BUFFER, file),
        &mut file_hash,
        at_end.clone(),
    );
    let mut car = CarReader::new(reader).await.map_err(|e| {
        car_error(
            e,
            at_end.load(std::sync::atomic::Ordering::Relaxed),
            "header",
        )
    })?;
    let [index_cid] = car.header().roots() else {
        return Err(MirrorFault::MalformedCar.error("the header must name exactly one root"));
    };
    let index_cid = *index_cid;

    let (checkpoint_cid, block) = next_block(&mut car, &at_end, "the checkpoint").await?;
    check_block(&checkpoint_cid, &block, "checkpoint")?;
    if block != predicate.checkpoint.as_bytes() {
        return Err(MirrorFault::UnexpectedBlock
            .error("the first block is not the signed checkpoint of the Statement"));
    }

    let (mut builder, incremental_cids) = match trusted {
        Some(Incremental(trusted)) => {
            let (frontier_cid, block) = next_block(&mut car, &at_end, "the frontier").await?;
            check_block(&frontier_cid, &block, "frontier")?;
            let frontier = parse_hashes("FRONTIER", &block)?;
            let builder = RootBuilder::from_frontier(predicate.start, &frontier)
                .map_err(|e| MirrorFault::MalformedManifest.error(e.to_string()))?;
            if builder.root() != trusted.root {
                return Err(MirrorFault::Fork.error(format!(
                    "the frontier at size {} does not hash to the trusted root",
                    trusted.size
                )));
            }
            let (proof_cid, block) = next_block(&mut car, &at_end, "the consistency proof").await?;
            check_block(&proof_cid, &block, "consistency proof")?;
            let proof = parse_hashes("CONSISTENCY PROOF", &block)?;
            verify_consistency(trusted.size, predicate.size, &trusted.root, &root, &proof)
                .map_err(|e| {
                    MirrorFault::Fork.error(format!(
                        "the checkpoint is not consistent with the trusted tree at size {}: {e}",
                        trusted.size
                    ))
                })?;
            (builder, Some((frontier_cid, proof_cid, proof)))
        }
        _ => (RootBuilder::new(), None),
    };
    // A full bundle must contain the trusted tree: its root is checked when
    // the entries reach its size.
    let contained = match trusted {
        Some(Contained(trusted)) if trusted.size > 0 => Some(trusted),
        _ => None,
    };

    let mut capture = contained
        .filter(|trusted| trusted.size < predicate.size)
        .map(|trusted| ProofCapture::new(trusted.size, predicate.size))
        .transpose()?;
    let mut bundle_cids = Sha256::new();
    for span in bundle_spans(predicate.start, predicate.size) {
        let path = span.tile.entries_path();
        let (cid, block) = next_block(&mut car, &at_end, &format!("entry bundle {path}")).await?;
        check_block(&cid, &block, &format!("entry bundle {path}"))?;
        let entries = parse_entry_bundle(&block, span.count()).map_err(|e| {
            MirrorFault::MalformedEntryBundle.error(format!("entry bundle {path}: {e}"))
        })?;
        for entry in entries {
            let leaf = leaf_hash(entry);
            if let Some(capture) = &mut capture
                && capture.next_end == builder.size() + 1
            {
                capture.record(&builder, &leaf);
            }
            builder.push(leaf);
            if let Some(trusted) = contained
                && builder.size() == trusted.size
                && builder.root() != trusted.root
            {
                return Err(MirrorFault::Fork.error(format!(
                    "the entries' root at size {} is not the trusted root",
                    trusted.size
                )));
            }
        }
        bundle_cids.update(cid.to_bytes());
    }
    if builder.root() != root {
        return Err(MirrorFault::RootMismatch.error(format!(
            "the entries hash to {}, the checkpoint's root is {root}",
            builder.root()
        )));
    }

    let (cid, block) = next_block(&mut car, &at_end, "the INDEX").await?;
    check_block(&cid, &block, "INDEX")?;
    if cid != index_cid {
        return Err(MirrorFault::UnexpectedBlock
            .error("the block after the entry bundles is not the header's root"));
    }
    let index = parse_index(&block)?;
    let same_cid = |text: &Option<String>, cid: Option<cid::Cid>, what: &str| -> Result<bool> {
        Ok(match (text, cid) {
            (Some(text), Some(cid)) => parse_cid(text, what)? == cid,
            (None, None) => true,
            _ => false,
        })
    };
    let mut listed = Sha256::new();
    for bundle in &index.entry_bundles {
        listed.update(parse_cid(&bundle.cid, "entry bundle")?.to_bytes());
    }
    if index.origin != predicate.origin
        || index.start != predicate.start
        || index.size != predicate.size
        || index.previous_size != predicate.previous_size
        || parse_cid(&index.checkpoint, "checkpoint")? != checkpoint_cid
        || !same_cid(
            &index.frontier,
            incremental_cids.as_ref().map(|c| c.0),
            "frontier",
        )?
        || !same_cid(
            &index.consistency_proof,
            incremental_cids.as_ref().map(|c| c.1),
            "consistency proof",
        )?
        || listed.finalize() != bundle_cids.finalize()
    {
        return Err(
            MirrorFault::UnexpectedBlock.error("the INDEX does not list the blocks the file holds")
        );
    }
    match car.next_block().await {
        Ok(None) => {}
        Ok(Some(_)) => {
            return Err(MirrorFault::UnexpectedBlock.error("a block follows the INDEX"));
        }
        Err(e) => {
            return Err(car_error(
                e,
                at_end.load(std::sync::atomic::Ordering::Relaxed),
                "after the INDEX",
            ));
        }
    }
    drop(car);
    let digest: [u8; 32] = file_hash.finalize().into();
    if digest != car_sha256 {
        return Err(MirrorFault::CarDigestMismatch.error(format!(
            "the CAR file's SHA-256 is {}, the Statement's subject is {}",
            hex::encode(digest),
            hex::encode(car_sha256)
        )));
    }
    let consistency_proof = match (incremental_cids, capture) {
        (Some((_, _, proof)), _) => proof,
        (None, Some(capture)) => capture.proof()?,
        (None, None) => Vec::new(),
    };
    Ok(VerifiedMirror {
        consistency_proof,
        origin: predicate.origin,
        start: predicate.start,
        size: predicate.size,
        root,
        previous_size: predicate.previous_size,
        checkpoint_note: predicate.checkpoint.into_bytes(),
        car_sha256: digest,
    })
}

/// How the trusted tree relates to a bundle.
#[derive(Clone, Copy)]
enum Previous<'a> {
    /// An incremental bundle starting at the trusted size.
    Incremental(&'a TrustedTree),
    /// A full bundle containing the trusted tree.
    Contained(&'a TrustedTree),
}
use Previous::{Contained, Incremental};

fn check_previous<'a>(
    predicate: &MirrorPredicate,
    previous: Option<&'a TrustedTree>,
) -> Result<Option<Previous<'a>>> {
    if let Some(trusted) = previous
        && trusted.size > predicate.size
    {
        return Err(MirrorFault::Rollback.error(format!(
            "the bundle's tree of size {} is smaller than the trusted tree of size {}",
            predicate.size, trusted.size
        )));
    }
    match (predicate.previous_size, previous) {
        (None, trusted) => Ok(trusted.map(Contained)),
        (Some(start), None) => Err(MirrorFault::PreviousMismatch.error(format!(
            "the bundle continues from size {start}, and no trusted tree was given"
        ))),
        (Some(start), Some(trusted)) if start != trusted.size => Err(MirrorFault::PreviousMismatch
            .error(format!(
                "the bundle continues from size {start}, the trusted tree is of size {}",
                trusted.size
            ))),
        (Some(_), Some(trusted)) => Ok(Some(Incremental(trusted))),
    }
}

async fn read_envelope(path: &Path) -> Result<Vec<u8>> {
    let unreadable =
        |e: std::io::Error| MirrorFault::Unreadable.error(format!("{}: {e}", path.display()));
    let file = tokio::fs::File::open(path).await.map_err(unreadable)?;
    let mut bytes = Vec::new();
    file.take(MAX_ENVELOPE_SIZE as u64 + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(unreadable)?;
    if bytes.len() > MAX_ENVELOPE_SIZE {
        return Err(Error::TooLarge {
            what: "mirror DSSE envelope",
            size: bytes.len(),
            max: MAX_ENVELOPE_SIZE,
        });
    }
    Ok(bytes)
}

/// Builds the consistency proof from `old_size` to `new_size` while the leaves
/// stream by: the proof's nodes are hashes of complete subtrees (listed first
/// by a dry run of [`prove_consistency`]), each captured when its last leaf
/// arrives, from the O(log n) frontier and that leaf.
struct ProofCapture {
    old_size: u64,
    new_size: u64,
    /// Subtrees `(end, level)` still to capture, latest end first.
    wanted: Vec<(u64, u8)>,
    next_end: u64,
    captured: HashMap<(u8, u64), Hash>,
}

impl ProofCapture {
    fn new(old_size: u64, new_size: u64) -> Result<ProofCapture> {
        let mut wanted = Vec::new();
        prove_consistency(&mut Recording(&mut wanted), old_size, new_size)?;
        let mut wanted: Vec<(u64, u8)> = wanted
            .into_iter()
            .map(|(level, index)| ((index + 1) << level, level))
            .collect();
        wanted.sort_unstable_by(|a, b| b.cmp(a));
        wanted.dedup();
        Ok(ProofCapture {
            old_size,
            new_size,
            next_end: wanted.last().map_or(u64::MAX, |w| w.0),
            wanted,
            captured: HashMap::new(),
        })
    }

    /// Captures the subtrees that `leaf`, the leaf after `builder`'s, ends.
    fn record(&mut self, builder: &RootBuilder, leaf: &Hash) {
        let frontier = builder.frontier();
        while let Some(&(end, level)) = self.wanted.last() {
            if end != self.next_end {
                break;
            }
            // The frontier's last `level` hashes are the subtrees of levels
            // level-1 .. 0 that, with `leaf`, make up the wanted subtree.
            let mut hash = *leaf;
            for left in frontier.iter().rev().take(usize::from(level)) {
                hash = node_hash(left, &hash);
            }
            self.captured.insert((level, (end >> level) - 1), hash);
            self.wanted.pop();
        }
        self.next_end = self.wanted.last().map_or(u64::MAX, |w| w.0);
    }

    fn proof(mut self) -> Result<Vec<Hash>> {
        let (old_size, new_size) = (self.old_size, self.new_size);
        prove_consistency(&mut self, old_size, new_size)
    }
}

impl SubtreeHashSource for ProofCapture {
    fn subtree_hash(&mut self, level: u8, index: u64) -> Result<Hash> {
        self.captured
            .get(&(level, index))
            .copied()
            .ok_or(Error::ProofUnavailable {
                reason: "subtree was not captured",
            })
    }
}

/// Records the subtrees a computation asks for, answering with placeholders.
struct Recording<'a>(&'a mut Vec<(u8, u64)>);

impl SubtreeHashSource for Recording<'_> {
    fn subtree_hash(&mut self, level: u8, index: u64) -> Result<Hash> {
        self.0.push((level, index));
        Ok(Hash([0; 32]))
    }
}
