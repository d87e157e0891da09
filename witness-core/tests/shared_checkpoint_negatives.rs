//! Mutations of the real checkpoints in `../shared/testdata/rekor/checkpoints/valid`:
//! every mutation that changes what was signed, or breaks the format, must be
//! rejected with the right error, and nothing may panic.

#![allow(clippy::unwrap_used)]

mod shared_support;

use std::path::PathBuf;

use witness_core::Error;
use witness_core::checkpoint::{parse_checkpoint_text, verify_checkpoint};
use witness_core::note::{
    MAX_NOTE_SIZE, MAX_SIGNATURES, Note, NoteSignature, VerifierKey, parse_note,
};

use shared_support::*;

/// A valid checkpoint, its bytes, and the log key (picked by the signature's
/// key name and ID) that signed it.
struct Case {
    name: String,
    bytes: Vec<u8>,
    note: Note,
    key: VerifierKey,
    /// Index of the log's signature line among the note's signatures.
    log_signature: usize,
}

fn cases() -> Vec<Case> {
    let keys = log_keys();
    let paths: Vec<PathBuf> = files_in("rekor/checkpoints/valid", 6);
    paths
        .into_iter()
        .map(|path| {
            let bytes = read(&path);
            let note = parse_note(&bytes).unwrap();
            let (log_signature, key) = note
                .signatures()
                .iter()
                .enumerate()
                .find_map(|(i, s)| keys_matching(&keys, s).first().map(|k| (i, (*k).clone())))
                .unwrap_or_else(|| panic!("{}: no log key", rel(&path)));
            // Sanity: the unmodified checkpoint verifies.
            verify_checkpoint(&bytes, std::slice::from_ref(&key), None).unwrap();
            Case {
                name: rel(&path),
                bytes,
                note,
                key,
                log_signature,
            }
        })
        .collect()
}

impl Case {
    fn verify(&self, bytes: &[u8]) -> Result<(), Error> {
        verify_checkpoint(bytes, std::slice::from_ref(&self.key), None).map(|_| ())
    }

    /// The note with its log signature replaced.
    fn with_log_signature(&self, signature: NoteSignature) -> Vec<u8> {
        let mut signatures = self.note.signatures().to_vec();
        signatures[self.log_signature] = signature;
        Note::new(self.note.text(), signatures).unwrap().to_bytes()
    }

    fn log_sig(&self) -> &NoteSignature {
        &self.note.signatures()[self.log_signature]
    }

    fn text(&self) -> &str {
        self.note.text()
    }
}

#[test]
fn checkpoint_with_any_flipped_signature_byte_is_invalid_signature() {
    for case in cases() {
        let signature = case.log_sig();
        for index in 0..signature.signature().len() {
            for mask in [0x01, 0x80] {
                let mut raw = signature.signature().to_vec();
                raw[index] ^= mask;
                let bytes = case.with_log_signature(
                    NoteSignature::new(signature.key_name(), signature.key_id(), raw).unwrap(),
                );
                assert_eq!(
                    case.verify(&bytes).unwrap_err(),
                    Error::InvalidSignature {
                        key_name: case.key.name().to_owned(),
                        key_id: case.key.key_id()
                    },
                    "{} byte {index} mask {mask:#x}",
                    case.name
                );
            }
        }
    }
}

#[test]
fn checkpoint_with_truncated_or_extended_signature_is_invalid_signature() {
    for case in cases() {
        let signature = case.log_sig();
        let raw = signature.signature();
        let mut variants = vec![raw[..raw.len() - 1].to_vec(), raw[..1].to_vec()];
        let mut longer = raw.to_vec();
        longer.push(0);
        variants.push(longer);
        for raw in variants {
            let bytes = case.with_log_signature(
                NoteSignature::new(signature.key_name(), signature.key_id(), raw).unwrap(),
            );
            assert!(
                matches!(case.verify(&bytes), Err(Error::InvalidSignature { .. })),
                "{}",
                case.name
            );
        }
    }
}

#[test]
fn checkpoint_signed_by_unknown_key_id_is_not_trusted() {
    for case in cases() {
        let signature = case.log_sig();
        for byte in 0..4 {
            for mask in [0xffu32, 0x01] {
                let key_id = signature.key_id() ^ (mask << (8 * byte));
                let bytes = case.with_log_signature(
                    NoteSignature::new(
                        signature.key_name(),
                        key_id,
                        signature.signature().to_vec(),
                    )
                    .unwrap(),
                );
                assert_eq!(
                    case.verify(&bytes).unwrap_err(),
                    Error::NoTrustedSignature,
                    "{} key ID byte {byte}",
                    case.name
                );
            }
        }
        // Same key ID under another key name: also an unknown key.
        let bytes = case.with_log_signature(
            NoteSignature::new(
                "other.example",
                signature.key_id(),
                signature.signature().to_vec(),
            )
            .unwrap(),
        );
        assert_eq!(case.verify(&bytes).unwrap_err(), Error::NoTrustedSignature);
    }
}

