//! Signed messages of c2sp.org/tlog-cosignature.
//!
//! Both the verifier ([`crate::note::VerifierKey`]) and the signer build the exact
//! bytes here, so a cosignature is always over the message the spec defines.

use crate::merkle::Hash;
use crate::{Error, Result};

/// The Ed25519 cosignature/v1 message: `cosignature/v1\ntime <t>\n` followed by
/// the whole checkpoint note text (extension lines included).
pub fn cosignature_v1_message(timestamp: u64, checkpoint_text: &str) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{checkpoint_text}").into_bytes()
}

/// The ML-DSA-44 `cosigned_message`: label `subtree/v1\n\0`, length-prefixed
/// cosigner name, timestamp, length-prefixed origin, start, end and hash.
///
/// Names and origins must be 1 to 255 bytes, and a non-zero `start` requires a
/// zero timestamp, as the spec demands.
pub fn subtree_v1_message(
    cosigner_name: &str,
    timestamp: u64,
    origin: &str,
    start: u64,
    end: u64,
    hash: &Hash,
) -> Result<Vec<u8>> {
    let short = |field: &str| (1..=255).contains(&field.len());
    if !short(cosigner_name) || !short(origin) {
        return Err(Error::MalformedCheckpoint {
            reason: "cosigner name and origin must be 1 to 255 bytes",
        });
    }
    if start != 0 && timestamp != 0 {
        return Err(Error::MalformedCheckpoint {
            reason: "a subtree with a non-zero start must have a zero timestamp",
        });
    }
    if start > end {
        return Err(Error::MalformedCheckpoint {
            reason: "subtree start is after its end",
        });
    }
    let mut message = Vec::with_capacity(12 + 1 + cosigner_name.len() + 8 + 1 + origin.len() + 48);
    message.extend_from_slice(b"subtree/v1\n\0");
    message.push(cosigner_name.len() as u8);
    message.extend_from_slice(cosigner_name.as_bytes());
    message.extend_from_slice(&timestamp.to_be_bytes());
    message.push(origin.len() as u8);
    message.extend_from_slice(origin.as_bytes());
    message.extend_from_slice(&start.to_be_bytes());
    message.extend_from_slice(&end.to_be_bytes());
    message.extend_from_slice(&hash.0);
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosignature_v1_message_matches_spec_example() {
        let text =
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        assert_eq!(
            cosignature_v1_message(1679315147, text),
            b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
        );
    }

    #[test]
    fn subtree_message_layout_and_limits() {
        let hash = Hash([7; 32]);
        let message = subtree_v1_message("w", 5, "log", 0, 9, &hash).unwrap();
        assert_eq!(&message[..12], b"subtree/v1\n\0");
        assert_eq!(message.len(), 12 + 1 + 1 + 8 + 1 + 3 + 8 + 8 + 32);
        assert_eq!(&message[14..22], &5u64.to_be_bytes());
        assert!(subtree_v1_message(&"n".repeat(256), 0, "log", 0, 1, &hash).is_err());
        assert!(subtree_v1_message("w", 0, "", 0, 1, &hash).is_err());
        assert!(subtree_v1_message("w", 1, "log", 4, 8, &hash).is_err());
        assert!(subtree_v1_message("w", 0, "log", 4, 8, &hash).is_ok());
    }
}
