//! Where things go in the archive: object names for cosigned checkpoints and
//! manifests, and the time formats in them. Pure: no I/O and no clock.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use object_store::path::Path;
use sha2::{Digest, Sha256};

use crate::checkpoint::parse_checkpoint_text;
use crate::note::parse_note;
use crate::{Error, Result};

/// The folder holding every cosigned checkpoint.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// The folder holding the signed manifests.
pub const MANIFESTS_DIR: &str = "manifests";

/// Tree sizes per folder under a log's folder. A folder per size would cost a
/// directory (an inode and a 4 KiB block on a local disk) per cosignature of a
/// growing log and a `mkdir` on the write path; a thousand sizes per folder
/// keep every folder small (the way tlog-tiles groups tile indexes by three
/// digits) while a log growing by one entry at a time gets a new folder once
/// per thousand cosignatures.
pub const SIZES_PER_FOLDER: u64 = 1000;

/// The longest origin segment kept whole. One path segment must stay under the
/// 255-byte file name limit of local filesystems, and a whole key under S3's
/// 1,024 bytes: 160 + the rest of a checkpoint key (138 bytes) + a configured
/// prefix of at most [`MAX_PREFIX_LEN`] bytes and its `/` stays below both.
const MAX_ORIGIN_SEGMENT: usize = 160;
/// How much of a longer escaped origin is kept, for people browsing the archive,
/// before the SHA-256 of the whole origin that makes the name unique.
const LONG_ORIGIN_KEPT: usize = 80;
/// The longest prefix an archive URL may put before every object name (see
/// [`MAX_ORIGIN_SEGMENT`]).
pub const MAX_PREFIX_LEN: usize = 512;

/// The path segment naming a log in the archive: total and injective over all
/// strings, so that no origin (`..`, `/`, spaces, control characters, any
/// Unicode) can leave its folder or share it with another origin.
///
/// Lowercase ASCII letters, digits, `-` and a non-leading `.` stay as they are;
/// every other byte becomes `_XX` (uppercase hex), `_` itself included. `_` is
/// the escape rather than `%` because tools that copy buckets to disks decode
/// `%2F` back into `/`. Uppercase letters are escaped so that two origins
/// differing only in case never meet on a case-insensitive filesystem (escapes
/// use uppercase hex and plain text has none); a leading `.` is
/// escaped so that no segment is `.`, `..` or hidden. Escaped names longer than
/// 160 bytes keep their first 80 bytes and add `__` and the SHA-256 of the
/// origin: `__` never occurs in an escaped name, so long and short forms cannot
/// collide. The empty origin, which no checkpoint has, is `_`.
pub fn origin_segment(origin: &str) -> String {
    if origin.is_empty() {
        return "_".to_owned();
    }
    let mut escaped = String::with_capacity(origin.len());
    for (i, byte) in origin.bytes().enumerate() {
        let plain = byte.is_ascii_lowercase()
            || byte.is_ascii_digit()
            || byte == b'-'
            || (byte == b'.' && i > 0);
        if plain {
            escaped.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(escaped, "_{byte:02X}");
        }
    }
    if escaped.len() <= MAX_ORIGIN_SEGMENT {
        return escaped;
    }
    // Cut on an escape boundary: `_` only ever starts a three-byte escape.
    let bytes = escaped.as_bytes();
    let mut cut = LONG_ORIGIN_KEPT;
    while bytes[cut - 1] == b'_' || bytes[cut - 2] == b'_' {
        cut -= 1;
    }
    format!(
        "{}__{}",
        &escaped[..cut],
        hex::encode(Sha256::digest(origin.as_bytes()))
    )
}

/// A cosigned checkpoint ready to be archived: the note exactly as the witness
/// returned it, and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivedCheckpoint {
    origin: String,
    cosigned_at: u64,
    note: Vec<u8>,
    path: Path,
    sha256: [u8; 32],
}