#[test]
fn checkpoint_truncated_at_any_line_boundary_is_rejected_unless_the_log_signature_is_whole() {
    let mut witnesses = witness_keys();
    witnesses.retain(|k| k.name() != "rekor-witness-test");
    for case in cases() {
        let text_len = case.text().len();
        // Where the log signature line ends, counted from the start of the note.
        let log_line_end = text_len
            + 1
            + case.note.signatures()[..=case.log_signature]
                .iter()
                .map(|s| s.to_line().len())
                .sum::<usize>();
        let newlines: Vec<usize> = case
            .bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i)
            .collect();
        assert!(newlines.len() >= 5);
        for &newline in &newlines {
            for cut in [newline, newline + 1] {
                let prefix = &case.bytes[..cut];
                let result = case.verify(prefix);
                if cut == case.bytes.len() {
                    assert!(result.is_ok());
                } else if cut >= log_line_end && prefix.ends_with(b"\n") {
                    // Only later (witness) signature lines were cut off.
                    let verified = verify_checkpoint(
                        prefix,
                        &[std::slice::from_ref(&case.key), witnesses.as_slice()].concat(),
                        None,
                    )
                    .unwrap_or_else(|e| panic!("{} cut at {cut}: {e}", case.name));
                    let whole_lines = parse_note(prefix).unwrap().signatures().len();
                    assert_eq!(verified.note().verified().len(), whole_lines);
                    assert_eq!(verified.note().note().text(), case.text());
                } else {
                    let err = result.unwrap_err();
                    assert!(
                        matches!(
                            err,
                            Error::MalformedNote { .. } | Error::MalformedCheckpoint { .. }
                        ),
                        "{} cut at {cut}: {err:?}",
                        case.name
                    );
                }
            }
        }
        // The text alone, with or without the blank line, is not a signed note.
        assert!(parse_note(case.text().as_bytes()).is_err());
        assert!(parse_note(format!("{}\n", case.text()).as_bytes()).is_err());
    }
}

#[test]
fn checkpoint_with_any_byte_deleted_is_rejected() {
    // Single-signature checkpoints: every byte is either signed text or part of
    // the only trusted signature line.
    for case in cases()
        .into_iter()
        .filter(|c| c.note.signatures().len() == 1)
    {
        for index in 0..case.bytes.len() {
            let mut bytes = case.bytes.clone();
            bytes.remove(index);
            assert!(
                case.verify(&bytes).is_err(),
                "{} without byte {index}",
                case.name
            );
        }
    }
}

#[test]
fn checkpoint_over_max_note_size_is_too_large_before_decoding() {
    for case in cases() {
        // An unknown signature line `— <name> <base64>\n` that pads the note to
        // exactly `MAX_NOTE_SIZE + extra` bytes. The blob (key ID + signature) is
        // 3k bytes, so its base64 is exactly 4k characters; the name fills the rest.
        let padded = |extra: usize| -> Vec<u8> {
            let room = MAX_NOTE_SIZE + extra - case.bytes.len() - "\u{2014}  \n".len();
            let k = (room - 16) / 4;
            let name = "n".repeat(room - 4 * k);
            let mut note = case.note.clone();
            note.push_signature(NoteSignature::new(&name, 1, vec![7; 3 * k - 4]).unwrap());
            note.to_bytes()
        };
        // Exactly the limit is accepted (the padding line is an unknown key)...
        let bytes = padded(0);
        assert_eq!(bytes.len(), MAX_NOTE_SIZE, "{}", case.name);
        case.verify(&bytes).unwrap();
        // ...and one byte more is refused as too large.
        let bytes = padded(1);
        assert_eq!(bytes.len(), MAX_NOTE_SIZE + 1);
        assert_eq!(
            case.verify(&bytes).unwrap_err(),
            Error::TooLarge {
                what: "signed note",
                size: MAX_NOTE_SIZE + 1,
                max: MAX_NOTE_SIZE
            }
        );
        // A huge extension line, and plain garbage, are refused the same way.
        let huge = format!("{}{}\n", case.text(), "e".repeat(MAX_NOTE_SIZE));
        let bytes = Note::new(&huge, case.note.signatures().to_vec())
            .unwrap()
            .to_bytes();
        assert!(matches!(case.verify(&bytes), Err(Error::TooLarge { .. })));
        let mut garbage = case.bytes.clone();
        garbage.resize(4 * MAX_NOTE_SIZE, 0xff);
        assert!(matches!(case.verify(&garbage), Err(Error::TooLarge { .. })));
    }
}

