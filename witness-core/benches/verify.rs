//! Side-by-side verification benchmarks: witness-core against the Rust peers, on
//! the same inputs in the same run.
//!
//! Peers:
//! - azul (Cloudflare): `signed_note` 0.2 (note parsing and Ed25519 verification)
//!   and `tlog_tiles` 0.2 (checkpoint body parsing, `check_record`, `check_tree`).
//! - `ct-merkle` 0.3 (RFC 6962 inclusion and consistency verification).
//! - "raw" bounds: the bare signature primitive on a pre-split text and signature,
//!   with no note parsing at all. Nothing that parses a note can beat these; they
//!   show how much of each operation is framing overhead.
//!
//! Every implementation is first checked to accept the input and to reject 1-bit
//! corruptions of it, so a failing path is never timed. Merkle operations include
//! hashing the leaf data (ct-merkle and python-sigstore hash the leaf themselves),
//! and each peer gets its input in its own native types, built outside the loop.
//!
//! Test data is read in place from the shared testdata directory.
//! `scripts/bench-verify` runs this bench and the python-sigstore comparison and
//! prints a summary table.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use sha2::Sha256;
use witness_core::bundle::parse_bundle_entries;
use witness_core::checkpoint::{parse_checkpoint_text, verify_checkpoint};
use witness_core::merkle::{
    self, Hash, SubtreeHashSource, leaf_hash, node_hash, prove_consistency,
    root_from_inclusion_proof, tree_root,
};
use witness_core::note::{VerifierKey, parse_note};
use witness_core::rekor::parse_consistency_proof_response;

macro_rules! rekor_testdata {
    ($path:literal) => {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/testdata/rekor/",
            $path
        )
    };
}

const ED25519_CHECKPOINT: &str =
    rekor_testdata!("checkpoints/valid/log2025-1.rekor.sigstore.dev.412115.f1dcce7b.txt");
const ED25519_VKEY: &str =
    "log2025-1.rekor.sigstore.dev+cf119915+AbfK5adZJxsI323FwGD2AJJ9F4i89cfDuLdGJBIYntuO";

const ECDSA_CHECKPOINT: &str = rekor_testdata!(
    "checkpoints/valid/rekor.sigstore.dev_-_1193050959916656506.1139201557.d191047b.txt"
);
const ECDSA_VKEY: &str = "rekor.sigstore.dev+c0d23d6a+AjBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABNhtmPtrWm3U1eQXBogSMdGvXwBcK5AW5i0hrZLOC96l+smGNM7nwZ4QvFK/4sueRoVj//QP22Ni4Qt9DPfkWLc=";

const V1_PROD_BUNDLE: &str = rekor_testdata!("bundles/rekor-v1-prod/sigstore-rs.bundle_v03.json");

const STAGING_OLD_CHECKPOINT: &str = rekor_testdata!(
    "checkpoints/valid/rekor.sigstage.dev_-_8202293616175992157.1352760.e81a8af7.txt"
);
const STAGING_NEW_CHECKPOINT: &str = rekor_testdata!(
    "checkpoints/valid/rekor.sigstage.dev_-_8202293616175992157.1352764.e3e958d9.txt"
);
const STAGING_PROOF: &str = rekor_testdata!(
    "loginfo/rekor-v1-staging.GET-api-v1-log-proof.firstSize1352760.lastSize1352764.json"
);

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn flip_bit(bytes: &mut [u8], index: usize) {
    bytes[index] ^= 0x01;
}

/// Checks that `verify` accepts `cases[0]` and rejects every other case (each in
/// the implementation's native form made by `prepare`), then times it on
/// `cases[0]`.
fn check_and_bench<C, I>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    cases: &[C],
    prepare: impl Fn(&C) -> I,
    verify: impl Fn(&I) -> bool,
) {
    let (good, bad) = cases.split_first().expect("at least the valid case");
    let good = prepare(good);
    assert!(verify(&good), "{name}: rejects the valid input");
    for (i, case) in bad.iter().enumerate() {
        assert!(
            !verify(&prepare(case)),
            "{name}: accepts corrupted input #{}",
            i + 1
        );
    }
    group.bench_function(name, |b| b.iter(|| verify(black_box(&good))));
}

