//! The Prometheus text exposition format (version 0.0.4): parsed strictly from
//! each service's `Metrics` answer, merged with a `service` label, serialized
//! again.
//!
//! Upstream text is untrusted: a service could be buggy, an older version, or
//! compromised. Nothing of it is copied through as raw text; every line is
//! parsed into names, labels and numbers that are checked against the format's
//! grammar, and the merged output is written from those values, so whatever a
//! service sends, the merged exposition parses. Like a Prometheus scrape, a
//! service's text with one malformed line is refused as a whole (its
//! `rekor_witness_scrape_up` is then 0) rather than half-used.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

/// Why a service's text was refused, with the 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: &'static str,
}

/// The type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl Kind {
    fn parse(text: &str) -> Option<Kind> {
        Some(match text {
            "counter" => Kind::Counter,
            "gauge" => Kind::Gauge,
            "histogram" => Kind::Histogram,
            "summary" => Kind::Summary,
            "untyped" => Kind::Untyped,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
            Kind::Untyped => "untyped",
        }
    }

    /// The suffixes a sample name may add to the family name.
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            Kind::Histogram => &["_bucket", "_sum", "_count"],
            Kind::Summary => &["_sum", "_count"],
            _ => &[],
        }
    }
}

/// Label names and their (unescaped) values, in order.
pub type Labels = Vec<(String, String)>;

/// One sample: label values are held unescaped.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

/// A metric family: its HELP (unescaped), its TYPE and its samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: Option<String>,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

/// The families of one exposition, in the order they appeared.
pub type Exposition = Vec<Family>;

/// Parses an exposition in the text format 0.0.4.
pub fn parse(text: &str) -> Result<Exposition, ParseError> {
    let mut families: Exposition = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (number, line) in text.split('\n').enumerate() {
        let error = |reason| ParseError {
            line: number + 1,
            reason,
        };
        let line = line.trim_start_matches([' ', '\t']);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim_start_matches([' ', '\t']);
            let (keyword, rest) = split_token(comment);
            if keyword != "HELP" && keyword != "TYPE" {
                continue; // An ordinary comment.
            }
            let (name, rest) = split_token(rest);
            if !is_metric_name(name) {
                return Err(error("HELP or TYPE names an invalid metric name"));
            }
            let family = family_for_declaration(&mut families, &mut index, name)
                .ok_or_else(|| error("HELP or TYPE after the family's samples or block"))?;
            if keyword == "HELP" {
                if family.help.is_some() {
                    return Err(error("second HELP for a family"));
                }
                family.help = Some(unescape_help(rest).ok_or_else(|| error("bad escape in HELP"))?);
            } else {
                let kind = Kind::parse(rest.trim_end_matches([' ', '\t']))
                    .ok_or_else(|| error("unknown TYPE"))?;
                if family.kind != Kind::Untyped || !family.samples.is_empty() {
                    return Err(error("second TYPE for a family, or TYPE after samples"));
                }
                family.kind = kind;
            }
            continue;
        }
        let sample = parse_sample(line).map_err(error)?;
        let family = family_for_sample(&mut families, &mut index, &sample.name)
            .ok_or_else(|| error("a family's samples are not contiguous"))?;
        check_special_labels(family, &sample).map_err(error)?;
        family.samples.push(sample);
    }
    Ok(families)
}

/// The family a HELP or TYPE line declares: the current family if it has the
/// name and no samples yet, else a new one (a name seen before is an error).
fn family_for_declaration<'a>(
    families: &'a mut Exposition,
    index: &mut HashMap<String, usize>,
    name: &str,
) -> Option<&'a mut Family> {
    let is_current = families
        .last()
        .is_some_and(|f| f.name == name && f.samples.is_empty());
    current_or_new_family(families, index, name, is_current)
}

/// The family a sample belongs to: the current family when the name is the
/// family's or one of its type's suffixed names, else a new untyped family.
fn family_for_sample<'a>(
    families: &'a mut Exposition,
    index: &mut HashMap<String, usize>,
    name: &str,
) -> Option<&'a mut Family> {
    let belongs = families.last().is_some_and(|f| {
        let own = f.name == name && f.kind != Kind::Histogram;
        own || f
            .kind
            .suffixes()
            .iter()
            .any(|suffix| name.strip_suffix(suffix) == Some(f.name.as_str()))
    });
    current_or_new_family(families, index, name, belongs)
}

/// The current (last) family when `current`, else a new untyped family named
/// `name`; `None` if that name already had a family (families must be
/// contiguous).
fn current_or_new_family<'a>(
    families: &'a mut Exposition,
    index: &mut HashMap<String, usize>,
    name: &str,
    current: bool,
) -> Option<&'a mut Family> {
    if !current {
        if index.contains_key(name) {
            return None;
        }
        index.insert(name.to_owned(), families.len());
        families.push(Family {
            name: name.to_owned(),
            help: None,
            kind: Kind::Untyped,
            samples: Vec::new(),
        });
    }
    families.last_mut()
}