#[test]
fn checkpoint_with_crlf_or_mixed_line_endings_is_malformed() {
    for case in cases() {
        let text = String::from_utf8(case.bytes.clone()).unwrap();
        let newlines: Vec<usize> = text.match_indices('\n').map(|(i, _)| i).collect();
        let mut variants = vec![text.replace('\n', "\r\n"), text.replace('\n', "\r")];
        // Mixed: one line ending at a time becomes CRLF, or a lone CR.
        for &at in &newlines {
            for ending in ["\r\n", "\r", "\n\r"] {
                let mut mixed = text.clone();
                mixed.replace_range(at..at + 1, ending);
                variants.push(mixed);
            }
        }
        for variant in variants {
            let err = case.verify(variant.as_bytes()).unwrap_err();
            assert!(
                matches!(err, Error::MalformedNote { .. }),
                "{}: {variant:?}: {err:?}",
                case.name
            );
        }
    }
}

#[test]
fn checkpoint_with_non_utf8_bytes_is_malformed() {
    for case in cases() {
        let mut positions = vec![0, case.text().len() / 2, case.bytes.len() - 2];
        // Inside the em dash of the log signature line.
        positions.push(case.text().len() + 2);
        for at in positions {
            for bad in [&[0xff][..], &[0xc0, 0x80], &[0xed, 0xa0, 0x80], &[0x80]] {
                let mut bytes = case.bytes.clone();
                bytes.splice(at..at, bad.iter().copied());
                assert_eq!(
                    case.verify(&bytes).unwrap_err(),
                    Error::MalformedNote {
                        reason: "note is not valid UTF-8"
                    },
                    "{} at {at}",
                    case.name
                );
            }
        }
    }
}

#[test]
fn checkpoint_with_non_canonical_size_is_malformed_before_signature_check() {
    for case in cases() {
        let checkpoint = parse_checkpoint_text(case.text()).unwrap();
        let size = checkpoint.size().to_string();
        let lines: Vec<&str> = case.text().split('\n').collect();
        assert_eq!(lines[1], size);
        for bad in [
            format!("0{size}"),
            format!("+{size}"),
            format!("-{size}"),
            format!(" {size}"),
            format!("{size} "),
            format!("00{size}"),
            format!("{size}.0"),
            format!("{size}\u{0660}"),
            "9223372036854775808".to_owned(),
            String::new(),
        ] {
            let mut text_lines = lines.clone();
            text_lines[1] = &bad;
            let text = text_lines.join("\n");
            let bytes = Note::new(&text, case.note.signatures().to_vec())
                .unwrap()
                .to_bytes();
            let err = case.verify(&bytes).unwrap_err();
            assert!(
                matches!(err, Error::MalformedCheckpoint { .. }),
                "{} size {bad:?}: {err:?}",
                case.name
            );
        }
        // A canonical but different size is a signature failure instead.
        let mut text_lines = lines.clone();
        let other = (checkpoint.size() + 1).to_string();
        text_lines[1] = &other;
        let bytes = Note::new(&text_lines.join("\n"), case.note.signatures().to_vec())
            .unwrap()
            .to_bytes();
        assert!(matches!(
            case.verify(&bytes),
            Err(Error::InvalidSignature { .. })
        ));
    }
}

#[test]
fn checkpoint_with_second_wrong_signature_from_same_key_is_invalid_signature() {
    let cases = cases();
    for case in &cases {
        // A real signature by the same key over another checkpoint, when there is
        // one; otherwise a well-formed signature of the right length by another key.
        let borrowed: Vec<Vec<u8>> = cases
            .iter()
            .filter(|other| {
                other.key.to_vkey() == case.key.to_vkey() && other.text() != case.text()
            })
            .map(|other| other.log_sig().signature().to_vec())
            .collect();
        let forged = {
            let (signing, verifier) = fixed_ed25519_key("forger", 42);
            ed25519_signature_line(&signing, &verifier, case.text())
                .signature()
                .to_vec()
        };
        let mut wrong_signatures = borrowed.clone();
        wrong_signatures.push(forged);
        if case.key.signature_type() == witness_core::note::SignatureType::EcdsaP256 {
            assert!(
                !borrowed.is_empty(),
                "{}: no other checkpoint by this key",
                case.name
            );
        }
        let real = case.log_sig().clone();
        for raw in wrong_signatures {
            let wrong = NoteSignature::new(real.key_name(), real.key_id(), raw).unwrap();
            // Wrong after the real one, and before it.
            for order in [
                vec![real.clone(), wrong.clone()],
                vec![wrong.clone(), real.clone()],
            ] {
                let bytes = Note::new(case.text(), order).unwrap().to_bytes();
                assert_eq!(
                    case.verify(&bytes).unwrap_err(),
                    Error::InvalidSignature {
                        key_name: case.key.name().to_owned(),
                        key_id: case.key.key_id()
                    },
                    "{}",
                    case.name
                );
            }
        }
        // The real signature twice is fine and counted once.
        let bytes = Note::new(case.text(), vec![real.clone(), real.clone()])
            .unwrap()
            .to_bytes();
        let verified = verify_checkpoint(&bytes, std::slice::from_ref(&case.key), None).unwrap();
        assert_eq!(verified.note().verified().len(), 1);
    }
}

