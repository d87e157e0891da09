#!/usr/bin/env python3
"""Time sigstore-python's own checkpoint and Merkle-inclusion verification on
real Rekor data from the shared testdata dir (read in place, never copied).

Usage: bench_python_sigstore.py [SHARED_DIR]   (default: <repo>/../shared)
Prints one JSON line per operation. Run via scripts/bench-python-sigstore.
"""

import base64
import hashlib
import json
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sigstore import __version__ as SIGSTORE_VERSION
from sigstore._internal.merkle import verify_merkle_inclusion
from sigstore._internal.rekor.checkpoint import SignedCheckpoint, verify_checkpoint
from sigstore._internal.trust import Keyring, RekorKeyring
from sigstore._utils import KeyID, key_id
from sigstore.errors import VerificationError
from sigstore.models import Bundle
from sigstore_models.common.v1 import PublicKey, PublicKeyDetails

TARGET_SECONDS = 2.0
REPO = Path(__file__).resolve().parent.parent


def keyring_and_log_id(pem_path: Path, origin_name: str) -> tuple[RekorKeyring, KeyID]:
    """Build a RekorKeyring from a PEM the way sigstore-python does from a
    trusted root (PublicKey message -> Keyring), plus the log ID the trusted
    root would carry: SHA256(SPKI) for Rekor v1 (ECDSA), and the signed-note
    key ID SHA256(name || "\\n" || 0x01 || pub) for Rekor v2 (Ed25519)."""
    key = serialization.load_pem_public_key(pem_path.read_bytes())
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if isinstance(key, ed25519.Ed25519PublicKey):
        details = PublicKeyDetails.PKIX_ED25519
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        log_id = KeyID(hashlib.sha256(origin_name.encode() + b"\n\x01" + raw).digest())
    else:
        details = PublicKeyDetails.PKIX_ECDSA_P256_SHA_256
        log_id = key_id(key)
    pk = PublicKey(raw_bytes=base64.b64encode(der), key_details=details)
    return RekorKeyring(Keyring([pk])), log_id


def flip_byte(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


def must_fail(fn, *args) -> None:
    try:
        fn(*args)
    except VerificationError:
        return
    raise AssertionError(f"{fn.__name__} accepted corrupted input")


def bench(op: str, fn, *args) -> None:
    fn(*args)  # must not raise: verification succeeds
    for _ in range(200):  # warm-up
        fn(*args)
    n = 100
    while True:  # calibrate: pick N so the timed run takes ~TARGET_SECONDS
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn(*args)
        elapsed = (time.perf_counter_ns() - t0) / 1e9
        if elapsed >= 0.2:
            break
        n *= 2
    n = max(1, int(n * TARGET_SECONDS / elapsed))
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn(*args)
    total = time.perf_counter_ns() - t0
    print(json.dumps({"impl": "python-sigstore", "version": SIGSTORE_VERSION, "op": op,
                      "iterations": n, "ns_per_op": round(total / n, 1)}), flush=True)


def verify_note(text: str, keyring: RekorKeyring, log_id: KeyID) -> None:
    # Same two calls verify_checkpoint() makes: parse, then check the signature.
    SignedCheckpoint.from_text(text).signed_note.verify(keyring, log_id)


def main() -> None:
    shared = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO.parent / "shared"
    rekor = shared / "testdata" / "rekor"
    checkpoints = [
        ("checkpoint_ed25519", "log2025-1.rekor.sigstore.dev.412115.f1dcce7b.txt",
         "log2025-1.rekor.sigstore.dev.pub.pem", "log2025-1.rekor.sigstore.dev"),
        ("checkpoint_ecdsa_p256",
         "rekor.sigstore.dev_-_1193050959916656506.1139201557.d191047b.txt",
         "rekor.sigstore.dev.pub.pem", "rekor.sigstore.dev"),
    ]
    for op, cp_file, pem_file, name in checkpoints:
        raw = (rekor / "checkpoints" / "valid" / cp_file).read_bytes()
        keyring, log_id = keyring_and_log_id(rekor / "keys" / pem_file, name)
        bad = flip_byte(raw, raw.index(b"\n") + 1)  # first digit of the tree size
        must_fail(verify_note, bad.decode(), keyring, log_id)
        bench(op, verify_note, raw.decode(), keyring, log_id)

    bundle_path = rekor / "bundles" / "rekor-v1-prod" / "sigstore-rs.bundle_v03.json"
    bundle_json = json.loads(bundle_path.read_text())
    entry = Bundle.from_json(json.dumps(bundle_json)).log_entry
    # Sanity: the proof's root hash is the one the prod Rekor key signed.
    keyring, _ = keyring_and_log_id(rekor / "keys" / "rekor.sigstore.dev.pub.pem", "")
    verify_checkpoint(keyring, entry)
    tlog = bundle_json["verificationMaterial"]["tlogEntries"][0]
    body = base64.b64decode(tlog["canonicalizedBody"])
    tlog["canonicalizedBody"] = base64.b64encode(flip_byte(body, len(body) // 2)).decode()
    must_fail(verify_merkle_inclusion, Bundle.from_json(json.dumps(bundle_json)).log_entry)
    bench("inclusion_v1_prod", verify_merkle_inclusion, entry)


if __name__ == "__main__":
    main()
