//! `mirror verify` on a generated mirror: entries/s, wall time and peak RSS,
//! beside the single-core SHA-256 bound measured in the same run over the same
//! inputs the verifier hashes (the CAR file, every block for its CID, every
//! entry for its leaf hash, every interior node).
//!
//! `cargo bench -p witness-core --bench mirror_verify` runs 10,000,000
//! entries of 32 to 64 bytes (about 500 MB in `target/mirror-bench/`);
//! `MIRROR_BENCH_ENTRIES` changes the count. Under `cargo test` (no `--bench`
//! argument) it runs a 10,000-entry smoke test.

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use ed25519_dalek::Signer as _;
use p256::pkcs8::{EncodePrivateKey as _, LineEnding};
use sha2::{Digest, Sha256};
use witness_core::merkle::{RootBuilder, leaf_hash, node_hash};
use witness_core::mirror::{CAR_FILE, bundle_spans};
use witness_core::note::{Note, NoteSignature, SignatureType, VerifierKey};
use witness_core::service::archive::ManifestVerifier;
use witness_core::service::mirror::{FileManifestSigner, verify_bundle, write_bundle};

const ORIGIN: &str = "example.com/mirror-bench";

/// Entry `i`: 32 to 64 bytes derived from its index.
fn entry(i: u64) -> Vec<u8> {
    let len = 32 + (i % 33) as usize;
    let seed = i.to_le_bytes();
    (0..len).map(|j| seed[j % 8] ^ (j as u8)).collect()
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// Reads a file in 1 MiB chunks.
fn stream_file(path: &std::path::Path, mut chunk: impl FnMut(&[u8])) {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path).unwrap();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).unwrap();
        if read == 0 {
            return;
        }
        chunk(&buffer[..read]);
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let entries: u64 = std::env::var("MIRROR_BENCH_ENTRIES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if bench { 10_000_000 } else { 10_000 });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/mirror-bench")
        .join(entries.to_string());

    // The log: its root from the entries, streaming, and a signed checkpoint.
    let signing = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let log_key = VerifierKey::from_material(
        ORIGIN,
        SignatureType::Ed25519,
        signing.verifying_key().as_bytes(),
    )
    .unwrap();
    let mut builder = RootBuilder::new();
    for i in 0..entries {
        builder.push(leaf_hash(&entry(i)));
    }
    let text = format!("{ORIGIN}\n{entries}\n{}\n", builder.root().to_base64());
    let line = NoteSignature::new(
        ORIGIN,
        log_key.key_id(),
        signing.sign(text.as_bytes()).to_bytes().to_vec(),
    )
    .unwrap();
    let note = Note::new(&text, vec![line]).unwrap().to_bytes();
    let pem = p256::ecdsa::SigningKey::from_slice(&[5; 32])
        .unwrap()
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap();
    let signer = FileManifestSigner::from_pkcs8_pem(&pem).unwrap();
    let mirror_key = ManifestVerifier::from_pem(&signer.public_key_pem().unwrap()).unwrap();

    let started = Instant::now();
    runtime
        .block_on(write_bundle(
            &dir,
            &note,
            0,
            None,
            (0..entries).map(entry),
            &signer,
        ))
        .unwrap();
    let car_bytes = std::fs::metadata(dir.join(CAR_FILE)).unwrap().len();
    eprintln!(
        "generated {entries} entries, CAR {:.1} MB, in {:.1}s",
        car_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let rss_before = peak_rss_kib();

    // Warm the page cache so both measurements read from memory.
    stream_file(&dir.join(CAR_FILE), |_| {});

    let started = Instant::now();
    let verified = runtime
        .block_on(verify_bundle(&dir, &log_key, &mirror_key, None))
        .unwrap();
    let verify_seconds = started.elapsed().as_secs_f64();
    assert_eq!(verified.size, entries);
    assert_eq!(verified.root, builder.root());
    let rss_verify = peak_rss_kib();

    // The bound: the same SHA-256 inputs, hashed back to back. Blocks are
    // rebuilt outside the timed loops; only hashing is timed.
    let mut hashing = std::time::Duration::ZERO;
    let timed = |hashing: &mut std::time::Duration, f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        *hashing += t.elapsed();
    };
    let mut file_hash = Sha256::new();
    stream_file(&dir.join(CAR_FILE), |chunk| {
        timed(&mut hashing, &mut || file_hash.update(chunk))
    });
    std::hint::black_box(file_hash.finalize());
    let mut sink = [0u8; 32];
    let mut block = Vec::new();
    let mut leaves = Vec::with_capacity(256);
    for span in bundle_spans(0, entries) {
        block.clear();
        leaves.clear();
        let batch: Vec<Vec<u8>> = (span.first..span.end).map(entry).collect();
        for e in &batch {
            block.extend_from_slice(&(e.len() as u16).to_be_bytes());
            block.extend_from_slice(e);
        }
        timed(&mut hashing, &mut || {
            let cid: [u8; 32] = Sha256::digest(&block).into();
            sink[0] ^= cid[0];
            for e in &batch {
                leaves.push(leaf_hash(e));
            }
        });
    }
    // Interior nodes: one per leaf but the last (n - 1 in all).
    let a = leaf_hash(b"a");
    let mut node = leaf_hash(b"b");
    timed(&mut hashing, &mut || {
        for _ in 1..entries {
            node = node_hash(&a, &node);
        }
    });
    std::hint::black_box((sink, node));
    let bound_seconds = hashing.as_secs_f64();

    let rate = entries as f64 / verify_seconds;
    let bound_rate = entries as f64 / bound_seconds;
    println!(
        "mirror verify: {entries} entries, CAR {:.1} MB",
        car_bytes as f64 / 1e6
    );
    println!(
        "  verify:      {verify_seconds:.2}s wall, {:.0} entries/s, {:.1} MB/s of CAR",
        rate,
        car_bytes as f64 / 1e6 / verify_seconds
    );
    println!(
        "  SHA-256 bound (same inputs, one core): {bound_seconds:.2}s, {:.0} entries/s",
        bound_rate
    );
    println!("  verify / bound: {:.0}%", 100.0 * rate / bound_rate);
    println!(
        "  peak RSS (VmHWM) after verify: {rss_verify} KiB (after generating: {rss_before} KiB)"
    );
}