// ---------------------------------------------------------------- checkpoints

/// The valid checkpoint and two 1-bit corruptions that stay well-formed, so every
/// implementation has to reach the signature check to reject them: the last
/// digit of the tree size, and one bit of the signature's base64.
fn checkpoint_cases(path: &str) -> Vec<Vec<u8>> {
    let valid = read(path);
    let size_end = valid
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(1)
        .expect("a size line")
        .0;
    let mut size_flipped = valid.clone();
    flip_bit(&mut size_flipped, size_end - 1);
    assert!(size_flipped[size_end - 1].is_ascii_digit());
    // 'A' <-> '@' would break base64; flip a character deep in the signature and
    // pick one whose flipped form is still a base64 character.
    let mut sig_flipped = valid.clone();
    let at = (valid.len() - 20..valid.len() - 2)
        .find(|&i| valid[i].is_ascii_alphabetic() && (valid[i] ^ 1).is_ascii_alphabetic())
        .expect("a flippable base64 letter");
    flip_bit(&mut sig_flipped, at);
    vec![valid, size_flipped, sig_flipped]
}

/// The note text and the signature bytes (after the key ID) of a one-signature note.
fn split_note(bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let text = std::str::from_utf8(bytes).unwrap();
    let split = text.rfind("\n\n").unwrap();
    let line = text[split + 2..].trim_end_matches('\n');
    let encoded = line.rsplit_once(' ').unwrap().1;
    let blob = BASE64.decode(encoded).unwrap_or_default();
    (
        bytes[..=split].to_vec(),
        blob.get(4..).unwrap_or_default().to_vec(),
    )
}

fn azul_verifiers(verifier: Box<dyn signed_note::Verifier>) -> signed_note::VerifierList {
    signed_note::VerifierList::new(vec![verifier])
}

fn azul_note_verifies(bytes: &[u8], verifiers: &signed_note::VerifierList) -> bool {
    signed_note::Note::from_bytes(bytes).is_ok_and(|note| note.verify(verifiers).is_ok())
}

/// tlog_tiles 0.2 has no "open checkpoint" helper; its equivalent of Go's
/// `note.Open` + `tlog.ParseCheckpoint` is signed_note verification followed by
/// `tlog_tiles::Checkpoint::from_bytes` on the verified text.
fn azul_checkpoint_verifies(bytes: &[u8], verifiers: &signed_note::VerifierList) -> bool {
    signed_note::Note::from_bytes(bytes).is_ok_and(|note| {
        note.verify(verifiers).is_ok() && tlog_tiles::Checkpoint::from_bytes(note.text()).is_ok()
    })
}

fn ours_checkpoint_verifies(bytes: &[u8], keys: &[VerifierKey]) -> bool {
    verify_checkpoint(bytes, keys, None).is_ok()
}

