//! C2SP signed notes (c2sp.org/signed-note) and their verifier keys.
//!
//! A [`Note`] is parsed from bytes with [`parse_note`] and written back with
//! [`Note::to_bytes`]; parsing checks only the format. [`verify_note`] then checks
//! the signatures against a set of trusted [`VerifierKey`]s with the spec's rules:
//! signatures from unknown keys are ignored, a failing signature from a known key
//! rejects the whole note, and at least one known key must have signed.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::Verifier as _;
use ml_dsa::MlDsa44;
use sha2::{Digest, Sha256};

use crate::checkpoint::parse_checkpoint_text;
use crate::cosignature::{cosignature_v1_message, subtree_v1_message};
use crate::{Error, Result};

/// The largest note accepted, checked before anything is decoded. Derived from the
/// spec's floor of 16 signatures with post-quantum ones in mind: an ML-DSA-44
/// cosignature line is `— ` + name (at most 255 bytes) + space + base64 of
/// 4 + 8 + 2420 bytes (3,244 characters) + newline, about 3.5 KB, so 16 of them
/// are about 56 KB; 64 KiB leaves room for the checkpoint text itself.
pub const MAX_NOTE_SIZE: usize = 64 * 1024;

/// The most signature lines accepted on one note (the spec requires at least 16;
/// Go's golang.org/x/mod/sumdb/note also stops at 100).
pub const MAX_SIGNATURES: usize = 100;

/// The em dash, space prefix of every signature line.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Signature type identifier bytes assigned by c2sp.org/signed-note.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignatureType {
    /// 0x01: Ed25519 over the note text (Rekor v2 logs, sumdb).
    Ed25519,
    /// 0x02: ECDSA P-256 over the note text, ASN.1 DER signature, as implemented by
    /// transparency-dev (Rekor v1 logs). The key ID hashes the DER SPKI only.
    EcdsaP256,
    /// 0x04: timestamped Ed25519 checkpoint cosignature (c2sp.org/tlog-cosignature).
    CosignatureV1,
    /// 0x06: timestamped ML-DSA-44 subtree cosignature (c2sp.org/tlog-cosignature).
    MlDsa44Subtree,
}

impl SignatureType {
    /// The identifier byte.
    pub fn byte(self) -> u8 {
        match self {
            SignatureType::Ed25519 => 0x01,
            SignatureType::EcdsaP256 => 0x02,
            SignatureType::CosignatureV1 => 0x04,
            SignatureType::MlDsa44Subtree => 0x06,
        }
    }

    fn from_byte(byte: u8) -> Result<SignatureType> {
        match byte {
            0x01 => Ok(SignatureType::Ed25519),
            0x02 => Ok(SignatureType::EcdsaP256),
            0x04 => Ok(SignatureType::CosignatureV1),
            0x06 => Ok(SignatureType::MlDsa44Subtree),
            other => Err(Error::UnsupportedKeyType { type_byte: other }),
        }
    }
}

/// One signature line: `— <key name> base64(key ID || signature)`.
#[derive(Clone, PartialEq, Eq)]
pub struct NoteSignature {
    key_name: String,
    key_id: u32,
    signature: Vec<u8>,
}

impl NoteSignature {
    /// A signature line from its parts; the name must be a valid key name.
    pub fn new(key_name: &str, key_id: u32, signature: Vec<u8>) -> Result<NoteSignature> {
        check_key_name(key_name).map_err(|reason| Error::MalformedNote { reason })?;
        Ok(NoteSignature {
            key_name: key_name.to_owned(),
            key_id,
            signature,
        })
    }

    /// The key name.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// The 32-bit key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The signature bytes after the key ID.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The line as it appears in a note, with its final newline.
    pub fn to_line(&self) -> String {
        let mut blob = Vec::with_capacity(4 + self.signature.len());
        blob.extend_from_slice(&self.key_id.to_be_bytes());
        blob.extend_from_slice(&self.signature);
        format!(
            "{SIGNATURE_PREFIX}{} {}\n",
            self.key_name,
            BASE64.encode(blob)
        )
    }