impl ArchivedCheckpoint {
    /// Parses a cosigned checkpoint note and names its object:
    /// `checkpoints/<origin segment>/<size folder>/<size>-<cosigned at>-<sha256>.txt`,
    /// with the size zero-padded to 19 digits, the size folder the size rounded
    /// down to a multiple of [`SIZES_PER_FOLDER`] (also 19 digits), and the
    /// cosignature time as `YYYYMMDDTHHMMSSZ` (UTC). Sizes are zero-padded and
    /// times big-endian so that listing order is numeric order. The full digest
    /// in the name means two different notes never share one, even
    /// re-cosignatures of the same tree in the same second.
    pub fn new(origin: &str, cosigned_at: u64, note: &[u8]) -> Result<ArchivedCheckpoint> {
        let parsed = parse_note(note)?;
        let checkpoint = parse_checkpoint_text(parsed.text())?;
        if checkpoint.origin() != origin {
            return Err(Error::OriginMismatch {
                expected: origin.to_owned(),
                found: checkpoint.origin().to_owned(),
            });
        }
        let time = basic_timestamp(cosigned_at).ok_or_else(|| Error::Archive {
            detail: format!("cosignature time {cosigned_at} is after the year 9999"),
        })?;
        let sha256: [u8; 32] = Sha256::digest(note).into();
        let size = checkpoint.size();
        let name = format!(
            "{CHECKPOINTS_DIR}/{}/{:019}/{size:019}-{time}-{}.txt",
            origin_segment(origin),
            size_folder(size),
            hex::encode(sha256)
        );
        let path = Path::parse(&name).map_err(|e| Error::Archive {
            detail: format!("object name {name:?}: {e}"),
        })?;
        Ok(ArchivedCheckpoint {
            origin: origin.to_owned(),
            cosigned_at,
            note: note.to_vec(),
            path,
            sha256,
        })
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// When the witness cosigned it (seconds since the Unix epoch).
    pub fn cosigned_at(&self) -> u64 {
        self.cosigned_at
    }

    /// The note bytes stored.
    pub fn note(&self) -> &[u8] {
        &self.note
    }

    /// The object's name, relative to the archive's root.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SHA-256 of the note bytes.
    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }
}

/// The first tree size of the folder holding checkpoints of tree size `size`:
/// `size` rounded down to a multiple of [`SIZES_PER_FOLDER`].
pub fn size_folder(size: u64) -> u64 {
    size - size % SIZES_PER_FOLDER
}

/// The start of the period holding `second`: periods are aligned to multiples
/// of their length since the Unix epoch (hours start on the hour).
pub fn period_start(second: u64, period_seconds: u64) -> u64 {
    second - second % period_seconds.max(1)
}

