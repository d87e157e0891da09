//! CARv1 I/O for mirror bundles: block CIDs (CIDv1, raw, sha2-256), a reader
//! that bounds every section, recomputes every CID and hashes the whole file as
//! it streams, and the writer's section encoding.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use cid::Cid;
use iroh_car::{CarHeader, CarReader};
use multihash::Multihash;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

use crate::mirror::{MirrorFault, RAW_CODEC, SHA2_256_CODE, block_digest};
use crate::{Error, Result};

/// The CID of a block: CIDv1, raw codec, sha2-256 of its bytes.
pub fn block_cid(bytes: &[u8]) -> Result<Cid> {
    let hash = Multihash::<64>::wrap(SHA2_256_CODE, &block_digest(bytes))
        .map_err(|e| MirrorFault::MalformedCar.error(e.to_string()))?;
    Ok(Cid::new_v1(RAW_CODEC, hash))
}

/// Checks that `cid` is a CIDv1 of the raw codec whose sha2-256 is that of
/// `bytes`.
pub fn check_block(cid: &Cid, bytes: &[u8], what: &str) -> Result<()> {
    let hash = cid.hash();
    if cid.version() != cid::Version::V1
        || cid.codec() != RAW_CODEC
        || hash.code() != SHA2_256_CODE
        || hash.size() != 32
    {
        return Err(MirrorFault::MalformedCar.error(format!(
            "{what}: CID {cid} is not a CIDv1 of raw bytes with sha2-256"
        )));
    }
    if hash.digest() != block_digest(bytes) {
        return Err(MirrorFault::BlockCidMismatch.error(format!(
            "{what}: the block's bytes do not hash to its CID {cid}"
        )));
    }
    Ok(())
}

/// Parses a CID written in an INDEX.
pub fn parse_cid(text: &str, what: &str) -> Result<Cid> {
    Cid::try_from(text).map_err(|e| {
        MirrorFault::MalformedManifest.error(format!("{what}: CID {text:?} is malformed: {e}"))
    })
}

/// Encodes a CARv1 header with one root. Every root this module writes is a
/// CIDv1 raw sha2-256, so the header's length does not depend on which.
pub fn header_bytes(root: Cid) -> Result<Vec<u8>> {
    let header = CarHeader::new_v1(vec![root])
        .encode()
        .map_err(|e| MirrorFault::MalformedCar.error(e.to_string()))?;
    let mut out = Vec::with_capacity(header.len() + 2);
    push_varint(&mut out, header.len() as u64);
    out.extend_from_slice(&header);
    Ok(out)
}

/// Encodes one CAR section: varint length, CID, block bytes.
pub fn section_bytes(cid: &Cid, block: &[u8]) -> Vec<u8> {
    let cid = cid.to_bytes();
    let mut out = Vec::with_capacity(cid.len() + block.len() + 4);
    push_varint(&mut out, (cid.len() + block.len()) as u64);
    out.extend_from_slice(&cid);
    out.extend_from_slice(block);
    out
}

/// Unsigned LEB128, as CARv1 frames sections.
fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Hashes everything read through it, and notes whether the end of the input
/// was reached (a section cut short there is a truncated file).
pub struct HashingReader<'a, R> {
    inner: R,
    hasher: &'a mut Sha256,
    at_end: Arc<AtomicBool>,
}

impl<'a, R> HashingReader<'a, R> {
    /// Wraps `inner`.
    pub fn new(inner: R, hasher: &'a mut Sha256, at_end: Arc<AtomicBool>) -> Self {
        HashingReader {
            inner,
            hasher,
            at_end,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<'_, R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            let read = &buf.filled()[before..];
            if read.is_empty() && buf.remaining() > 0 {
                this.at_end.store(true, Ordering::Relaxed);
            }
            this.hasher.update(read);
        }
        poll
    }
}

/// Maps an iroh-car failure to the check it failed; `at_end` says whether the
/// input had ended.
pub fn car_error(error: iroh_car::Error, at_end: bool, position: &str) -> Error {
    match error {
        iroh_car::Error::LdReadTooLarge(length) => MirrorFault::BlockTooLarge.error(format!(
            "{position}: section of {length} bytes is over the limit of {}",
            crate::mirror::MAX_BLOCK_SIZE
        )),
        iroh_car::Error::Io(e) => MirrorFault::Unreadable.error(format!("{position}: {e}")),
        _ if at_end => MirrorFault::TruncatedCar.error(format!("{position}: the file ends early")),
        other => MirrorFault::MalformedCar.error(format!("{position}: {other}")),
    }
}