    /// Parses one line without its newline.
    fn parse_line(line: &str) -> Result<NoteSignature> {
        let malformed = |reason| Error::MalformedNote { reason };
        let rest = line.strip_prefix(SIGNATURE_PREFIX).ok_or(malformed(
            "signature line does not start with an em dash and a space",
        ))?;
        let (name, encoded) = rest
            .split_once(' ')
            .ok_or(malformed("signature line has no space after the key name"))?;
        check_key_name(name).map_err(malformed)?;
        let blob = BASE64
            .decode(encoded)
            .map_err(|_| malformed("signature is not valid base64"))?;
        if blob.len() < 5 {
            return Err(malformed("signature is shorter than a key ID and one byte"));
        }
        let key_id = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]);
        Ok(NoteSignature {
            key_name: name.to_owned(),
            key_id,
            signature: blob[4..].to_vec(),
        })
    }
}

impl fmt::Debug for NoteSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteSignature({}+{:08x})", self.key_name, self.key_id)
    }
}

/// A signed note: text ending in a newline, and its signature lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    text: String,
    signatures: Vec<NoteSignature>,
}

impl Note {
    /// A note from text and signatures, with the text checked against the format.
    pub fn new(text: &str, signatures: Vec<NoteSignature>) -> Result<Note> {
        check_text(text)?;
        if !text.ends_with('\n') {
            return Err(Error::MalformedNote {
                reason: "text does not end with a newline",
            });
        }
        Ok(Note {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The signed text, including its final newline.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signature lines in the order they appeared.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Adds a signature line at the end.
    pub fn push_signature(&mut self, signature: NoteSignature) {
        self.signatures.push(signature);
    }

    /// The note in its wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.text.clone();
        out.push('\n');
        for signature in &self.signatures {
            out.push_str(&signature.to_line());
        }
        out.into_bytes()
    }
}

/// Rejects invalid UTF-8 and ASCII control characters other than newline.
fn check_text(text: &str) -> Result<()> {
    if text.chars().any(|c| c < ' ' && c != '\n') {
        return Err(Error::MalformedNote {
            reason: "note contains a control character",
        });
    }
    Ok(())
}

/// Key names are non-empty and contain no Unicode space and no `+`.
fn check_key_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        return Err("key name is empty");
    }
    if name.chars().any(|c| c.is_whitespace() || c == '+') {
        return Err("key name contains a space or a plus sign");
    }
    Ok(())
}

/// Parses a signed note. Only the format is checked; see [`verify_note`].
pub fn parse_note(bytes: &[u8]) -> Result<Note> {
    if bytes.len() > MAX_NOTE_SIZE {
        return Err(Error::TooLarge {
            what: "signed note",
            size: bytes.len(),
            max: MAX_NOTE_SIZE,
        });
    }
    let malformed = |reason| Error::MalformedNote { reason };
    let message = std::str::from_utf8(bytes).map_err(|_| malformed("note is not valid UTF-8"))?;
    check_text(message)?;
    // The text is separated from the signatures by the last blank line.
    let split = message
        .rfind("\n\n")
        .ok_or(malformed("no blank line before the signatures"))?;
    let (text, signature_block) = (&message[..=split], &message[split + 2..]);
    if signature_block.is_empty() {
        return Err(malformed("note has no signature lines"));
    }
    let lines = signature_block
        .strip_suffix('\n')
        .ok_or(malformed("signature lines do not end with a newline"))?;
    let count = lines.split('\n').count();
    if count > MAX_SIGNATURES {
        return Err(Error::TooManySignatures {
            count,
            max: MAX_SIGNATURES,
        });
    }
    let signatures = lines
        .split('\n')
        .map(NoteSignature::parse_line)
        .collect::<Result<Vec<_>>>()?;
    Ok(Note {
        text: text.to_owned(),
        signatures,
    })
}