fn bench_checkpoint_ed25519(c: &mut Criterion) {
    let cases = checkpoint_cases(ED25519_CHECKPOINT);
    let keys = [VerifierKey::parse_vkey(ED25519_VKEY).unwrap()];
    for bad in &cases[1..] {
        let err = verify_checkpoint(bad, &keys, None).unwrap_err();
        assert_eq!(
            err.kind(),
            "invalid_signature",
            "rejected for the wrong reason"
        );
    }
    let azul = azul_verifiers(Box::new(
        signed_note::StandardVerifier::new(ED25519_VKEY).unwrap(),
    ));
    let raw_key = {
        let blob = BASE64
            .decode(ED25519_VKEY.rsplit_once('+').unwrap().1)
            .unwrap();
        ed25519_dalek::VerifyingKey::from_bytes(&blob[1..].try_into().unwrap()).unwrap()
    };

    let mut group = c.benchmark_group("checkpoint_ed25519");
    check_and_bench(
        &mut group,
        "witness-core",
        &cases,
        |b| b.clone(),
        |b| ours_checkpoint_verifies(b, &keys),
    );
    check_and_bench(
        &mut group,
        "azul-signed_note",
        &cases,
        |b| b.clone(),
        |b| azul_note_verifies(b, &azul),
    );
    check_and_bench(
        &mut group,
        "azul-tlog_tiles",
        &cases,
        |b| b.clone(),
        |b| azul_checkpoint_verifies(b, &azul),
    );
    check_and_bench(
        &mut group,
        "ed25519-dalek-raw",
        &cases,
        |b| split_note(b),
        |(text, sig)| {
            use ed25519_dalek::Verifier as _;
            ed25519_dalek::Signature::from_slice(sig)
                .is_ok_and(|sig| raw_key.verify(text, &sig).is_ok())
        },
    );
    group.finish();
}

/// signed_note 0.2 only ships an Ed25519 verifier, but its `Verifier` trait is
/// open: this plugs p256 into it the way transparency-dev's ECDSA note verifier
/// works (ASN.1 DER signature over the note text, key ID = SHA-256(SPKI)[:4]).
struct P256NoteVerifier {
    name: String,
    id: u32,
    key: p256::ecdsa::VerifyingKey,
}

impl P256NoteVerifier {
    fn from_vkey(vkey: &str) -> P256NoteVerifier {
        use p256::pkcs8::DecodePublicKey as _;
        let mut parts = vkey.splitn(3, '+');
        let (name, id, key) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let blob = BASE64.decode(key).unwrap();
        assert_eq!(blob[0], 0x02, "not an ECDSA vkey");
        P256NoteVerifier {
            name: name.to_owned(),
            id: u32::from_str_radix(id, 16).unwrap(),
            key: p256::ecdsa::VerifyingKey::from_public_key_der(&blob[1..]).unwrap(),
        }
    }

    fn verify_der(&self, msg: &[u8], sig: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier as _;
        p256::ecdsa::DerSignature::try_from(sig).is_ok_and(|sig| self.key.verify(msg, &sig).is_ok())
    }
}

impl signed_note::Verifier for P256NoteVerifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.id
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        self.verify_der(msg, sig)
    }
}

fn bench_checkpoint_ecdsa(c: &mut Criterion) {
    let cases = checkpoint_cases(ECDSA_CHECKPOINT);
    let keys = [VerifierKey::parse_vkey(ECDSA_VKEY).unwrap()];
    for bad in &cases[1..] {
        let err = verify_checkpoint(bad, &keys, None).unwrap_err();
        assert_eq!(
            err.kind(),
            "invalid_signature",
            "rejected for the wrong reason"
        );
    }
    let azul = azul_verifiers(Box::new(P256NoteVerifier::from_vkey(ECDSA_VKEY)));
    let raw = P256NoteVerifier::from_vkey(ECDSA_VKEY);

    let mut group = c.benchmark_group("checkpoint_ecdsa_p256");
    check_and_bench(
        &mut group,
        "witness-core",
        &cases,
        |b| b.clone(),
        |b| ours_checkpoint_verifies(b, &keys),
    );
    check_and_bench(
        &mut group,
        "azul-signed_note+p256",
        &cases,
        |b| b.clone(),
        |b| azul_note_verifies(b, &azul),
    );
    check_and_bench(
        &mut group,
        "azul-tlog_tiles+p256",
        &cases,
        |b| b.clone(),
        |b| azul_checkpoint_verifies(b, &azul),
    );
    check_and_bench(
        &mut group,
        "p256-raw",
        &cases,
        |b| split_note(b),
        |(text, sig)| raw.verify_der(text, sig),
    );
    group.finish();
}

