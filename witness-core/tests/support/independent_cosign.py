#!/usr/bin/env python3
"""An independent cosigner for the Rust tests: builds C2SP tlog-cosignature
signature lines with Python's `cryptography` (OpenSSL), written from the spec
without reference to the Rust code, and prints them as JSON.

Usage: independent_cosign.py  (reads nothing; fixed seeds, fixed checkpoint)
"""

import base64
import hashlib
import json
import struct

from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa

ORIGIN = "example.com/independent-log"
SIZE = 1234567
ROOT = bytes(range(32))
CHECKPOINT = f"{ORIGIN}\n{SIZE}\n{base64.b64encode(ROOT).decode()}\n"
TIMESTAMP = 1_700_000_000


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()[:4]


def vkey(name: str, sig_type: int, public_key: bytes) -> str:
    kid = key_id(name, sig_type, public_key).hex()
    return f"{name}+{kid}+{base64.b64encode(bytes([sig_type]) + public_key).decode()}"


def line(name: str, kid: bytes, blob: bytes) -> str:
    return f"\u2014 {name} {base64.b64encode(kid + blob).decode()}\n"


def ed25519_cosignature():
    name = "witness.example/ed25519"
    key = ed25519.Ed25519PrivateKey.from_private_bytes(b"\x11" * 32)
    public = key.public_key().public_bytes_raw()
    message = f"cosignature/v1\ntime {TIMESTAMP}\n".encode() + CHECKPOINT.encode()
    signature = key.sign(message)
    blob = struct.pack(">Q", TIMESTAMP) + signature
    return vkey(name, 0x04, public), line(name, key_id(name, 0x04, public), blob)


def mldsa44_cosignature():
    name = "witness.example/mldsa44"
    key = mldsa.MLDSA44PrivateKey.from_seed_bytes(b"\x22" * 32)
    public = key.public_key().public_bytes_raw()
    message = (
        b"subtree/v1\n\x00"
        + bytes([len(name)]) + name.encode()
        + struct.pack(">Q", TIMESTAMP)
        + bytes([len(ORIGIN)]) + ORIGIN.encode()
        + struct.pack(">QQ", 0, SIZE)
        + ROOT
    )
    signature = key.sign(message)
    blob = struct.pack(">Q", TIMESTAMP) + signature
    return vkey(name, 0x06, public), line(name, key_id(name, 0x06, public), blob)


def main():
    ed_vkey, ed_line = ed25519_cosignature()
    ml_vkey, ml_line = mldsa44_cosignature()
    print(json.dumps({
        "checkpoint": CHECKPOINT,
        "timestamp": TIMESTAMP,
        "ed25519_vkey": ed_vkey,
        "ed25519_line": ed_line,
        "mldsa44_vkey": ml_vkey,
        "mldsa44_line": ml_line,
    }))


if __name__ == "__main__":
    main()