/// The public half of a [`VerifierKey`].
#[derive(Clone)]
enum PublicKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    /// Parsed and checked with `p256`; verified with aws-lc, whose P-256 is
    /// about six times faster than RustCrypto's here (see the README's benchmarks).
    EcdsaP256 {
        key: aws_lc_rs::signature::UnparsedPublicKey<Vec<u8>>,
        spki_der: Vec<u8>,
    },
    CosignatureV1(ed25519_dalek::VerifyingKey),
    MlDsa44Subtree {
        key: Box<ml_dsa::VerifyingKey<MlDsa44>>,
        encoded: Vec<u8>,
    },
}

/// Length of an encoded ML-DSA-44 public key.
pub const ML_DSA_44_PUBLIC_KEY_SIZE: usize = 1312;
/// Length of an ML-DSA-44 signature.
pub const ML_DSA_44_SIGNATURE_SIZE: usize = 2420;

/// A trusted key that can verify note signatures, as configured by an operator.
#[derive(Clone)]
pub struct VerifierKey {
    name: String,
    key_id: u32,
    key: PublicKey,
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "VerifierKey({}+{:08x}, {:?})",
            self.name,
            self.key_id,
            self.signature_type()
        )
    }
}

/// The recommended key ID: SHA-256(name || 0x0A || type || public key)`[:4]`.
pub fn key_id_for(name: &str, signature_type: SignatureType, public_key: &[u8]) -> u32 {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([b'\n', signature_type.byte()]);
    hasher.update(public_key);
    first_four(&hasher.finalize())
}

/// The key ID of a transparency-dev ECDSA key: SHA-256(DER SPKI)`[:4]`, name not hashed.
pub fn ecdsa_key_id(spki_der: &[u8]) -> u32 {
    first_four(&Sha256::digest(spki_der))
}