/// Histogram buckets need a numeric `le`, summary quantiles a numeric
/// `quantile`: a Prometheus parser refuses them otherwise.
fn check_special_labels(family: &Family, sample: &Sample) -> Result<(), &'static str> {
    let required = match family.kind {
        Kind::Histogram if sample.name.ends_with("_bucket") => "le",
        Kind::Summary if sample.name == family.name => "quantile",
        _ => return Ok(()),
    };
    let value = sample
        .labels
        .iter()
        .find(|(name, _)| name == required)
        .ok_or("histogram bucket without le, or summary quantile without quantile")?;
    parse_float(&value.1).ok_or("le or quantile is not a number")?;
    Ok(())
}

fn parse_sample(line: &str) -> Result<Sample, &'static str> {
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err("invalid metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(after_brace)?;
        labels = parsed;
        rest = after;
    }
    let mut tokens = rest.split([' ', '\t']).filter(|t| !t.is_empty());
    let value = tokens
        .next()
        .and_then(parse_float)
        .ok_or("missing or invalid sample value")?;
    let timestamp_ms = match tokens.next() {
        None => None,
        Some(token) => Some(token.parse::<i64>().map_err(|_| "invalid timestamp")?),
    };
    if tokens.next().is_some() {
        return Err("trailing text after the sample");
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
        timestamp_ms,
    })
}

/// Parses `name="value",...}` (the opening brace already consumed); returns
/// the labels and the text after the closing brace.
fn parse_labels(mut text: &str) -> Result<(Labels, &str), &'static str> {
    let mut labels: Labels = Vec::new();
    loop {
        text = text.trim_start_matches([' ', '\t']);
        if let Some(after) = text.strip_prefix('}') {
            return Ok((labels, after));
        }
        let name_end = text
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or("unterminated label set")?;
        let name = &text[..name_end];
        if !is_label_name(name) || name.starts_with("__") {
            return Err("invalid or reserved label name");
        }
        if labels.iter().any(|(existing, _)| existing == name) {
            return Err("duplicate label name");
        }
        text = text[name_end..].trim_start_matches([' ', '\t']);
        text = text.strip_prefix('=').ok_or("label without =")?;
        text = text.trim_start_matches([' ', '\t']);
        text = text.strip_prefix('"').ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = text.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value"),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    _ => return Err("bad escape in label value"),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((name.to_owned(), value));
        text = text[end + 1..].trim_start_matches([' ', '\t']);
        if let Some(after) = text.strip_prefix(',') {
            text = after;
        } else if !text.starts_with('}') {
            return Err("labels not separated by commas");
        }
    }
}

/// A sample value or `le`/`quantile` label: a Go-style float, with `+Inf`,
/// `-Inf` and `NaN` (any case, as Prometheus accepts).
fn parse_float(text: &str) -> Option<f64> {
    let valid = !text.is_empty()
        && text.chars().all(|c| {
            c.is_ascii_digit()
                || matches!(c, '.' | '+' | '-' | 'e' | 'E')
                || c.is_ascii_alphabetic()
        });
    if !valid {
        return None;
    }
    match text.to_ascii_lowercase().as_str() {
        "+inf" | "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        lower if lower.chars().any(|c| c.is_ascii_alphabetic() && c != 'e') => None,
        _ => text.parse().ok(),
    }
}

fn split_token(text: &str) -> (&str, &str) {
    match text.find([' ', '\t']) {
        Some(end) => (&text[..end], text[end..].trim_start_matches([' ', '\t'])),
        None => (text, ""),
    }
}

fn unescape_help(text: &str) -> Option<String> {
    let mut help = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('\\') => help.push('\\'),
                Some('n') => help.push('\n'),
                _ => return None,
            }
        } else {
            help.push(c);
        }
    }
    Some(help)
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The label every merged sample carries, naming the service it came from.
pub const SERVICE_LABEL: &str = "service";
/// Where a service's own `service` label moves to (Prometheus's convention
/// for a label the scraper overrides).
const EXPORTED_SERVICE_LABEL: &str = "exported_service";

/// What merging dropped: a family one service declares with another type than
/// an earlier service (Prometheus cannot hold one name with two types).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeConflict {
    pub service: &'static str,
    pub family: String,
}