/// `count` signature lines by fixed-seed Ed25519 keys unknown to the verifier.
fn unknown_signatures(text: &str, count: usize) -> (Vec<NoteSignature>, Vec<VerifierKey>) {
    (0..count)
        .map(|i| {
            let (signing, verifier) =
                fixed_ed25519_key(&format!("unknown{i}.example"), i as u8 + 1);
            (ed25519_signature_line(&signing, &verifier, text), verifier)
        })
        .unzip()
}

#[test]
fn checkpoint_with_sixteen_signatures_is_accepted() {
    for case in cases() {
        let existing = case.note.signatures().len();
        let (extra, extra_keys) = unknown_signatures(case.text(), 16 - existing);
        let mut signatures = case.note.signatures().to_vec();
        signatures.extend(extra);
        let bytes = Note::new(case.text(), signatures).unwrap().to_bytes();
        // With the log key only: one verified, fifteen ignored.
        let verified = verify_checkpoint(&bytes, std::slice::from_ref(&case.key), None)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(verified.note().note().signatures().len(), 16);
        assert_eq!(verified.note().verified().len(), 1);
        assert_eq!(verified.note().unverified().count(), 15);
        // The generated signatures are real: trusting their keys verifies them all.
        let mut trusted = extra_keys;
        trusted.push(case.key.clone());
        let verified = verify_checkpoint(&bytes, &trusted, None).unwrap();
        assert_eq!(verified.note().verified().len(), 16 - existing + 1);
    }
}

#[test]
fn checkpoint_with_more_than_max_signatures_is_rejected() {
    for case in cases() {
        let existing = case.note.signatures().len();
        // A cheap unknown line, repeated: parsing rejects before any verification.
        let (unknown, _) = unknown_signatures(case.text(), 1);
        let mut signatures = case.note.signatures().to_vec();
        signatures.extend(std::iter::repeat_n(
            unknown[0].clone(),
            MAX_SIGNATURES - existing,
        ));
        let bytes = Note::new(case.text(), signatures.clone())
            .unwrap()
            .to_bytes();
        assert!(bytes.len() <= MAX_NOTE_SIZE);
        let verified = verify_checkpoint(&bytes, std::slice::from_ref(&case.key), None)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(verified.note().note().signatures().len(), MAX_SIGNATURES);

        signatures.push(unknown[0].clone());
        let bytes = Note::new(case.text(), signatures).unwrap().to_bytes();
        assert_eq!(
            case.verify(&bytes).unwrap_err(),
            Error::TooManySignatures {
                count: MAX_SIGNATURES + 1,
                max: MAX_SIGNATURES
            },
            "{}",
            case.name
        );
    }
}

#[test]
fn checkpoint_with_mangled_signature_line_is_malformed() {
    for case in cases() {
        let text = String::from_utf8(case.bytes.clone()).unwrap();
        let line = case.log_sig().to_line();
        let body = line.trim_end_matches('\n');
        let encoded = body.rsplit(' ').next().unwrap();
        let variants = [
            // ASCII hyphen, no space after the dash, two spaces, tab separator.
            body.replacen('\u{2014}', "-", 1),
            body.replacen("\u{2014} ", "\u{2014}", 1),
            body.replacen(' ', "  ", 1),
            body.replacen(&format!(" {encoded}"), &format!("\t{encoded}"), 1),
            // Unpadded, URL-safe and truncated base64, and a key ID only.
            body.replacen(encoded, encoded.trim_end_matches('='), 1),
            body.replacen(encoded, &encoded.replace('+', "-").replace('/', "_"), 1),
            body.replacen(encoded, &encoded[..encoded.len() - 1], 1),
            body.replacen(encoded, "AAAAAA==", 1),
            // A name with a plus sign, and no name at all.
            body.replacen(case.log_sig().key_name(), "a+b", 1),
            body.replacen(&format!("{} ", case.log_sig().key_name()), "", 1),
        ];
        for variant in variants {
            if variant == body {
                continue; // e.g. base64 without '+' or '/', or without padding
            }
            let bytes = text.replacen(body, &variant, 1);
            let err = case.verify(bytes.as_bytes()).unwrap_err();
            assert!(
                matches!(err, Error::MalformedNote { .. }),
                "{}: {variant:?}: {err:?}",
                case.name
            );
        }
    }
}