fn first_four(digest: &[u8]) -> u32 {
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

impl VerifierKey {
    /// Parses a vkey: `<name>+<hex key ID>+<base64(type || public key)>`. The key ID
    /// must match the one computed from the key, as golang.org/x/mod/sumdb/note does.
    pub fn parse_vkey(vkey: &str) -> Result<VerifierKey> {
        // The largest legitimate vkey is an ML-DSA-44 one: 1313 bytes of key in
        // base64 (1752 characters) plus a name; refuse anything far larger unread.
        const MAX_VKEY_SIZE: usize = 4096;
        if vkey.len() > MAX_VKEY_SIZE {
            return Err(Error::TooLarge {
                what: "verifier key",
                size: vkey.len(),
                max: MAX_VKEY_SIZE,
            });
        }
        let malformed = |reason| Error::MalformedKey { reason };
        let mut parts = vkey.trim_end_matches(['\r', '\n']).splitn(3, '+');
        let (Some(name), Some(id_hex), Some(encoded)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("vkey does not have three +-separated parts"));
        };
        check_key_name(name).map_err(malformed)?;
        if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed("key ID is not 8 hex digits"));
        }
        let key_id =
            u32::from_str_radix(id_hex, 16).map_err(|_| malformed("key ID is not 8 hex digits"))?;
        let blob = BASE64
            .decode(encoded)
            .map_err(|_| malformed("public key is not valid base64"))?;
        let (&type_byte, material) = blob.split_first().ok_or(malformed("public key is empty"))?;
        let signature_type = SignatureType::from_byte(type_byte)?;
        let key = VerifierKey::from_material(name, signature_type, material)?;
        if key.key_id != key_id {
            return Err(malformed("key ID does not match the key"));
        }
        Ok(key)
    }

    /// A verifier from raw key material of the given type, with the key ID the
    /// spec prescribes for that type.
    pub fn from_material(
        name: &str,
        signature_type: SignatureType,
        material: &[u8],
    ) -> Result<VerifierKey> {
        check_key_name(name).map_err(|reason| Error::MalformedKey { reason })?;
        let ed25519 = |material: &[u8]| -> Result<ed25519_dalek::VerifyingKey> {
            let bytes: [u8; 32] = material.try_into().map_err(|_| Error::MalformedKey {
                reason: "Ed25519 public key is not 32 bytes",
            })?;
            ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| Error::MalformedKey {
                reason: "Ed25519 public key is not a valid point",
            })
        };
        let (key, key_id) =
            match signature_type {
                SignatureType::Ed25519 => (
                    PublicKey::Ed25519(ed25519(material)?),
                    key_id_for(name, signature_type, material),
                ),
                SignatureType::CosignatureV1 => (
                    PublicKey::CosignatureV1(ed25519(material)?),
                    key_id_for(name, signature_type, material),
                ),
                SignatureType::EcdsaP256 => {
                    use p256::pkcs8::DecodePublicKey as _;
                    let key =
                        p256::ecdsa::VerifyingKey::from_public_key_der(material).map_err(|_| {
                            Error::MalformedKey {
                                reason: "ECDSA key is not a DER SubjectPublicKeyInfo for P-256",
                            }
                        })?;
                    let key = aws_lc_rs::signature::UnparsedPublicKey::new(
                        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
                        key.to_sec1_point(false).as_bytes().to_vec(),
                    );
                    (
                        PublicKey::EcdsaP256 {
                            key,
                            spki_der: material.to_vec(),
                        },
                        ecdsa_key_id(material),
                    )
                }
                SignatureType::MlDsa44Subtree => {
                    let encoded = ml_dsa::EncodedVerifyingKey::<MlDsa44>::try_from(material)
                        .map_err(|_| Error::MalformedKey {
                            reason: "ML-DSA-44 public key is not 1312 bytes",
                        })?;
                    (
                        PublicKey::MlDsa44Subtree {
                            key: Box::new(ml_dsa::VerifyingKey::decode(&encoded)),
                            encoded: material.to_vec(),
                        },
                        key_id_for(name, signature_type, material),
                    )
                }
            };
        Ok(VerifierKey {
            name: name.to_owned(),
            key_id,
            key,
        })
    }

    /// A log verifier from a PEM SubjectPublicKeyInfo: Ed25519 keys become type
    /// 0x01 and P-256 keys type 0x02, the two types Rekor logs sign with.
    pub fn from_pem(name: &str, pem: &str) -> Result<VerifierKey> {
        use ed25519_dalek::pkcs8::DecodePublicKey as _;
        use p256::pkcs8::EncodePublicKey as _;
        if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            return VerifierKey::from_material(name, SignatureType::Ed25519, key.as_bytes());
        }
        if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            let der = key.to_public_key_der().map_err(|_| Error::MalformedKey {
                reason: "P-256 key cannot be re-encoded",
            })?;
            return VerifierKey::from_material(name, SignatureType::EcdsaP256, der.as_bytes());
        }
        Err(Error::MalformedKey {
            reason: "PEM is not an Ed25519 or P-256 public key",
        })
    }

    /// The same Ed25519 key as a cosignature/v1 verifier (type 0x04), as
    /// transparency-dev's `NewVerifierForCosignatureV1` does for witness keys
    /// published as type 0x01 vkeys.
    pub fn as_cosignature_v1(&self) -> Result<VerifierKey> {
        match &self.key {
            PublicKey::Ed25519(key) | PublicKey::CosignatureV1(key) => {
                VerifierKey::from_material(&self.name, SignatureType::CosignatureV1, key.as_bytes())
            }
            _ => Err(Error::MalformedKey {
                reason: "only Ed25519 keys make cosignature/v1 verifiers",
            }),
        }
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The signature type.
    pub fn signature_type(&self) -> SignatureType {
        match self.key {
            PublicKey::Ed25519(_) => SignatureType::Ed25519,
            PublicKey::EcdsaP256 { .. } => SignatureType::EcdsaP256,
            PublicKey::CosignatureV1(_) => SignatureType::CosignatureV1,
            PublicKey::MlDsa44Subtree { .. } => SignatureType::MlDsa44Subtree,
        }
    }

    /// The key material as it appears in the vkey after the type byte.
    pub fn public_key_material(&self) -> Vec<u8> {
        match &self.key {
            PublicKey::Ed25519(key) | PublicKey::CosignatureV1(key) => key.as_bytes().to_vec(),
            PublicKey::EcdsaP256 { spki_der, .. } => spki_der.clone(),
            PublicKey::MlDsa44Subtree { encoded, .. } => encoded.clone(),
        }
    }

    /// The vkey string.
    pub fn to_vkey(&self) -> String {
        let mut blob = vec![self.signature_type().byte()];
        blob.extend_from_slice(&self.public_key_material());
        format!("{}+{:08x}+{}", self.name, self.key_id, BASE64.encode(blob))
    }

    /// Whether this key is the one a signature line claims (same name and key ID).
    pub fn matches(&self, signature: &NoteSignature) -> bool {
        self.name == signature.key_name && self.key_id == signature.key_id
    }

    /// Verifies one signature over a note text. Returns the cosignature timestamp
    /// for timestamped types.
    pub fn verify(&self, text: &str, signature: &[u8]) -> Result<Option<u64>> {
        self.check_signature(text, signature)
            .ok_or_else(|| Error::InvalidSignature {
                key_name: self.name.clone(),
                key_id: self.key_id,
            })
    }

    /// `Some(timestamp)` when the signature verifies, `None` otherwise.
    fn check_signature(&self, text: &str, signature: &[u8]) -> Option<Option<u64>> {
        match &self.key {
            PublicKey::Ed25519(key) => {
                let signature = ed25519_dalek::Signature::from_slice(signature).ok()?;
                key.verify(text.as_bytes(), &signature).ok()?;
                Some(None)
            }
            PublicKey::EcdsaP256 { key, .. } => {
                key.verify(text.as_bytes(), signature).ok()?;
                Some(None)
            }
            PublicKey::CosignatureV1(key) => {
                let (timestamp, signature) = split_timestamp(signature, 64)?;
                let signature = ed25519_dalek::Signature::from_slice(signature).ok()?;
                let message = cosignature_v1_message(timestamp, text);
                key.verify(&message, &signature).ok()?;
                Some(Some(timestamp))
            }
            PublicKey::MlDsa44Subtree { key, .. } => {
                let (timestamp, signature) = split_timestamp(signature, ML_DSA_44_SIGNATURE_SIZE)?;
                // The ML-DSA message commits to the checkpoint's first three lines,
                // so the text must be a checkpoint.
                let checkpoint = parse_checkpoint_text(text).ok()?;
                let message = subtree_v1_message(
                    &self.name,
                    timestamp,
                    checkpoint.origin(),
                    0,
                    checkpoint.size(),
                    checkpoint.root_hash(),
                )
                .ok()?;
                let signature = ml_dsa::Signature::<MlDsa44>::try_from(signature).ok()?;
                key.verify_with_context(&message, &[], &signature)
                    .then_some(Some(timestamp))
            }
        }
    }
}

