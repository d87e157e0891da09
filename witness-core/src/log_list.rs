//! The witness network's log-list format (`logs/v0`): which logs a witness
//! should accept checkpoints from, with their keys and request quotas.
//!
//! Format: blank lines and `#` comments are ignored, other lines are trimmed;
//! the first line is `logs/v0`; each log is `vkey VKEY`, an optional
//! `origin ORIGIN`, `qpd QPD` and `contact CONTACT`, in that order. Only
//! Ed25519 (type 0x01) keys are permitted. `QPD` is in [1, 2^31) with no
//! leading zeros. The origin defaults to the vkey's key name.

use crate::note::{SignatureType, VerifierKey};
use crate::{Error, Result};

/// The largest list parsed: the public network's 40,000-log profile is a few
/// MiB of text; 64 MiB refuses abuse with room for growth.
pub const MAX_LOG_LIST_SIZE: usize = 64 << 20;

/// A log listed for witnessing.
#[derive(Clone, Debug)]
pub struct ListedLog {
    pub key: VerifierKey,
    pub origin: String,
    /// `add-checkpoint` requests per day the log may make.
    pub qpd: u32,
    pub contact: String,
}

fn malformed(reason: &'static str) -> Error {
    Error::MalformedJson {
        what: "log list",
        detail: reason.to_owned(),
    }
}

/// Parses a `logs/v0` list.
pub fn parse_log_list(text: &str) -> Result<Vec<ListedLog>> {
    if text.len() > MAX_LOG_LIST_SIZE {
        return Err(Error::TooLarge {
            what: "log list",
            size: text.len(),
            max: MAX_LOG_LIST_SIZE,
        });
    }
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .peekable();
    if lines.next() != Some("logs/v0") {
        return Err(malformed("the list does not start with logs/v0"));
    }
    let mut logs = Vec::new();
    while let Some(line) = lines.next() {
        let vkey = line
            .strip_prefix("vkey ")
            .ok_or_else(|| malformed("expected a vkey line"))?;
        let key = VerifierKey::parse_vkey(vkey.trim())?;
        if key.signature_type() != SignatureType::Ed25519 {
            return Err(malformed("only Ed25519 (type 0x01) log keys are permitted"));
        }
        let origin = match lines.peek().and_then(|l| l.strip_prefix("origin ")) {
            Some(origin) => {
                let origin = origin.trim().to_owned();
                lines.next();
                origin
            }
            None => key.name().to_owned(),
        };
        if origin.is_empty() {
            return Err(malformed("empty origin"));
        }
        let qpd = lines
            .next()
            .and_then(|l| l.strip_prefix("qpd "))
            .map(str::trim)
            .ok_or_else(|| malformed("expected a qpd line"))?;
        let qpd = parse_qpd(qpd)?;
        let contact = lines
            .next()
            .and_then(|l| l.strip_prefix("contact "))
            .map(|c| c.trim().to_owned())
            .ok_or_else(|| malformed("expected a contact line"))?;
        logs.push(ListedLog {
            key,
            origin,
            qpd,
            contact,
        });
    }
    Ok(logs)
}

fn parse_qpd(text: &str) -> Result<u32> {
    let canonical =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && !text.starts_with('0');
    let value = text
        .parse::<u32>()
        .ok()
        .filter(|v| canonical && *v < (1 << 31));
    value.ok_or_else(|| malformed("qpd must be a decimal in [1, 2^31) without leading zeros"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOO: &str = "tlog.foo.org+aaaaaa+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    fn list(body: &str) -> String {
        format!("# comment\nlogs/v0\n\n{body}")
    }

    #[test]
    fn spec_shape_parses_with_and_without_origin() {
        let key = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
        let text = list(&format!(
            "vkey {key}\nqpd 86400\ncontact a\n\n  vkey {key}  \norigin other origin\nqpd 24\ncontact b (at) c\n"
        ));
        let logs = parse_log_list(&text).unwrap();
        assert_eq!(logs.len(), 2);
        assert_eq!(logs[0].origin, "example.com/foo");
        assert_eq!(logs[0].qpd, 86400);
        assert_eq!(logs[1].origin, "other origin");
        assert_eq!(logs[1].contact, "b (at) c");
    }

    #[test]
    fn out_of_order_or_bad_lines_are_refused() {
        let key = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
        for body in [
            format!("vkey {key}\ncontact a\nqpd 1\n"),
            format!("vkey {key}\nqpd 01\ncontact a\n"),
            format!("vkey {key}\nqpd 2147483648\ncontact a\n"),
            format!("vkey {key}\nqpd 0\ncontact a\n"),
            format!("vkey {key}\nqpd 1\n"),
            format!("vkey {FOO}\nqpd 1\ncontact a\n"),
            "qpd 1\n".to_owned(),
        ] {
            assert!(parse_log_list(&list(&body)).is_err(), "{body}");
        }
        assert!(parse_log_list("logs/v1\n").is_err());
    }
}
