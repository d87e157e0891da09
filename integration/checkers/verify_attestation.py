"""Independent check of one evidence attestation (deploy/EVIDENCE.md): a DSSE
envelope holding an in-toto Statement v1, verified with securesystemslib (the
DSSE and key code of python-tuf and in-toto), not with our own code.

    verify_attestation.py --key PEM --type URI [--subject FILE] ENVELOPE

Checks: the envelope's signature by the PEM key (ECDSA P-256 with SHA-256,
ASN.1 DER signatures, or Ed25519) over DSSE's PAE, the payload type
application/vnd.in-toto+json, the Statement's _type, the predicate type, and
(with --subject) that the file's SHA-256 is one of the subjects.

The DSSE key ID our signer writes is the hex SHA-256 of the key's DER
SubjectPublicKeyInfo (of the raw key for Ed25519); securesystemslib matches
signatures to keys by key ID, so the key is given that ID.

Exit status: 0 valid; 1 invalid (one line on stderr naming the check);
2 usage error or unreadable file; 3 the checker itself failed.
"""

import argparse
import hashlib
import json
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import SSlibKey

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
MAX_ENVELOPE = 8 << 20


def invalid(check: str, message: str) -> int:
    print(f"invalid: {check}: {message}", file=sys.stderr)
    return 1


def key_with_signer_keyid(pem: bytes) -> SSlibKey:
    """The PEM key as securesystemslib's SSlibKey, under the signer's key ID."""
    public = serialization.load_pem_public_key(pem)
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        keyid = hashlib.sha256(raw).hexdigest()
    else:
        der = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        keyid = hashlib.sha256(der).hexdigest()
    return SSlibKey.from_crypto(public, keyid=keyid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--key", required=True, help="PEM public key")
    parser.add_argument("--type", required=True, dest="predicate_type", help="predicate type URI")
    parser.add_argument("--subject", help="a file whose sha256 must be a subject")
    parser.add_argument("envelope")
    arguments = parser.parse_args()

    try:
        with open(arguments.key, "rb") as f:
            pem = f.read()
        with open(arguments.envelope, "rb") as f:
            raw = f.read(MAX_ENVELOPE + 1)
        subject_sha256 = None
        if arguments.subject:
            digest = hashlib.sha256()
            with open(arguments.subject, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            subject_sha256 = digest.hexdigest()
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    try:
        key = key_with_signer_keyid(pem)
    except (ValueError, TypeError) as error:
        return invalid("malformed_key", str(error))
    if len(raw) > MAX_ENVELOPE:
        return invalid("too_large", f"envelope over {MAX_ENVELOPE} bytes")
    try:
        envelope = Envelope.from_dict(json.loads(raw))
    except (ValueError, KeyError, TypeError) as error:
        return invalid("malformed_envelope", str(error))
    if envelope.payload_type != PAYLOAD_TYPE:
        return invalid("payload_type", f"{envelope.payload_type!r} is not {PAYLOAD_TYPE}")
    try:
        envelope.verify([key], 1)
    except VerificationError as error:
        return invalid("signature", str(error))

    try:
        statement = json.loads(envelope.payload)
    except ValueError as error:
        return invalid("not_an_in_toto_statement", str(error))
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        return invalid("not_an_in_toto_statement", "no in-toto Statement v1 _type")
    if statement.get("predicateType") != arguments.predicate_type:
        return invalid(
            "predicate_type_mismatch",
            f"{statement.get('predicateType')!r} is not {arguments.predicate_type!r}",
        )
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not subjects:
        return invalid("not_an_in_toto_statement", "no subject")
    digests = [s.get("digest", {}).get("sha256") for s in subjects if isinstance(s, dict)]
    if subject_sha256 is not None and subject_sha256 not in digests:
        return invalid("subject_mismatch", f"sha256 {subject_sha256} is not a subject")
    print(
        f"valid: {statement['predicateType']} over {len(subjects)} subject(s), key {key.keyid}"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as error:  # noqa: BLE001 - a crash is neither valid nor invalid
        print(f"error: the checker failed: {error!r}", file=sys.stderr)
        sys.exit(3)