/// Splits a `timestamped_signature`: a big-endian u64 timestamp (at most 2^63 - 1)
/// followed by a signature of exactly `signature_len` bytes.
fn split_timestamp(blob: &[u8], signature_len: usize) -> Option<(u64, &[u8])> {
    if blob.len() != 8 + signature_len {
        return None;
    }
    let (time, signature) = blob.split_at(8);
    let timestamp = u64::from_be_bytes(time.try_into().ok()?);
    (timestamp <= i64::MAX as u64).then_some((timestamp, signature))
}

/// A signature that verified with a trusted key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedSignature {
    /// The signature line.
    pub signature: NoteSignature,
    /// Its type (the trusted key's type).
    pub signature_type: SignatureType,
    /// The cosignature timestamp, for timestamped types.
    pub timestamp: Option<u64>,
}

/// A note whose signatures were checked against a set of trusted keys.
#[derive(Clone, Debug)]
pub struct VerifiedNote {
    note: Note,
    verified: Vec<VerifiedSignature>,
}

impl VerifiedNote {
    /// The note as parsed, with every signature line (verified or not).
    pub fn note(&self) -> &Note {
        &self.note
    }

    /// The signatures that verified, one per trusted key, in note order.
    pub fn verified(&self) -> &[VerifiedSignature] {
        &self.verified
    }

