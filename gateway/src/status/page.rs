//! The HTML status page: one table row per log, rendered on the server with
//! no script. Every value that reaches the page is escaped: origins and key
//! names come from the configuration or the admin API, and a note name may
//! hold `<`, `>`, `&`, quotes (anything but spaces and `+`).

use std::fmt::Write as _;

use super::LogStatus;

/// Nothing but the page's own inline style: no script, no frame, no form, no
/// external load, even if escaping were ever wrong.
pub(super) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}\
table{border-collapse:collapse}th,td{border-bottom:1px solid #ddd;padding:.35rem .7rem;\
text-align:left;vertical-align:top}td.size{text-align:right;font-variant-numeric:tabular-nums}\
code{font-size:.85em}.cosigned{color:#065f46}.awaiting{color:#92400e}";

/// Escapes text for an HTML text node or a quoted attribute value.
pub(super) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// The page for `logs`, stamped with `generated_at` (RFC 3339).
pub(super) fn render(logs: &[LogStatus], generated_at: &str) -> String {
    let cosigned = logs
        .iter()
        .filter(|log| log.last_cosigned.is_some())
        .count();
    let mut html = String::with_capacity(1024 + logs.len() * 512);
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Witness status</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>Witness status</h1>\n\
         <p id=\"summary\">{total} logs, {cosigned} cosigned. As of \
         <time datetime=\"{at}\">{at}</time>. Also as <a href=\"/logs\">JSON</a>.</p>\n\
         <table id=\"logs\">\n<thead><tr><th>Origin</th><th>Mode</th><th>Size</th>\
         <th>Last cosigned (UTC)</th><th>State</th><th>Keys</th></tr></thead>\n<tbody>\n",
        total = logs.len(),
        at = escape(generated_at),
    );
    for log in logs {
        let state_class = match log.state {
            super::LogState::Cosigned => "cosigned",
            super::LogState::AwaitingFirstCheckpoint => "awaiting",
        };
        let _ = write!(
            html,
            "<tr data-origin-hash=\"{hash}\">\
             <td class=\"origin\"><a href=\"{path}\">{origin}</a></td>\
             <td class=\"mode\">{mode} <small>({feed})</small></td>\
             <td class=\"size\">{size}</td>\
             <td class=\"cosigned-at\">",
            hash = escape(&log.origin_hash),
            path = escape(&log.monitoring_path),
            origin = escape(&log.origin),
            mode = log.mode.label(),
            feed = escape(&log.feed),
            size = log.size,
        );
        match &log.last_cosigned {
            Some(time) => {
                let _ = write!(
                    html,
                    "<time datetime=\"{at}\">{at}</time>",
                    at = escape(&time.rfc3339)
                );
            }
            None => html.push_str("never"),
        }
        let _ = write!(
            html,
            "</td><td class=\"state {state_class}\">{state}</td><td class=\"keys\">",
            state = log.state.label(),
        );
        for key in &log.keys {
            let _ = write!(
                html,
                "<code title=\"{vkey}\">{name}+{id}</code><br>",
                vkey = escape(&key.vkey),
                name = escape(&key.name),
                id = escape(&key.key_id),
            );
        }
        html.push_str("</td></tr>\n");
    }
    html.push_str("</tbody>\n</table>\n</body>\n</html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_markup_character_is_escaped() {
        assert_eq!(
            escape(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
        assert_eq!(
            escape("rekor.sigstore.dev - 1193050959916656506"),
            "rekor.sigstore.dev - 1193050959916656506"
        );
    }
}
