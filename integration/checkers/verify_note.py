#!/usr/bin/env python3
"""An independent checker of signed notes and witness cosignatures.

Written from the C2SP signed-note and tlog-cosignature specifications with
Python's `cryptography` (OpenSSL), sharing no code with the Rust witness.

    verify_note.py NOTE_FILE VKEY [VKEY...]

Every VKEY (`name+keyid+base64(type||key)`) must have a signature line in the
note that verifies: type 0x01 (Ed25519 over the note text) or 0x04
(cosignature/v1: Ed25519 over "cosignature/v1\\ntime <t>\\n" + text). Prints one
line per key and exits 0 only if all verify.
"""

import base64
import hashlib
import struct
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def parse_vkey(vkey):
    name, key_id_hex, material = vkey.split("+", 2)
    raw = base64.b64decode(material, validate=True)
    key_type, public = raw[0], raw[1:]
    expected = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if expected.hex() != key_id_hex:
        raise ValueError(f"{vkey}: key id {key_id_hex} does not match the key ({expected.hex()})")
    if key_type not in (0x01, 0x04) or len(public) != 32:
        raise ValueError(f"{vkey}: not an Ed25519 or cosignature/v1 key")
    return name, expected, key_type, Ed25519PublicKey.from_public_bytes(public)


def split_note(data):
    text, sep, signatures = data.partition(b"\n\n")
    if not sep:
        raise ValueError("no blank line between the text and the signatures")
    text += b"\n"
    lines = []
    for line in signatures.decode().splitlines():
        if not line.startswith("\u2014 "):
            raise ValueError(f"not a signature line: {line!r}")
        name, b64 = line[2:].rsplit(" ", 1)
        lines.append((name, base64.b64decode(b64, validate=True)))
    return text, lines


def verify(text, lines, vkey):
    name, key_id, key_type, public = parse_vkey(vkey)
    for line_name, blob in lines:
        if line_name != name or blob[:4] != key_id:
            continue
        if key_type == 0x01:
            public.verify(blob[4:], text)
            return "ed25519"
        if len(blob) != 4 + 8 + 64:
            raise ValueError(f"{name}: cosignature of {len(blob)} bytes")
        (timestamp,) = struct.unpack(">Q", blob[4:12])
        message = b"cosignature/v1\ntime %d\n" % timestamp + text
        public.verify(blob[12:], message)
        return f"cosignature/v1 time {timestamp}"
    raise ValueError(f"{name}: no signature line with key id {key_id.hex()}")


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], "rb") as f:
        text, lines = split_note(f.read())
    failed = False
    for vkey in sys.argv[2:]:
        try:
            print(f"ok {vkey.split('+')[0]}: {verify(text, lines, vkey)}")
        except (ValueError, InvalidSignature) as error:
            print(f"FAIL {vkey.split('+')[0]}: {error!r}")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