    /// Signature lines from keys outside the trusted set.
    pub fn unverified(&self) -> impl Iterator<Item = &NoteSignature> {
        self.note
            .signatures
            .iter()
            .filter(|s| !self.verified.iter().any(|v| v.signature == **s))
    }
}

/// Checks a note's signatures against trusted keys: signatures from unknown keys
/// are ignored, a failing signature from a trusted key rejects the note, and at
/// least one trusted key must have signed.
pub fn verify_note(note: Note, trusted: &[VerifierKey]) -> Result<VerifiedNote> {
    let mut verified: Vec<VerifiedSignature> = Vec::new();
    for signature in &note.signatures {
        for key in trusted.iter().filter(|k| k.matches(signature)) {
            let timestamp = key.verify(&note.text, &signature.signature)?;
            // A key that signed twice (both valid) is counted once.
            if !verified.iter().any(|v| {
                v.signature.key_name == signature.key_name && v.signature.key_id == signature.key_id
            }) {
                verified.push(VerifiedSignature {
                    signature: signature.clone(),
                    signature_type: key.signature_type(),
                    timestamp,
                });
            }
        }
    }
    if verified.is_empty() {
        return Err(Error::NoTrustedSignature);
    }
    Ok(VerifiedNote { note, verified })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE_VKEY: &str =
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    const EXAMPLE_NOTE: &str = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";

    #[test]
    fn spec_example_verifies_and_round_trips() {
        let key = VerifierKey::parse_vkey(EXAMPLE_VKEY).unwrap();
        assert_eq!(key.to_vkey(), EXAMPLE_VKEY);
        let note = parse_note(EXAMPLE_NOTE.as_bytes()).unwrap();
        assert_eq!(note.to_bytes(), EXAMPLE_NOTE.as_bytes());
        let verified = verify_note(note, &[key]).unwrap();
        assert_eq!(verified.verified().len(), 1);
        assert_eq!(verified.unverified().count(), 0);
    }

    #[test]
    fn oversized_note_is_refused_before_decoding() {
        let big = vec![b'a'; MAX_NOTE_SIZE + 1];
        assert_eq!(parse_note(&big).unwrap_err().kind(), "too_large");
    }

    #[test]
    fn signature_from_a_colliding_name_or_id_is_ignored() {
        let key = VerifierKey::parse_vkey(EXAMPLE_VKEY).unwrap();
        // Same key ID, other name; and same name, other key ID: both unknown keys.
        let other_name =
            EXAMPLE_NOTE.replace("\u{2014} example.com/foo", "\u{2014} example.com/bar");
        let err = verify_note(
            parse_note(other_name.as_bytes()).unwrap(),
            std::slice::from_ref(&key),
        );
        assert_eq!(err.unwrap_err(), Error::NoTrustedSignature);
        let other_id = EXAMPLE_NOTE.replace(" Uw2QOk", " Uw2QPk");
        let err = verify_note(parse_note(other_id.as_bytes()).unwrap(), &[key]);
        assert_eq!(err.unwrap_err(), Error::NoTrustedSignature);
    }
}
