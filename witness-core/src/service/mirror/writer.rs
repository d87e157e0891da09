//! Writing a bundle from entries at hand (tests, benchmarks, producers that
//! hold the log): no fetching, no resume, no check that the entries hash to
//! the checkpoint's root, so it also writes the bad bundles tests need.

use std::io::{BufWriter, Read as _, Seek as _, Write as _};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::checkpoint::parse_checkpoint_text;
use crate::merkle::Hash;
use crate::mirror::{
    CAR_FILE, ENVELOPE_FILE, FORMAT, IndexedBundle, LogKind, MirrorIndex, MirrorPredicate,
    PAYLOAD_TYPE, bundle_spans, encode_hashes, push_entry, serialize_index, serialize_statement,
    tile_paths,
};
use crate::mirror_car::{block_cid, header_bytes, section_bytes};
use crate::note::parse_note;
use crate::service::archive::ManifestSigner;
use crate::{Error, Result};

/// The blocks only an incremental bundle has.
#[derive(Clone, Copy, Debug)]
pub struct IncrementalBlocks<'a> {
    /// The compact range of `[0, start)` (see [`crate::mirror::incremental_blocks`]).
    pub frontier: &'a [Hash],
    /// The consistency proof from `start` to the checkpoint's size.
    pub consistency_proof: &'a [Hash],
}

/// Writes `dir/rekor-mirror.car` and its envelope signed by `signer`: the
/// checkpoint `checkpoint_note`, `incremental` when `start > 0`, and
/// `entries`, the entries `[start, size)` in order. Blocks the thread while it
/// writes the file. Returns the CAR file's SHA-256.
pub async fn write_bundle<E: AsRef<[u8]>>(
    dir: &Path,
    checkpoint_note: &[u8],
    start: u64,
    incremental: Option<IncrementalBlocks<'_>>,
    entries: impl IntoIterator<Item = E>,
    signer: &dyn ManifestSigner,
) -> Result<[u8; 32]> {
    let note = parse_note(checkpoint_note)?;
    let checkpoint = parse_checkpoint_text(note.text())?;
    let size = checkpoint.size();
    let failed = |e: std::io::Error| Error::Archive {
        detail: format!("writing the bundle in {}: {e}", dir.display()),
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    let car_path = dir.join(CAR_FILE);
    let mut file =
        BufWriter::with_capacity(1 << 20, std::fs::File::create(&car_path).map_err(failed)?);
    let checkpoint_cid = block_cid(checkpoint_note)?;
    file.write_all(&header_bytes(checkpoint_cid)?)
        .map_err(failed)?;
    file.write_all(&section_bytes(&checkpoint_cid, checkpoint_note))
        .map_err(failed)?;
    let (frontier, consistency_proof) = match incremental {
        Some(blocks) => {
            let frontier = encode_hashes(blocks.frontier);
            let proof = encode_hashes(blocks.consistency_proof);
            let (frontier_cid, proof_cid) = (block_cid(&frontier)?, block_cid(&proof)?);
            file.write_all(&section_bytes(&frontier_cid, &frontier))
                .map_err(failed)?;
            file.write_all(&section_bytes(&proof_cid, &proof))
                .map_err(failed)?;
            (Some(frontier_cid.to_string()), Some(proof_cid.to_string()))
        }
        None => (None, None),
    };
    let mut entries = entries.into_iter();
    let mut entry_bundles = Vec::new();
    let mut block = Vec::new();
    for span in bundle_spans(start, size) {
        block.clear();
        for _ in 0..span.count() {
            let entry = entries.next().ok_or(Error::InvalidRequest {
                reason: "fewer entries than the checkpoint's range",
            })?;
            push_entry(&mut block, entry.as_ref())?;
        }
        let cid = block_cid(&block)?;
        file.write_all(&section_bytes(&cid, &block))
            .map_err(failed)?;
        entry_bundles.push(IndexedBundle {
            index: span.tile.index,
            width: span.tile.width,
            cid: cid.to_string(),
        });
    }
    let index = MirrorIndex {
        format: FORMAT.to_owned(),
        origin: checkpoint.origin().to_owned(),
        log_kind: LogKind::Tiles,
        start,
        size,
        previous_size: (start > 0).then_some(start),
        checkpoint: checkpoint_cid.to_string(),
        entry_bundles,
        frontier,
        consistency_proof,
    };
    let index_block = serialize_index(&index)?;
    let index_cid = block_cid(&index_block)?;
    file.write_all(&section_bytes(&index_cid, &index_block))
        .map_err(failed)?;
    let mut file = file.into_inner().map_err(|e| failed(e.into_error()))?;
    file.rewind().map_err(failed)?;
    file.write_all(&header_bytes(index_cid)?).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    drop(file);

    let mut hasher = Sha256::new();
    let mut reader = std::fs::File::open(&car_path).map_err(failed)?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = reader.read(&mut buffer).map_err(failed)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    let car_sha256: [u8; 32] = hasher.finalize().into();
    let predicate = MirrorPredicate {
        origin: checkpoint.origin().to_owned(),
        size,
        root_hash: checkpoint.root_hash().to_base64(),
        start,
        previous_size: index.previous_size,
        checkpoint: String::from_utf8(checkpoint_note.to_vec()).map_err(|_| {
            Error::MalformedNote {
                reason: "note is not UTF-8",
            }
        })?,
        tiles: tile_paths(start, size),
    };
    let envelope = signer
        .sign_manifest(PAYLOAD_TYPE, serialize_statement(&car_sha256, &predicate)?)
        .await?;
    std::fs::write(dir.join(ENVELOPE_FILE), envelope).map_err(failed)?;
    Ok(car_sha256)
}