// ---------------------------------------------------------------- inclusion

#[derive(Clone)]
struct InclusionCase {
    data: Vec<u8>,
    index: u64,
    size: u64,
    proof: Vec<Hash>,
    root: Hash,
}

impl InclusionCase {
    /// The valid case, then: one bit of a middle proof hash, one bit of the leaf
    /// data, one bit of the root, and the neighbouring leaf index.
    fn with_corruptions(self) -> Vec<InclusionCase> {
        let mut proof_flipped = self.clone();
        let mid = proof_flipped.proof.len() / 2;
        flip_bit(&mut proof_flipped.proof[mid].0, 7);
        let mut data_flipped = self.clone();
        let half = data_flipped.data.len() / 2;
        flip_bit(&mut data_flipped.data, half);
        let mut root_flipped = self.clone();
        flip_bit(&mut root_flipped.root.0, 31);
        let mut index_flipped = self.clone();
        index_flipped.index ^= 1;
        vec![
            self,
            proof_flipped,
            data_flipped,
            root_flipped,
            index_flipped,
        ]
    }
}

fn digest(hash: &Hash) -> ct_merkle::digest::Output<Sha256> {
    hash.0.into()
}

fn bench_inclusion_group(c: &mut Criterion, group_name: &str, cases: &[InclusionCase]) {
    let mut group = c.benchmark_group(group_name);
    check_and_bench(
        &mut group,
        "witness-core",
        cases,
        InclusionCase::clone,
        |case| {
            merkle::verify_inclusion(
                &leaf_hash(&case.data),
                case.index,
                case.size,
                &case.proof,
                &case.root,
            )
            .is_ok()
        },
    );
    check_and_bench(
        &mut group,
        "ct-merkle",
        cases,
        |case| {
            (
                case.data.clone(),
                case.index,
                ct_merkle::RootHash::<Sha256>::new(digest(&case.root), case.size),
                ct_merkle::InclusionProof::<Sha256>::from_digests(
                    case.proof.iter().map(digest).collect::<Vec<_>>().iter(),
                ),
            )
        },
        |(data, index, root, proof)| root.verify_inclusion(data, *index, proof).is_ok(),
    );
    check_and_bench(
        &mut group,
        "azul-tlog_tiles",
        cases,
        |case| {
            (
                case.data.clone(),
                case.index,
                case.size,
                tlog_tiles::Hash(case.root.0),
                case.proof
                    .iter()
                    .map(|h| tlog_tiles::Hash(h.0))
                    .collect::<tlog_tiles::RecordProof>(),
            )
        },
        |(data, index, size, root, proof)| {
            tlog_tiles::check_record(proof, *size, *root, *index, tlog_tiles::record_hash(data))
                .is_ok()
        },
    );
    group.finish();
}

/// Deterministic stand-in for random hashes.
fn pseudo_hash(domain: &str, i: u64) -> Hash {
    let mut input = domain.as_bytes().to_vec();
    input.extend_from_slice(&i.to_be_bytes());
    leaf_hash(&input)
}