/// Merges the expositions of several services into one: every sample gets
/// `service="<name>"` first among its labels; the families of the same name
/// from different services become one block with one HELP and TYPE (the first
/// service's HELP); a series repeated within a service is kept once.
pub fn merge(sources: Vec<(&'static str, Exposition)>) -> (String, Vec<TypeConflict>) {
    let mut merged: Vec<Family> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut conflicts = Vec::new();
    let mut seen: HashSet<(String, Vec<(String, String)>)> = HashSet::new();
    for (service, families) in sources {
        for family in families {
            let slot = match index.get(&family.name) {
                Some(&slot) => slot,
                None => {
                    index.insert(family.name.clone(), merged.len());
                    merged.push(Family {
                        name: family.name.clone(),
                        help: None,
                        kind: family.kind,
                        samples: Vec::new(),
                    });
                    merged.len() - 1
                }
            };
            let Some(target) = merged.get_mut(slot) else {
                continue;
            };
            if target.kind != family.kind {
                conflicts.push(TypeConflict {
                    service,
                    family: family.name,
                });
                continue;
            }
            if target.help.is_none() {
                target.help = family.help;
            }
            for mut sample in family.samples {
                relabel(&mut sample.labels, service);
                if seen.insert((sample.name.clone(), sample.labels.clone())) {
                    target.samples.push(sample);
                }
            }
        }
    }
    (serialize(&merged), conflicts)
}

/// Puts `service="<service>"` first; a service label the sample already had
/// moves to `exported_service` (dropped if that is taken too).
fn relabel(labels: &mut Vec<(String, String)>, service: &str) {
    let taken = labels
        .iter()
        .any(|(name, _)| name == EXPORTED_SERVICE_LABEL);
    labels.retain_mut(|(name, _)| {
        if name != SERVICE_LABEL {
            return true;
        }
        if taken {
            return false;
        }
        *name = EXPORTED_SERVICE_LABEL.to_owned();
        true
    });
    labels.insert(0, (SERVICE_LABEL.to_owned(), service.to_owned()));
}

/// Writes families in the text format 0.0.4.
pub fn serialize(families: &[Family]) -> String {
    let mut out = String::new();
    for family in families {
        if let Some(help) = &family.help {
            let help = help.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(out, "# HELP {} {help}", family.name);
        }
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.as_str());
        for sample in &family.samples {
            out.push_str(&sample.name);
            if !sample.labels.is_empty() {
                out.push('{');
                for (i, (name, value)) in sample.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let value = value
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n");
                    let _ = write!(out, "{name}=\"{value}\"");
                }
                out.push('}');
            }
            let _ = write!(out, " {}", format_float(sample.value));
            if let Some(timestamp) = sample.timestamp_ms {
                let _ = write!(out, " {timestamp}");
            }
            out.push('\n');
        }
    }
    out
}

