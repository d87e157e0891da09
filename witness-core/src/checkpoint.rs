//! C2SP checkpoints (c2sp.org/tlog-checkpoint): a signed note whose text is
//! origin, tree size, root hash and optional extension lines.
//!
//! Parsing is canonical: [`Checkpoint::to_text`] of a parsed checkpoint gives back
//! the exact bytes, so a witness can cosign the re-encoding of what it parsed.

use crate::merkle::{Hash, MAX_TREE_SIZE};
use crate::note::{Note, VerifiedNote, VerifierKey, parse_note, verify_note};
use crate::{Error, Result};

/// The body of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root_hash: Hash,
    extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint from its parts, checked as the parser would check them.
    pub fn new(
        origin: &str,
        size: u64,
        root_hash: Hash,
        extensions: Vec<String>,
    ) -> Result<Checkpoint> {
        let malformed = |reason| Error::MalformedCheckpoint { reason };
        if origin.is_empty() {
            return Err(malformed("origin is empty"));
        }
        if size > MAX_TREE_SIZE {
            return Err(malformed("tree size is above 2^63 - 1"));
        }
        for line in std::iter::once(origin).chain(extensions.iter().map(String::as_str)) {
            if line.chars().any(|c| c < ' ') {
                return Err(malformed("line contains a control character"));
            }
        }
        if extensions.iter().any(String::is_empty) {
            return Err(malformed("extension line is empty"));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root_hash,
            extensions,
        })
    }

    /// The log's origin line.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The Merkle tree root at this size.
    pub fn root_hash(&self) -> &Hash {
        &self.root_hash
    }

    /// Extension lines (old Rekor v1 checkpoints carry a signed `Timestamp:` line).
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// The note text, with its final newline.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            self.root_hash.to_base64()
        );
        for line in &self.extensions {
            text.push_str(line);
            text.push('\n');
        }
        text
    }
}

/// Parses a tree size: ASCII decimal, no sign, no leading zeroes, at most 2^63 - 1.
pub fn parse_tree_size(text: &str) -> Result<u64> {
    let malformed = |reason| Error::MalformedCheckpoint { reason };
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("tree size is not a decimal number below 2^63"));
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(malformed("tree size has a leading zero"));
    }
    let size: u64 = text
        .parse()
        .map_err(|_| malformed("tree size is not a decimal number below 2^63"))?;
    if size > MAX_TREE_SIZE {
        return Err(malformed("tree size is above 2^63 - 1"));
    }
    Ok(size)
}

/// Parses checkpoint note text (without signatures).
pub fn parse_checkpoint_text(text: &str) -> Result<Checkpoint> {
    let malformed = |reason| Error::MalformedCheckpoint { reason };
    let body = text
        .strip_suffix('\n')
        .ok_or(malformed("text does not end with a newline"))?;
    let mut lines = body.split('\n');
    let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next()) else {
        return Err(malformed("fewer than three lines"));
    };
    let size = parse_tree_size(size)?;
    let root_hash =
        Hash::parse_base64(root).map_err(|_| malformed("root hash is not 32 bytes of base64"))?;
    Checkpoint::new(origin, size, root_hash, lines.map(str::to_owned).collect())
}

/// A checkpoint whose note carries a valid signature from a trusted log key.
#[derive(Clone, Debug)]
pub struct VerifiedCheckpoint {
    checkpoint: Checkpoint,
    note: VerifiedNote,
}

impl VerifiedCheckpoint {
    /// The checkpoint body.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The note with its verified and unverified signatures.
    pub fn note(&self) -> &VerifiedNote {
        &self.note
    }
}

/// Parses a signed checkpoint and verifies it with the log's keys. When
/// `expected_origin` is given, the origin line must equal it.
pub fn verify_checkpoint(
    bytes: &[u8],
    log_keys: &[VerifierKey],
    expected_origin: Option<&str>,
) -> Result<VerifiedCheckpoint> {
    let note = parse_note(bytes)?;
    verify_checkpoint_note(note, log_keys, expected_origin)
}

/// As [`verify_checkpoint`], for a note already parsed.
pub fn verify_checkpoint_note(
    note: Note,
    log_keys: &[VerifierKey],
    expected_origin: Option<&str>,
) -> Result<VerifiedCheckpoint> {
    // The body is parsed before any signature is checked: a note that is not a
    // checkpoint is refused without spending a verification on it.
    let checkpoint = parse_checkpoint_text(note.text())?;
    if let Some(expected) = expected_origin
        && checkpoint.origin() != expected
    {
        return Err(Error::OriginMismatch {
            expected: expected.to_owned(),
            found: checkpoint.origin().to_owned(),
        });
    }
    let note = verify_note(note, log_keys)?;
    Ok(VerifiedCheckpoint { checkpoint, note })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=";

    #[test]
    fn parse_is_canonical_and_round_trips() {
        let text = format!("example.com/behind-the-sofa\n20852163\n{ROOT}\nTimestamp: 1\n");
        let checkpoint = parse_checkpoint_text(&text).unwrap();
        assert_eq!(checkpoint.size(), 20852163);
        assert_eq!(checkpoint.extensions(), ["Timestamp: 1"]);
        assert_eq!(checkpoint.to_text(), text);
    }

    #[test]
    fn non_canonical_sizes_are_rejected() {
        for size in [
            "+1",
            "01",
            "-1",
            " 1",
            "1 ",
            "",
            "9223372036854775808",
            "1e3",
            "0x10",
        ] {
            let text = format!("o\n{size}\n{ROOT}\n");
            assert!(parse_checkpoint_text(&text).is_err(), "size {size:?}");
        }
        assert!(parse_checkpoint_text(&format!("o\n0\n{ROOT}\n")).is_ok());
        assert!(parse_checkpoint_text(&format!("o\n9223372036854775807\n{ROOT}\n")).is_ok());
    }

    #[test]
    fn structural_errors_are_rejected() {
        assert!(parse_checkpoint_text(&format!("o\n1\n{ROOT}")).is_err());
        assert!(parse_checkpoint_text("o\n1\n").is_err());
        assert!(parse_checkpoint_text(&format!("\n1\n{ROOT}\n")).is_err());
        assert!(parse_checkpoint_text(&format!("o\n1\n{ROOT}\n\n")).is_err());
        assert!(parse_checkpoint_text(&format!("o\r\n1\n{ROOT}\n")).is_err());
        assert!(parse_checkpoint_text("o\n1\nAAAA\n").is_err());
    }
}