fn bench_inclusion(c: &mut Criterion) {
    // A leaf deep inside a tree of 2^30 leaves: any 30 sibling hashes form a valid
    // proof for the root they imply.
    let size = 1u64 << 30;
    let index = 0x2345_6789 % size;
    let data = b"witness-core benchmark leaf: an entry of the virtual 2^30 tree".to_vec();
    let proof: Vec<Hash> = (0..30)
        .map(|i| pseudo_hash("inclusion sibling", i))
        .collect();
    let root = root_from_inclusion_proof(&leaf_hash(&data), index, size, &proof).unwrap();
    let synthetic = InclusionCase {
        data,
        index,
        size,
        proof,
        root,
    }
    .with_corruptions();
    bench_inclusion_group(c, "inclusion_2p30", &synthetic);

    // The real Rekor v1 production inclusion proof of a sigstore-rs bundle.
    let entry = parse_bundle_entries(&read(V1_PROD_BUNDLE))
        .unwrap()
        .remove(0);
    let proof = entry.inclusion_proof;
    assert_eq!(proof.tree_size, 1_139_201_557);
    // The root is the one the production log key signed.
    let keys = [VerifierKey::parse_vkey(ECDSA_VKEY).unwrap()];
    let signed = verify_checkpoint(proof.checkpoint.as_bytes(), &keys, None).unwrap();
    assert_eq!(signed.checkpoint().root_hash(), &proof.root_hash);
    let real = InclusionCase {
        data: entry.canonicalized_body,
        index: proof.log_index,
        size: proof.tree_size,
        proof: proof.hashes,
        root: proof.root_hash,
    }
    .with_corruptions();
    bench_inclusion_group(c, "inclusion_v1_prod", &real);
}

// ---------------------------------------------------------------- consistency

#[derive(Clone)]
struct ConsistencyCase {
    old_size: u64,
    new_size: u64,
    old_root: Hash,
    new_root: Hash,
    proof: Vec<Hash>,
}

impl ConsistencyCase {
    /// The valid case, then: one bit of a middle proof hash, of the old root, of
    /// the new root, and a proof missing its last hash.
    fn with_corruptions(self) -> Vec<ConsistencyCase> {
        let mut proof_flipped = self.clone();
        let mid = proof_flipped.proof.len() / 2;
        flip_bit(&mut proof_flipped.proof[mid].0, 0);
        let mut old_flipped = self.clone();
        flip_bit(&mut old_flipped.old_root.0, 5);
        let mut new_flipped = self.clone();
        flip_bit(&mut new_flipped.new_root.0, 17);
        let mut truncated = self.clone();
        truncated.proof.pop();
        vec![self, proof_flipped, old_flipped, new_flipped, truncated]
    }
}

fn bench_consistency_group(c: &mut Criterion, group_name: &str, cases: &[ConsistencyCase]) {
    let mut group = c.benchmark_group(group_name);
    check_and_bench(
        &mut group,
        "witness-core",
        cases,
        ConsistencyCase::clone,
        |case| {
            merkle::verify_consistency(
                case.old_size,
                case.new_size,
                &case.old_root,
                &case.new_root,
                &case.proof,
            )
            .is_ok()
        },
    );
    check_and_bench(
        &mut group,
        "ct-merkle",
        cases,
        |case| {
            (
                ct_merkle::RootHash::<Sha256>::new(digest(&case.old_root), case.old_size),
                ct_merkle::RootHash::<Sha256>::new(digest(&case.new_root), case.new_size),
                ct_merkle::ConsistencyProof::<Sha256>::from_digests(
                    case.proof.iter().map(digest).collect::<Vec<_>>().iter(),
                ),
            )
        },
        |(old, new, proof)| new.verify_consistency(old, proof).is_ok(),
    );
    check_and_bench(
        &mut group,
        "azul-tlog_tiles",
        cases,
        |case| {
            (
                case.old_size,
                case.new_size,
                tlog_tiles::Hash(case.old_root.0),
                tlog_tiles::Hash(case.new_root.0),
                case.proof
                    .iter()
                    .map(|h| tlog_tiles::Hash(h.0))
                    .collect::<tlog_tiles::TreeProof>(),
            )
        },
        |(old_size, new_size, old_root, new_root, proof)| {
            tlog_tiles::check_tree(proof, *new_size, *new_root, *old_size, *old_root).is_ok()
        },
    );
    group.finish();
}

