//! The HTTP wire formats of c2sp.org/tlog-witness: the `add-checkpoint` and
//! `sign-subtree` request bodies parsed into typed requests, and the response
//! bodies serialized.
//!
//! In scope: the framing of the bodies (size lines, proof lines, the empty line
//! before the checkpoint). Out of scope: the checkpoint itself, which is kept
//! verbatim for the witness to parse and verify against the keys it trusts, and
//! every semantic check (old size against the stored size, proof verification,
//! subtree validity), which belong to the witness.

use crate::checkpoint::parse_tree_size;
use crate::merkle::{Hash, MAX_PROOF_HASHES};
use crate::note::MAX_NOTE_SIZE;
use crate::{Error, Result};

/// The longest canonical tree size: 2^63 - 1 has 19 digits.
const MAX_SIZE_DIGITS: usize = 19;

/// A proof or subtree hash line: 44 base64 characters and a newline.
const HASH_LINE: usize = 44 + 1;

/// The largest `add-checkpoint` body accepted, checked before anything is decoded.
///
/// signed-note requires verifiers to accept at least 16 signatures, and an
/// ML-DSA-44 cosignature line is about 3.3 KB, so a legitimately cosigned
/// checkpoint fits the note cap of [`MAX_NOTE_SIZE`] (64 KiB). On top of it come
/// the `old <size>` line (4 + 19 digits + newline), at most
/// [`MAX_PROOF_HASHES`] proof lines of 45 bytes (44 base64 characters and a
/// newline), and the empty line.
pub const MAX_ADD_CHECKPOINT_BODY: usize =
    MAX_NOTE_SIZE + (4 + MAX_SIZE_DIGITS + 1) + MAX_PROOF_HASHES * HASH_LINE + 1;

/// The largest `sign-subtree` body accepted, checked before anything is decoded:
/// the note cap, the `subtree <start> <end>` line (8 + 19 + 1 + 19 + newline),
/// the subtree hash line, at most [`MAX_PROOF_HASHES`] proof lines and the empty
/// line.
pub const MAX_SIGN_SUBTREE_BODY: usize = MAX_NOTE_SIZE
    + (8 + MAX_SIZE_DIGITS + 1 + MAX_SIZE_DIGITS + 1)
    + HASH_LINE
    + MAX_PROOF_HASHES * HASH_LINE
    + 1;

/// The `Content-Type` of a 409 Conflict body.
pub const CONFLICT_CONTENT_TYPE: &str = "text/x.tlog.size";

/// The em dash (U+2014) and space that start every note signature line.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// A parsed `add-checkpoint` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpointRequest {
    /// The size of the latest checkpoint the client believes the witness cosigned.
    pub old_size: u64,
    /// RFC 6962 consistency proof from `old_size` to the checkpoint's size.
    pub consistency_proof: Vec<Hash>,
    /// The checkpoint note, byte for byte as submitted.
    pub checkpoint: Vec<u8>,
}

/// A parsed `sign-subtree` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignSubtreeRequest {
    /// The first leaf of the subtree.
    pub start: u64,
    /// One past the last leaf of the subtree.
    pub end: u64,
    /// The Merkle tree hash of the subtree.
    pub subtree_hash: Hash,
    /// Subtree consistency proof from the subtree to the checkpoint.
    pub proof: Vec<Hash>,
    /// The reference checkpoint note, byte for byte as submitted.
    pub checkpoint: Vec<u8>,
}

/// Parses an `add-checkpoint` request body.
pub fn parse_add_checkpoint_body(body: &[u8]) -> Result<AddCheckpointRequest> {
    check_size("add-checkpoint body", body, MAX_ADD_CHECKPOINT_BODY)?;
    let (line, rest) = next_line(body)?;
    let old = line.strip_prefix("old ").ok_or(Error::InvalidRequest {
        reason: "first line is not `old <size>`",
    })?;
    let old_size = parse_size(old)?;
    let (consistency_proof, checkpoint) = parse_proof_and_checkpoint(rest)?;
    Ok(AddCheckpointRequest {
        old_size,
        consistency_proof,
        checkpoint,
    })
}

/// Serializes an `add-checkpoint` request body (for clients and tests).
pub fn serialize_add_checkpoint_body(request: &AddCheckpointRequest) -> Vec<u8> {
    let mut out = format!("old {}\n", request.old_size).into_bytes();
    push_proof_and_checkpoint(&mut out, &request.consistency_proof, &request.checkpoint);
    out
}

