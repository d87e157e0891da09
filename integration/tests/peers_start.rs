//! The peer witnesses start and cosign: litewitness and omniwitness (the real
//! Go programs from `scripts/go-peers`) each trust a log whose Ed25519 key the
//! test makes, answer a c2sp.org/tlog-witness `add-checkpoint` of a
//! checkpoint the test signs, and their cosignatures verify with our
//! verification (witness_core) against their own vkeys. The independent Go
//! verifier `verify-note` (the peers' libraries, integration/go/verify-note)
//! accepts litewitness's cosigned note and rejects a tampered cosignature, a
//! changed checkpoint and a key that did not sign.
//!
//! Needs `target/go-bin/{litewitness,omniwitness,omniwitness-generate-keys,verify-note}`
//! (`scripts/go-peers`) and ssh-keygen/ssh-agent (Debian `openssh-client`);
//! fails, not skips, without them.

#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::Signer as _;
use integration::peers::{Litewitness, Omniwitness};
use witness_core::checkpoint::Checkpoint;
use witness_core::merkle::leaf_hash;
use witness_core::note::{
    Note, NoteSignature, SignatureType, VerifierKey, key_id_for, parse_note, verify_note,
};

/// A log of the test's own: an Ed25519 key and the checkpoints it signs.
struct TestLog {
    origin: String,
    key: ed25519_dalek::SigningKey,
    verifier: VerifierKey,
}

impl TestLog {
    fn new(origin: &str) -> TestLog {
        let seed: [u8; 32] = rand_seed();
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let verifier = VerifierKey::from_material(
            origin,
            SignatureType::Ed25519,
            key.verifying_key().as_bytes(),
        )
        .unwrap();
        TestLog {
            origin: origin.to_owned(),
            key,
            verifier,
        }
    }

    fn vkey(&self) -> String {
        self.verifier.to_vkey()
    }

    /// A checkpoint of `size` leaves (the root is of a made-up tree: with
    /// `old 0` a witness checks no proof), signed by the log.
    fn signed_checkpoint(&self, size: u64) -> (String, Vec<u8>) {
        let root = leaf_hash(format!("{} at {size}", self.origin).as_bytes());
        let text = Checkpoint::new(&self.origin, size, root, Vec::new())
            .unwrap()
            .to_text();
        let signature = self.key.sign(text.as_bytes()).to_bytes().to_vec();
        let id = key_id_for(
            &self.origin,
            SignatureType::Ed25519,
            self.key.verifying_key().as_bytes(),
        );
        let note = Note::new(
            &text,
            vec![NoteSignature::new(&self.origin, id, signature).unwrap()],
        )
        .unwrap();
        (text, note.to_bytes())
    }
}

/// 32 unpredictable bytes without a RNG crate: the OS's random source.
fn rand_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
        .unwrap();
    seed
}

/// POSTs a tlog-witness `add-checkpoint` (`old 0`, no proof) and returns the
/// cosignature lines of a 200 answer.
async fn add_checkpoint(base_url: &str, note: &[u8]) -> String {
    let mut body = b"old 0\n\n".to_vec();
    body.extend_from_slice(note);
    let response = reqwest::Client::new()
        .post(format!("{base_url}/add-checkpoint"))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "add-checkpoint at {base_url} answered: {text}");
    text
}

/// The note with the peer's cosignature lines appended, verified with our
/// verification against the peer's vkey and the log's key; the cosignature's
/// timestamp.
fn verify_cosigned(note: &[u8], cosignature_lines: &str, peer_vkey: &str, log: &TestLog) -> u64 {
    let mut cosigned = note.to_vec();
    cosigned.extend_from_slice(cosignature_lines.as_bytes());
    let peer = VerifierKey::parse_vkey(peer_vkey).unwrap();
    assert_eq!(peer.signature_type(), SignatureType::CosignatureV1);
    let verified = verify_note(
        parse_note(&cosigned).unwrap(),
        &[peer.clone(), log.verifier.clone()],
    )
    .unwrap();
    let by_peer = verified
        .verified()
        .iter()
        .find(|s| peer.matches(&s.signature))
        .unwrap_or_else(|| {
            panic!("no verified cosignature by {peer_vkey} in {cosignature_lines:?}")
        });
    by_peer
        .timestamp
        .expect("cosignature/v1 carries a timestamp")
}