/// A real (if repetitive) virtual tree of any size: leaf `i` is the leaf hash of
/// `i mod 2^PERIOD_LEVEL`, so every complete subtree's hash depends only on its
/// level and its index modulo `2^(PERIOD_LEVEL - level)` and is looked up, not
/// computed. Proofs and roots drawn from it are genuine RFC 6962 values (a tree
/// with these leaves exists), so the proofs are valid for any verifier.
struct PeriodicTree {
    /// `levels[l][j]`: the subtree at level `l <= PERIOD_LEVEL`, index `j`.
    levels: Vec<Vec<Hash>>,
    /// `above[l - PERIOD_LEVEL]`: every subtree at level `l >= PERIOD_LEVEL`.
    above: Vec<Hash>,
}

const PERIOD_LEVEL: u8 = 16;

impl PeriodicTree {
    fn new() -> PeriodicTree {
        let leaves: Vec<Hash> = (0..1u64 << PERIOD_LEVEL)
            .map(|i| pseudo_hash("periodic leaf", i))
            .collect();
        let mut levels = vec![leaves];
        while levels.last().unwrap().len() > 1 {
            let below = levels.last().unwrap();
            let next = below
                .chunks(2)
                .map(|pair| node_hash(&pair[0], &pair[1]))
                .collect();
            levels.push(next);
        }
        let mut above = vec![levels[usize::from(PERIOD_LEVEL)][0]];
        while above.len() < 64 {
            let top = *above.last().unwrap();
            above.push(node_hash(&top, &top));
        }
        PeriodicTree { levels, above }
    }
}

impl SubtreeHashSource for PeriodicTree {
    fn subtree_hash(&mut self, level: u8, index: u64) -> witness_core::Result<Hash> {
        Ok(if level <= PERIOD_LEVEL {
            let row = &self.levels[usize::from(level)];
            row[(index % row.len() as u64) as usize]
        } else {
            self.above[usize::from(level - PERIOD_LEVEL)]
        })
    }
}

fn checkpoint_root(path: &str) -> (u64, Hash) {
    let note = parse_note(&read(path)).unwrap();
    let checkpoint = parse_checkpoint_text(note.text()).unwrap();
    (checkpoint.size(), *checkpoint.root_hash())
}

fn bench_consistency(c: &mut Criterion) {
    // The real Rekor v1 staging proof from 1352760 to 1352764 (the response's
    // rootHash is the server's newest root, not the root at lastSize: ignored).
    let (old_size, old_root) = checkpoint_root(STAGING_OLD_CHECKPOINT);
    let (new_size, new_root) = checkpoint_root(STAGING_NEW_CHECKPOINT);
    assert_eq!((old_size, new_size), (1_352_760, 1_352_764));
    let proof = parse_consistency_proof_response(&read(STAGING_PROOF))
        .unwrap()
        .hashes;
    let real = ConsistencyCase {
        old_size,
        new_size,
        old_root,
        new_root,
        proof,
    }
    .with_corruptions();
    bench_consistency_group(c, "consistency_v1_staging", &real);

    // A virtual tree grown from about 0.73 * 2^30 to just under 2^30 leaves, with
    // sizes whose low bits are irregular so the proof has both left and right
    // siblings on the old and new paths.
    let mut tree = PeriodicTree::new();
    let (old_size, new_size) = (0x2B67_4C5D_u64, 0x3FED_CBA9_u64);
    let proof = prove_consistency(&mut tree, old_size, new_size).unwrap();
    let synthetic = ConsistencyCase {
        old_size,
        new_size,
        old_root: tree_root(&mut tree, old_size).unwrap(),
        new_root: tree_root(&mut tree, new_size).unwrap(),
        proof,
    };
    eprintln!(
        "consistency_2p30: {} -> {}, {} proof hashes",
        old_size,
        new_size,
        synthetic.proof.len()
    );
    bench_consistency_group(c, "consistency_2p30", &synthetic.with_corruptions());
}

criterion_group!(
    benches,
    bench_checkpoint_ed25519,
    bench_checkpoint_ecdsa,
    bench_inclusion,
    bench_consistency
);
criterion_main!(benches);