/// Parses a `sign-subtree` request body.
pub fn parse_sign_subtree_body(body: &[u8]) -> Result<SignSubtreeRequest> {
    check_size("sign-subtree body", body, MAX_SIGN_SUBTREE_BODY)?;
    let (line, rest) = next_line(body)?;
    let range = line.strip_prefix("subtree ").ok_or(Error::InvalidRequest {
        reason: "first line is not `subtree <start> <end>`",
    })?;
    let (start, end) = range.split_once(' ').ok_or(Error::InvalidRequest {
        reason: "first line is not `subtree <start> <end>`",
    })?;
    let (start, end) = (parse_size(start)?, parse_size(end)?);
    if start >= end {
        return Err(Error::InvalidRequest {
            reason: "subtree start is not below its end",
        });
    }
    let (line, rest) = next_line(rest)?;
    let subtree_hash = Hash::parse_base64(line)?;
    let (proof, checkpoint) = parse_proof_and_checkpoint(rest)?;
    Ok(SignSubtreeRequest {
        start,
        end,
        subtree_hash,
        proof,
        checkpoint,
    })
}

/// Serializes a `sign-subtree` request body (for clients and tests).
pub fn serialize_sign_subtree_body(request: &SignSubtreeRequest) -> Vec<u8> {
    let mut out = format!(
        "subtree {} {}\n{}\n",
        request.start,
        request.end,
        request.subtree_hash.to_base64()
    )
    .into_bytes();
    push_proof_and_checkpoint(&mut out, &request.proof, &request.checkpoint);
    out
}

/// The 200 body: one or more note signature lines, each `— <name> <base64>\n`.
///
/// The lines come from the witness service; one that is not a single signature
/// line is refused rather than relayed, so a client never receives a body that
/// would splice extra lines into its note.
pub fn cosignature_response_body(lines: &[String]) -> Result<String> {
    if lines.is_empty() {
        return Err(Error::MalformedNote {
            reason: "no cosignature lines",
        });
    }
    let mut body = String::new();
    for line in lines {
        let single = line
            .strip_suffix('\n')
            .filter(|l| l.starts_with(SIGNATURE_PREFIX) && !l.contains('\n'));
        if single.is_none() {
            return Err(Error::MalformedNote {
                reason: "cosignature is not one `— <name> <signature>` line",
            });
        }
        body.push_str(line);
    }
    Ok(body)
}

/// The 409 body: the latest cosigned size and a newline, served as
/// [`CONFLICT_CONTENT_TYPE`].
pub fn conflict_body(stored_size: u64) -> String {
    format!("{stored_size}\n")
}

fn check_size(what: &'static str, body: &[u8], max: usize) -> Result<()> {
    if body.len() > max {
        return Err(Error::TooLarge {
            what,
            size: body.len(),
            max,
        });
    }
    if body.is_empty() {
        return Err(Error::InvalidRequest {
            reason: "request body is empty",
        });
    }
    Ok(())
}

/// Splits off one newline-terminated line. Carriage returns are refused
/// by name: a CRLF body is the likeliest client mistake, and a clear reason
/// beats a base64 or decimal error on the line it corrupted.
fn next_line(bytes: &[u8]) -> Result<(&str, &[u8])> {
    let end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(Error::InvalidRequest {
            reason: "missing the empty line before the checkpoint",
        })?;
    let (line, rest) = (&bytes[..end], &bytes[end + 1..]);
    if line.contains(&b'\r') {
        return Err(Error::InvalidRequest {
            reason: "line ends in CRLF; lines end in a bare newline",
        });
    }
    let line = std::str::from_utf8(line).map_err(|_| Error::InvalidRequest {
        reason: "request line is not UTF-8",
    })?;
    Ok((line, rest))
}

fn parse_size(text: &str) -> Result<u64> {
    parse_tree_size(text).map_err(|_| Error::InvalidRequest {
        reason: "size is not a decimal below 2^63 without leading zeroes",
    })
}

/// Proof lines up to the empty line, then the checkpoint (the rest, verbatim).
fn parse_proof_and_checkpoint(mut rest: &[u8]) -> Result<(Vec<Hash>, Vec<u8>)> {
    let mut proof = Vec::new();
    loop {
        let (line, after) = next_line(rest)?;
        rest = after;
        if line.is_empty() {
            break;
        }
        if proof.len() == MAX_PROOF_HASHES {
            return Err(Error::ProofTooLong {
                count: MAX_PROOF_HASHES + 1,
                max: MAX_PROOF_HASHES,
            });
        }
        proof.push(Hash::parse_base64(line)?);
    }
    if rest.is_empty() {
        return Err(Error::InvalidRequest {
            reason: "checkpoint is missing after the empty line",
        });
    }
    Ok((proof, rest.to_vec()))
}