/// `verify-note VKEY... < note`: whether it exited 0, and its output.
fn go_verify(note: &[u8], vkeys: &[&str]) -> (bool, String) {
    let program = integration::go_program("verify-note").unwrap();
    let mut child = Command::new(program)
        .args(vkeys)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(note).unwrap();
    let output = child.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "verify-note failed to run: {report}"
    );
    (output.status.success(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_cosign_a_checkpoint_that_our_verification_and_theirs_accept() {
    let logs = integration::artifacts_dir("peers_start").unwrap();
    // A short path: litewitness's ssh-agent socket must fit sun_path.
    let dir = tempfile::Builder::new().prefix("peers").tempdir().unwrap();
    let log = TestLog::new("peers-start.test/log");
    let (text, note) = log.signed_checkpoint(7);

    let litewitness = Litewitness::start(&dir.path().join("lw"), &logs, "litewitness.test")
        .await
        .unwrap();
    let mut omniwitness = Omniwitness::start(&dir.path().join("ow"), &logs, "omniwitness.test")
        .await
        .unwrap();
    litewitness.add_log(&log.origin, &log.vkey()).unwrap();
    omniwitness.add_log(&log.origin, &log.vkey()).await.unwrap();

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let lw_lines = add_checkpoint(&litewitness.base_url(), &note).await;
    let ow_lines = add_checkpoint(&omniwitness.base_url(), &note).await;
    for (peer, lines, vkey) in [
        ("litewitness", &lw_lines, litewitness.vkey()),
        ("omniwitness", &ow_lines, omniwitness.vkey()),
    ] {
        let timestamp = verify_cosigned(&note, lines, vkey, &log);
        assert!(
            timestamp + 60 >= before && timestamp <= before + 60,
            "{peer}'s cosignature time {timestamp} is not now ({before})"
        );
        std::fs::write(logs.join(format!("{peer}-cosignature.txt")), lines).unwrap();
    }

    // A cosignature by one peer does not verify as the other's.
    let mut swapped = note.clone();
    swapped.extend_from_slice(lw_lines.as_bytes());
    let ow_key = VerifierKey::parse_vkey(omniwitness.vkey()).unwrap();
    let verified = verify_note(
        parse_note(&swapped).unwrap(),
        &[ow_key, log.verifier.clone()],
    );
    assert!(
        verified
            .unwrap()
            .verified()
            .iter()
            .all(|s| s.signature.key_name() != "omniwitness.test"),
        "litewitness's cosignature verified as omniwitness's"
    );

    // The peers' own verification (Go, golang.org/x/mod/sumdb/note and
    // transparency-dev/formats): litewitness's cosigned note verifies.
    let mut cosigned = note.clone();
    cosigned.extend_from_slice(lw_lines.as_bytes());
    std::fs::write(logs.join("litewitness-cosigned-note.txt"), &cosigned).unwrap();
    let (ok, report) = go_verify(&cosigned, &[litewitness.vkey(), &log.vkey()]);
    assert!(
        ok,
        "verify-note refused litewitness's cosigned note: {report}"
    );

    // A flipped bit in the cosignature's signature bytes is refused.
    let line = lw_lines
        .lines()
        .find(|l| l.starts_with("\u{2014} litewitness.test "))
        .unwrap();
    let (prefix, encoded) = line.rsplit_once(' ').unwrap();
    let mut blob = BASE64.decode(encoded).unwrap();
    let last = blob.len() - 1;
    blob[last] ^= 1;
    let tampered_line = format!("{prefix} {}\n", BASE64.encode(&blob));
    let mut tampered = note.clone();
    tampered.extend_from_slice(tampered_line.as_bytes());
    let (ok, report) = go_verify(&tampered, &[litewitness.vkey(), &log.vkey()]);
    assert!(!ok, "verify-note accepted a tampered cosignature: {report}");

    // The same cosignature over a changed checkpoint (another size) is refused.
    let changed = String::from_utf8(cosigned.clone())
        .unwrap()
        .replacen("\n7\n", "\n8\n", 1);
    assert_ne!(changed.as_bytes(), &cosigned[..]);
    let (ok, report) = go_verify(changed.as_bytes(), &[litewitness.vkey()]);
    assert!(
        !ok,
        "verify-note accepted a cosignature over another checkpoint: {report}"
    );

    // A key that did not sign the note (omniwitness's) is reported missing.
    let (ok, report) = go_verify(&cosigned, &[omniwitness.vkey(), litewitness.vkey()]);
    assert!(
        !ok,
        "verify-note accepted a note omniwitness never cosigned: {report}"
    );
    assert!(report.contains("omniwitness.test"), "{report}");

    // Our checkpoint text is what both peers cosigned (no re-encoding).
    assert!(cosigned.starts_with(text.as_bytes()));
}