/// Reads the next block; the end of the file is a truncation (`what` names
/// the block expected).
pub async fn next_block<R: AsyncRead + Unpin>(
    car: &mut CarReader<R>,
    at_end: &AtomicBool,
    what: &str,
) -> Result<(Cid, Vec<u8>)> {
    match car.next_block().await {
        Ok(Some(block)) => Ok(block),
        Ok(None) => Err(MirrorFault::TruncatedCar.error(format!("the file ends before {what}"))),
        Err(error) => Err(car_error(error, at_end.load(Ordering::Relaxed), what)),
    }
}

/// Reads a whole CAR file as the verifier does, without interpreting the
/// blocks: the header must name exactly one root, no section may exceed
/// [`crate::mirror::MAX_BLOCK_SIZE`] (refused before allocating), and every
/// block's CID is recomputed. `visit` sees each block in order, one at a
/// time; the header's root is returned. For tools and the fuzz target; the
/// verifier streams the same way with the format's block order on top.
pub async fn read_car<R: AsyncRead + Send + Unpin>(
    reader: R,
    mut visit: impl FnMut(&Cid, &[u8]) -> Result<()>,
) -> Result<Cid> {
    let mut hasher = Sha256::new();
    let at_end = Arc::new(AtomicBool::new(false));
    let reader = HashingReader::new(reader, &mut hasher, at_end.clone());
    let mut car = CarReader::new(reader)
        .await
        .map_err(|e| car_error(e, at_end.load(Ordering::Relaxed), "header"))?;
    let [root] = car.header().roots() else {
        return Err(MirrorFault::MalformedCar.error("the header must name exactly one root"));
    };
    let root = *root;
    let mut position = 0u64;
    loop {
        match car.next_block().await {
            Ok(Some((cid, block))) => {
                check_block(&cid, &block, &format!("block {position}"))?;
                visit(&cid, &block)?;
                position += 1;
            }
            Ok(None) => return Ok(root),
            Err(error) => {
                return Err(car_error(
                    error,
                    at_end.load(Ordering::Relaxed),
                    &format!("block {position}"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_of_any_root_have_the_same_length() {
        let a = header_bytes(block_cid(b"").unwrap()).unwrap();
        let b = header_bytes(block_cid(b"index").unwrap()).unwrap();
        assert_eq!(a.len(), b.len());
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn read_car_checks_every_block_and_the_end() {
        let (a, b) = (b"first".as_slice(), b"second".as_slice());
        let (cid_a, cid_b) = (block_cid(a).unwrap(), block_cid(b).unwrap());
        let mut car = header_bytes(cid_b).unwrap();
        car.extend(section_bytes(&cid_a, a));
        car.extend(section_bytes(&cid_b, b));
        let mut seen = Vec::new();
        let root = read_car(car.as_slice(), |cid, block| {
            seen.push((*cid, block.to_vec()));
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(root, cid_b);
        assert_eq!(seen, vec![(cid_a, a.to_vec()), (cid_b, b.to_vec())]);

        let mut flipped = car.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let error = read_car(flipped.as_slice(), |_, _| Ok(()))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), "mirror_block_cid_mismatch");
        let truncated = &car[..car.len() - 1];
        let error = read_car(truncated, |_, _| Ok(())).await.unwrap_err();
        assert_eq!(error.kind(), "mirror_truncated_car");
    }

    #[test]
    fn cids_are_raw_sha256_and_checked() {
        let cid = block_cid(b"block").unwrap();
        assert!(cid.to_string().starts_with("bafkrei"));
        check_block(&cid, b"block", "test").unwrap();
        let error = check_block(&cid, b"blocK", "test").unwrap_err();
        assert_eq!(error.kind(), "mirror_block_cid_mismatch");
        assert_eq!(parse_cid(&cid.to_string(), "test").unwrap(), cid);
    }
}