fn push_proof_and_checkpoint(out: &mut Vec<u8>, proof: &[Hash], checkpoint: &[u8]) {
    for hash in proof {
        out.extend_from_slice(hash.to_base64().as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(checkpoint);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const NOTE: &[u8] = b"example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n\xe2\x80\x94 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n";

    fn spec_example() -> Vec<u8> {
        let mut body = b"old 20852014\n\
PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n\
jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n\
5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n\
/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n\n"
            .to_vec();
        body.extend_from_slice(NOTE);
        body
    }

    fn with_proof_lines(count: usize) -> Vec<u8> {
        let mut body = b"old 5\n".to_vec();
        for _ in 0..count {
            body.extend_from_slice(Hash([7; 32]).to_base64().as_bytes());
            body.push(b'\n');
        }
        body.push(b'\n');
        body.extend_from_slice(NOTE);
        body
    }

    fn invalid(reason: &'static str) -> Error {
        Error::InvalidRequest { reason }
    }

    #[test]
    fn spec_example_parses_and_round_trips() {
        let body = spec_example();
        let request = parse_add_checkpoint_body(&body).unwrap();
        assert_eq!(request.old_size, 20852014);
        assert_eq!(request.consistency_proof.len(), 4);
        assert_eq!(request.checkpoint, NOTE);
        assert_eq!(serialize_add_checkpoint_body(&request), body);
    }

    #[test]
    fn empty_proof_from_zero_parses() {
        let mut body = b"old 0\n\n".to_vec();
        body.extend_from_slice(NOTE);
        let request = parse_add_checkpoint_body(&body).unwrap();
        assert_eq!((request.old_size, request.consistency_proof.len()), (0, 0));
    }

    #[test]
    fn sixty_three_proof_lines_are_accepted_sixty_four_refused() {
        assert_eq!(
            parse_add_checkpoint_body(&with_proof_lines(63))
                .unwrap()
                .consistency_proof
                .len(),
            63
        );
        assert_eq!(
            parse_add_checkpoint_body(&with_proof_lines(64)),
            Err(Error::ProofTooLong { count: 64, max: 63 })
        );
    }

    #[test]
    fn body_without_empty_line_is_refused() {
        assert_eq!(
            parse_add_checkpoint_body(b"old 0\n"),
            Err(invalid("missing the empty line before the checkpoint"))
        );
        // Without the empty line the note's origin is read as a proof line.
        let mut body = b"old 0\n".to_vec();
        body.extend_from_slice(NOTE);
        assert!(matches!(
            parse_add_checkpoint_body(&body),
            Err(Error::MalformedProof { .. })
        ));
    }

    #[test]
    fn missing_checkpoint_is_refused() {
        assert_eq!(
            parse_add_checkpoint_body(b"old 0\n\n"),
            Err(invalid("checkpoint is missing after the empty line"))
        );
    }

    #[test]
    fn non_base64_and_wrong_length_hashes_are_refused() {
        for line in [
            "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpka!=",
            "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw",
            "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw==",
            "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkax=",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",
        ] {
            let body = [b"old 5\n", line.as_bytes(), b"\n\n", NOTE].concat();
            assert!(
                matches!(
                    parse_add_checkpoint_body(&body),
                    Err(Error::MalformedProof { .. })
                ),
                "{line}"
            );
        }
    }

    #[test]
    fn non_canonical_old_sizes_are_refused() {
        for old in [
            "05",
            "00",
            "+5",
            "-5",
            " 5",
            "5 ",
            "",
            "9223372036854775808",
            "0x5",
        ] {
            let body = [b"old ", old.as_bytes(), b"\n\n", NOTE].concat();
            assert_eq!(
                parse_add_checkpoint_body(&body),
                Err(invalid(
                    "size is not a decimal below 2^63 without leading zeroes"
                )),
                "{old:?}"
            );
        }
        let body = [b"old 9223372036854775807\n\n", NOTE].concat();
        assert_eq!(
            parse_add_checkpoint_body(&body).unwrap().old_size,
            i64::MAX as u64
        );
    }

    #[test]
    fn wrong_first_line_is_refused() {
        let body = [b"older 5\n\n", NOTE].concat();
        assert_eq!(
            parse_add_checkpoint_body(&body),
            Err(invalid("first line is not `old <size>`"))
        );
    }

    #[test]
    fn crlf_body_is_refused_by_name() {
        let body = spec_example()
            .iter()
            .flat_map(|&b| {
                if b == b'\n' {
                    vec![b'\r', b'\n']
                } else {
                    vec![b]
                }
            })
            .collect::<Vec<_>>();
        assert_eq!(
            parse_add_checkpoint_body(&body),
            Err(invalid("line ends in CRLF; lines end in a bare newline"))
        );
    }

    #[test]
    fn empty_body_is_refused() {
        assert_eq!(
            parse_add_checkpoint_body(b""),
            Err(invalid("request body is empty"))
        );
        assert_eq!(
            parse_sign_subtree_body(b""),
            Err(invalid("request body is empty"))
        );
    }

    #[test]
    fn oversized_body_is_refused_before_decoding() {
        let body = vec![b'!'; MAX_ADD_CHECKPOINT_BODY + 1];
        assert!(matches!(
            parse_add_checkpoint_body(&body),
            Err(Error::TooLarge { size, max, .. })
                if size == MAX_ADD_CHECKPOINT_BODY + 1 && max == MAX_ADD_CHECKPOINT_BODY
        ));
        let body = vec![b'!'; MAX_SIGN_SUBTREE_BODY + 1];
        assert!(matches!(
            parse_sign_subtree_body(&body),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn largest_legitimate_body_fits_the_cap() {
        let mut body = format!("old {}\n", i64::MAX).into_bytes();
        for _ in 0..MAX_PROOF_HASHES {
            body.extend_from_slice(Hash([1; 32]).to_base64().as_bytes());
            body.push(b'\n');
        }
        body.push(b'\n');
        body.extend_from_slice(&vec![b'a'; MAX_NOTE_SIZE]);
        assert_eq!(body.len(), MAX_ADD_CHECKPOINT_BODY);
        assert!(parse_add_checkpoint_body(&body).is_ok());
    }

    #[test]
    fn spec_sign_subtree_example_round_trips() {
        let mut body = b"subtree 8 13\n\
mbsQCg+dEIMGlpqeGgk94JutQwKKS2Lo5IuDhKmDjiU=\n\
CD82D2LDm0phY0+xKbHyZfq3Hw21lVkuV7Zis5EFg0k=\n\
h/ghL5nyaXTIBAklqDnisM+SFdbA3izoGZ5oRYMZzc0=\n\
8qtnAAU9sTKQx/zt3E4v8Jt2a9IMQUf0QUawvePF9y0=\n\
KuO5BNOmginG34Lm5G3e2GuiWliGo3K0ebzGpvI0fEg=\n\n"
            .to_vec();
        body.extend_from_slice(NOTE);
        let request = parse_sign_subtree_body(&body).unwrap();
        assert_eq!((request.start, request.end), (8, 13));
        assert_eq!(request.proof.len(), 4);
        assert_eq!(request.checkpoint, NOTE);
        assert_eq!(serialize_sign_subtree_body(&request), body);
    }

    #[test]
    fn malformed_sign_subtree_shapes_are_refused() {
        let hash = Hash([3; 32]).to_base64();
        let range = invalid("first line is not `subtree <start> <end>`");
        let size = invalid("size is not a decimal below 2^63 without leading zeroes");
        for (first, expected) in [
            ("subtree 8", range.clone()),
            ("subtree  8 13", size.clone()),
            ("subtree 08 13", size.clone()),
            ("subtree 8 13 ", size),
            ("old 8", range),
            (
                "subtree 13 8",
                invalid("subtree start is not below its end"),
            ),
            ("subtree 8 8", invalid("subtree start is not below its end")),
        ] {
            let body = [first.as_bytes(), b"\n", hash.as_bytes(), b"\n\n", NOTE].concat();
            assert_eq!(parse_sign_subtree_body(&body), Err(expected), "{first}");
        }
        let no_hash = [b"subtree 8 13\n\n", NOTE].concat();
        assert!(matches!(
            parse_sign_subtree_body(&no_hash),
            Err(Error::MalformedProof { .. })
        ));
    }

    #[test]
    fn cosignature_lines_are_concatenated() {
        let lines = vec![
            "\u{2014} w.example/a AAAA\n".to_owned(),
            "\u{2014} w.example/b BBBB\n".to_owned(),
        ];
        assert_eq!(
            cosignature_response_body(&lines).unwrap(),
            "\u{2014} w.example/a AAAA\n\u{2014} w.example/b BBBB\n"
        );
    }

    #[test]
    fn spliced_or_missing_cosignature_lines_are_not_relayed() {
        for lines in [
            vec![],
            vec!["\u{2014} w.example/a AAAA".to_owned()],
            vec!["\u{2014} w.example/a AAAA\nextra line\n".to_owned()],
            vec!["- w.example/a AAAA\n".to_owned()],
        ] {
            assert!(matches!(
                cosignature_response_body(&lines),
                Err(Error::MalformedNote { .. })
            ));
        }
    }

    #[test]
    fn conflict_body_is_size_and_newline() {
        assert_eq!(conflict_body(30), "30\n");
        assert_eq!(CONFLICT_CONTENT_TYPE, "text/x.tlog.size");
    }
}