/// The manifest of the checkpoints written in `[start, end]`:
/// `manifests/<start>-<end>.dsse.json` with both times as `YYYYMMDDTHHMMSSZ`.
pub fn manifest_path(start: u64, end: u64) -> Result<Path> {
    let (Some(start), Some(end)) = (basic_timestamp(start), basic_timestamp(end)) else {
        return Err(Error::Archive {
            detail: "manifest period is after the year 9999".to_owned(),
        });
    };
    Path::parse(format!("{MANIFESTS_DIR}/{start}-{end}.dsse.json")).map_err(|e| Error::Archive {
        detail: format!("manifest name: {e}"),
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339, UTC), or `None` after the year 9999.
pub fn rfc3339(second: u64) -> Option<String> {
    let time = UNIX_EPOCH.checked_add(Duration::from_secs(second))?;
    let mut text = String::new();
    // humantime refuses (with a formatting error) years after 9999.
    write!(text, "{}", humantime::format_rfc3339_seconds(time)).ok()?;
    Some(text)
}

/// `YYYYMMDDTHHMMSSZ` (ISO 8601 basic format, UTC): sortable and free of the
/// `:` that some filesystems and tools refuse in names.
fn basic_timestamp(second: u64) -> Option<String> {
    rfc3339(second).map(|text| text.replace(['-', ':'], ""))
}

/// A checkpoint of `example.org/log` at `size`, cosigned at 2026-01-01T00:00:00Z,
/// for the archive's unit tests.
#[cfg(test)]
pub(crate) fn test_checkpoint(size: u64) -> ArchivedCheckpoint {
    use base64::Engine as _;
    let root = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let note = format!("example.org/log\n{size}\n{root}\n\n\u{2014} w AAAAAAE=\n");
    ArchivedCheckpoint::new("example.org/log", 1_767_225_600, note.as_bytes()).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_as_utc_up_to_the_year_9999() {
        assert_eq!(rfc3339(951_782_400).unwrap(), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(253_402_300_799).unwrap(), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(253_402_300_800), None);
        assert_eq!(rfc3339(u64::MAX), None);
        assert_eq!(basic_timestamp(1_767_225_600).unwrap(), "20260101T000000Z");
    }

    #[test]
    fn a_growing_log_gets_a_new_folder_once_per_thousand_sizes_and_names_sort_by_size() {
        let name = |size| test_checkpoint(size).path().to_string();
        let digest = hex::encode(Sha256::digest(test_checkpoint(1_234_567).note()));
        assert_eq!(
            name(1_234_567),
            format!(
                "checkpoints/example.org_2Flog/0000000000001234000/\
                 0000000000001234567-20260101T000000Z-{digest}.txt"
            )
        );
        let folder = |size| {
            let name = name(size);
            name.rsplit_once('/').unwrap().0.to_owned()
        };
        assert_eq!(folder(1_234_000), folder(1_234_999));
        assert_ne!(folder(1_234_999), folder(1_235_000));
        assert_eq!(folder(0), folder(999));
        // Listing order is size order, across folders and within one.
        let sizes = [
            0,
            9,
            10,
            999,
            1_000,
            1_001,
            99_999,
            100_000,
            u64::from(u32::MAX),
        ];
        let names: Vec<String> = sizes.iter().map(|&s| name(s)).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        // The largest size still names a file within the 255-byte limit.
        let last = name(i64::MAX as u64);
        assert!(last.rsplit('/').next().unwrap().len() < 255, "{last}");
    }

    #[test]
    fn periods_align_to_their_length() {
        assert_eq!(period_start(1_767_229_199, 3_600), 1_767_225_600);
        assert_eq!(period_start(1_767_225_600, 3_600), 1_767_225_600);
        assert_eq!(period_start(17, 0), 17);
    }

    #[test]
    fn origin_dot_segments_cannot_traverse() {
        assert_eq!(origin_segment("."), "_2E");
        assert_eq!(origin_segment(".."), "_2E.");
        assert_eq!(origin_segment("../x"), "_2E._2Fx");
        assert_eq!(
            origin_segment("rekor.sigstore.dev - 1"),
            "rekor.sigstore.dev_20-_201"
        );
    }

    #[test]
    fn origins_differing_only_in_case_or_escapes_get_distinct_segments() {
        let origins = ["a", "A", "_41", "_", "__", "a_2Fb", "a/b", "a%2Fb", ""];
        let mut seen = std::collections::HashSet::new();
        for origin in origins {
            let segment = origin_segment(origin).to_ascii_lowercase();
            assert!(
                seen.insert(segment),
                "{origin:?} collides case-insensitively"
            );
        }
    }

    #[test]
    fn long_origins_are_cut_on_an_escape_boundary_and_stay_unique() {
        for filler in ["a", "/", "ü"] {
            let base = filler.repeat(255 / filler.len());
            let mut other = base.clone();
            other.pop();
            other.push('z');
            let (one, two) = (origin_segment(&base), origin_segment(&other));
            assert_ne!(one, two);
            for segment in [&one, &two] {
                assert!(segment.len() <= MAX_ORIGIN_SEGMENT, "{segment}");
                let (kept, digest) = segment.split_once("__").unwrap();
                assert_eq!(digest.len(), 64);
                assert!(!kept.ends_with('_') && kept.as_bytes()[kept.len() - 2] != b'_');
            }
        }
    }
}