/// A float as Prometheus reads it back exactly (`{:?}` round-trips).
fn format_float(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{value:?}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const WITNESS: &str = "# HELP requests_total Requests by method\n\
        # TYPE requests_total counter\n\
        requests_total{method=\"add\"} 3\n\
        requests_total{method=\"sign\"} 1 1700000000000\n\
        # HELP latency_seconds Latency\n\
        # TYPE latency_seconds histogram\n\
        latency_seconds_bucket{le=\"0.1\"} 1\n\
        latency_seconds_bucket{le=\"+Inf\"} 2\n\
        latency_seconds_sum 0.3\n\
        latency_seconds_count 2\n";

    #[test]
    fn parses_families_with_their_suffixed_samples() {
        let families = parse(WITNESS).unwrap();
        assert_eq!(families.len(), 2);
        assert_eq!(families[0].kind, Kind::Counter);
        assert_eq!(families[0].samples[1].timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(families[1].kind, Kind::Histogram);
        assert_eq!(families[1].samples.len(), 4);
        assert_eq!(
            families[1].samples[1].labels,
            vec![("le".to_owned(), "+Inf".to_owned())]
        );
        assert_eq!(families[1].samples[1].value, 2.0);
    }

    #[test]
    fn escaped_quotes_and_braces_in_label_values_survive_a_round_trip() {
        let text = "# TYPE m gauge\nm{a=\"x\\\"},y=\\\"z\",b=\"back\\\\slash\\nnl\"} 1\n";
        let families = parse(text).unwrap();
        assert_eq!(
            families[0].samples[0].labels,
            vec![
                ("a".to_owned(), "x\"},y=\"z".to_owned()),
                ("b".to_owned(), "back\\slash\nnl".to_owned())
            ]
        );
        let again = parse(&serialize(&families)).unwrap();
        assert_eq!(again, families);
    }

    #[test]
    fn malformed_upstream_text_is_refused_with_its_line() {
        for (text, line) in [
            ("m{a=\"unterminated} 1\n", 1),
            ("# TYPE m gauge\nm{a=\"x\"} one\n", 2),
            ("m{a=\"x\",a=\"y\"} 1\n", 1),
            ("m{__name__=\"x\"} 1\n", 1),
            ("m{a=\"\\q\"} 1\n", 1),
            ("m 1 2 3\n", 1),
            ("9m 1\n", 1),
            ("m{a=\"x\"b=\"y\"} 1\n", 1),
            ("# TYPE m gauge\n# TYPE m counter\n", 2),
            ("# TYPE m bogus\n", 1),
            ("m 1\nn 1\nm 2\n", 3),
            ("# TYPE h histogram\nh_bucket 1\n", 2),
            ("# TYPE s summary\ns{quantile=\"high\"} 1\n", 2),
            ("m infinity\n", 1),
            ("m 0x10\n", 1),
        ] {
            let error = parse(text).unwrap_err();
            assert_eq!(error.line, line, "{text:?}: {error}");
        }
    }

    #[test]
    fn merged_families_carry_the_service_label_and_one_help_and_type() {
        let signer = "# HELP requests_total Signer requests\n# TYPE requests_total counter\n\
            requests_total{method=\"cosign\",service=\"inner\"} 5\n";
        let (text, conflicts) = merge(vec![
            ("witness", parse(WITNESS).unwrap()),
            ("signer", parse(signer).unwrap()),
        ]);
        assert!(conflicts.is_empty());
        assert_eq!(text.matches("# TYPE requests_total counter").count(), 1);
        assert_eq!(text.matches("# HELP requests_total").count(), 1);
        assert!(text.contains("requests_total{service=\"witness\",method=\"add\"} 3.0\n"));
        assert!(text.contains(
            "requests_total{service=\"signer\",method=\"cosign\",exported_service=\"inner\"} 5.0\n"
        ));
        // The merged text parses, and every sample of a family is in one block.
        let families = parse(&text).unwrap();
        assert_eq!(families[0].samples.len(), 3);
    }

    #[test]
    fn a_family_with_another_type_from_a_later_service_is_dropped_not_mixed() {
        let (text, conflicts) = merge(vec![
            ("witness", parse("# TYPE m counter\nm 1\n").unwrap()),
            ("signer", parse("# TYPE m gauge\nm 2\n").unwrap()),
        ]);
        assert_eq!(
            conflicts,
            vec![TypeConflict {
                service: "signer",
                family: "m".into()
            }]
        );
        assert!(!text.contains("signer"));
        parse(&text).unwrap();
    }

    /// Lines shaped like the format, with hostile label values and HELP text,
    /// in any order: many parse, many do not.
    fn exposition_lines() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let name = "[ab]{1,2}";
        let label_value = r#"([a-z"{},=\\ ]|\\\\|\\"|\\n){0,6}"#;
        let label = (
            prop_oneof!["le", "quantile", "service", "exported_service", "x"],
            label_value,
        )
            .prop_map(|(n, v)| format!("{n}=\"{v}\""));
        let labels = proptest::collection::vec(label, 0..3).prop_map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", l.join(","))
            }
        });
        let value = prop_oneof![
            "[0-9]{1,3}",
            "[0-9]\\.[0-9]e[+-][0-9]",
            "\\+Inf",
            "-Inf",
            "NaN",
            "0\\.5"
        ];
        let sample = (
            name,
            prop_oneof!["", "_bucket", "_sum", "_count"],
            labels,
            value,
        )
            .prop_map(|(n, s, l, v)| format!("{n}{s}{l} {v}"));
        let kind = prop_oneof!["counter", "gauge", "histogram", "summary", "untyped"];
        let line = prop_oneof![
            3 => sample,
            1 => (name, kind).prop_map(|(n, k)| format!("# TYPE {n} {k}")),
            1 => (name, r"([a-z ]|\\\\|\\n){0,8}").prop_map(|(n, h)| format!("# HELP {n} {h}")),
        ];
        proptest::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n"))
    }

    proptest::proptest! {
        /// Whatever a service sends, parsing never panics, and what parses
        /// merges into text that parses again, every sample labelled with
        /// its service.
        #[test]
        fn any_upstream_text_merges_into_parseable_text(text in exposition_lines()) {
            if let Ok(families) = parse(&text) {
                let samples: usize = families.iter().map(|f| f.samples.len()).sum();
                let (merged, _) = merge(vec![("witness", families)]);
                let again = parse(&merged).unwrap();
                let kept: usize = again.iter().map(|f| f.samples.len()).sum();
                proptest::prop_assert!(kept <= samples);
                for family in &again {
                    for sample in &family.samples {
                        proptest::prop_assert_eq!(&sample.labels[0].1, "witness");
                    }
                }
            }
        }
    }

    #[test]
    fn a_series_repeated_by_one_service_is_kept_once() {
        let (text, _) = merge(vec![(
            "witness",
            parse("m{a=\"1\"} 1\nm{a=\"1\"} 2\n").unwrap(),
        )]);
        assert_eq!(text.matches("m{").count(), 1);
    }
}
