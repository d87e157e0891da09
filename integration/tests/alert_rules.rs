//! The monitoring deliverables of issue 6: `deploy/prometheus/witness-alerts.yml`
//! passes `promtool check rules`; its unit tests (`witness-alerts.test.yml`)
//! pass, cover every alert both firing and not firing, and fail when a rule
//! is altered; and every metric and label the rules and the Grafana dashboard
//! (`deploy/grafana/witness-dashboard.json`) use is one the code exports, so
//! renaming a metric breaks this test.
//!
//! The exported names come from real expositions: the witness's and the
//! signer's metric objects (every recorder called once, since OpenTelemetry
//! counters appear at their first increment) merged by the gateway's own
//! merge code, and a real gateway (`gateway::run`, in process) scraped over
//! HTTP with its witness and signer unreachable, which is what makes its
//! request, upstream-error and `rekor_witness_scrape_up` families appear.
//!
//! Needs `promtool` (Debian package `prometheus`, which `scripts/test`
//! installs); path from `WITNESS_TEST_PROMTOOL`, default `promtool`. Fails,
//! not skips, without it.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use gateway::metrics::exposition;

const RULES: &str = "deploy/prometheus/witness-alerts.yml";
const RULE_TESTS: &str = "deploy/prometheus/witness-alerts.test.yml";
const DASHBOARD: &str = "deploy/grafana/witness-dashboard.json";

/// Labels every scraped series gets from its target.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

fn repo_file(path: &str) -> PathBuf {
    integration::repo_root().join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_file(path)).unwrap()
}

/// `promtool ARGS...` in `dir`: whether it succeeded, and its output.
fn promtool(dir: &Path, args: &[&str]) -> (bool, String) {
    let program = std::env::var("WITNESS_TEST_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let output = Command::new(&program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {program}: {e}: install the Debian package `prometheus` (scripts/test does) \
                 or set WITNESS_TEST_PROMTOOL"
            )
        });
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), report)
}

/// One alerting rule as written in the rules file.
#[derive(Debug)]
struct Alert {
    name: String,
    expr: String,
    /// The rule's whole text (labels and annotation templates included).
    block: String,
}

/// The alerts of a rules file laid out as ours is (`- alert:` items, `expr:`
/// inline or as a `|` block). A minimal reader for our own file, checked
/// against promtool's rule count.
fn alerts(rules: &str) -> Vec<Alert> {
    let mut alerts: Vec<Alert> = Vec::new();
    let lines: Vec<&str> = rules.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(name) = line.trim_start().strip_prefix("- alert:") {
            alerts.push(Alert {
                name: name.trim().to_owned(),
                expr: String::new(),
                block: String::new(),
            });
        } else if let Some(alert) = alerts.last_mut()
            && let Some(inline) = line.trim_start().strip_prefix("expr:")
        {
            let indent = line.len() - line.trim_start().len();
            if inline.trim() == "|" {
                let mut expr = String::new();
                while i + 1 < lines.len()
                    && (lines[i + 1].trim().is_empty()
                        || lines[i + 1].len() - lines[i + 1].trim_start().len() > indent)
                {
                    i += 1;
                    expr.push_str(lines[i].trim());
                    expr.push('\n');
                    alert.block.push_str(lines[i]);
                    alert.block.push('\n');
                }
                alert.expr = expr;
            } else {
                alert.expr = inline.trim().to_owned();
            }
        }
        if let Some(alert) = alerts.last_mut() {
            alert.block.push_str(line);
            alert.block.push('\n');
        }
        i += 1;
    }
    alerts
}

/// The metric names and label names a PromQL expression mentions. Label
/// names: matchers, `by`/`without`/`on`/`ignoring`/`group_*` lists. Strings,
/// durations, numbers and Grafana variables (`$job`, `$__rate_interval`) are
/// skipped; an identifier followed by `(` is a function, and aggregation
/// names are never metrics.
fn promql_names(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    const LABEL_LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: [&str; 7] = ["and", "or", "unless", "bool", "offset", "inf", "nan"];
    // Aggregations may put `by (...)` between their name and their argument.
    const AGGREGATIONS: [&str; 12] = [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let (mut metrics, mut labels) = (BTreeSet::new(), BTreeSet::new());
    let is_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let is_part = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let skip_string = |mut i: usize| {
        let quote = chars[i];
        i += 1;
        while i < chars.len() && chars[i] != quote {
            i += if chars[i] == '\\' { 2 } else { 1 };
        }
        i + 1
    };
    let ident_at = |mut i: usize| {
        let start = i;
        while i < chars.len() && is_part(chars[i]) {
            i += 1;
        }
        (chars[start..i].iter().collect::<String>(), i)
    };
    let next_non_space = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        i
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(i);
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
        } else if c == '{' {
            // Matchers: label names outside the quoted values.
            i += 1;
            while i < chars.len() && chars[i] != '}' {
                if chars[i] == '"' || chars[i] == '\'' || chars[i] == '`' {
                    i = skip_string(i);
                } else if is_start(chars[i]) {
                    let (name, end) = ident_at(i);
                    labels.insert(name);
                    i = end;
                } else {
                    i += 1;
                }
            }
            i += 1;
        } else if c == '$' {
            // A Grafana variable.
            let (_, end) = ident_at(i + 1);
            i = end.max(i + 1);
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (is_part(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if is_start(c) {
            let (name, end) = ident_at(i);
            let after = next_non_space(end);
            if LABEL_LISTS.contains(&name.as_str()) {
                i = end;
                if after < chars.len() && chars[after] == '(' {
                    i = after + 1;
                    while i < chars.len() && chars[i] != ')' {
                        if is_start(chars[i]) {
                            let (label, end) = ident_at(i);
                            labels.insert(label);
                            i = end;
                        } else {
                            i += 1;
                        }
                    }
                }
            } else {
                let is_call = after < chars.len() && chars[after] == '(';
                let keyword =
                    KEYWORDS.contains(&name.as_str()) || AGGREGATIONS.contains(&name.as_str());
                if !is_call && !keyword {
                    metrics.insert(name);
                }
                i = end;
            }
        } else {
            i += 1;
        }
    }
    (metrics, labels)
}

/// Sample name → label names, of every sample the code exports.
type Exported = BTreeMap<String, BTreeSet<String>>;

fn collect(exported: &mut Exported, text: &str) {
    let families = exposition::parse(text).unwrap_or_else(|e| panic!("{e:?} in:\n{text}"));
    for family in families {
        for sample in family.samples {
            exported
                .entry(sample.name)
                .or_default()
                .extend(sample.labels.into_iter().map(|(name, _)| name));
        }
    }
}

/// What the code exports: see the module documentation.
async fn exported_by_the_code() -> Exported {
    use witness_core::Error;
    use witness_core::service::metrics::WitnessMetrics;

    let witness = WitnessMetrics::new().unwrap();
    let log = "rekor.example/log";
    witness.verify_failure(log, &Error::NoTrustedSignature);
    witness.cosignature(log, Ok(()));
    witness.misbehaviour(log, &Error::RootMismatch { size: 7 });
    witness.request("AddCheckpoint", Duration::from_millis(3));
    witness.signer_call("cosign_checkpoints", true, Duration::from_millis(2));
    witness.durable_write("state", true, Duration::from_millis(1));
    witness.fetch(log, "checkpoint", Ok(()));
    witness.archive_write("checkpoint", true);
    witness.archive_oldest_unarchived(Some(1));
    witness.cosigned_at(log, 1);
    witness.backfill_queue_depth(log, 5);
    witness
        .tls()
        .certificate_loaded("grpc_server", 1_900_000_000);

    let signer = signer_svc::metrics::Metrics::new(Arc::new(
        signer_svc::fork_guard::CommitCounters::default(),
    ))
    .unwrap();
    signer.operation("cosign_checkpoint", "witness", Ok(()));
    signer.operation(
        "cosign_checkpoint",
        "witness",
        Err(&signer_svc::error::Error::PermissionDenied),
    );
    signer.signing("ed25519", Duration::from_millis(1));

    let (merged, conflicts) = exposition::merge(vec![
        ("witness", exposition::parse(&witness.render()).unwrap()),
        ("signer", exposition::parse(&signer.render()).unwrap()),
    ]);
    assert!(conflicts.is_empty(), "{conflicts:?}");
    let mut exported = Exported::new();
    collect(&mut exported, &merged);

    // A real gateway whose witness and signer are unreachable: its own
    // families and rekor_witness_scrape_up{service} 0 for both.
    let unreachable = integration::process::free_loopback_addr().unwrap();
    let mut config = gateway::GatewayConfig::new(format!("http://{unreachable}"));
    config.signer = Some(gateway::Upstream::plaintext(format!(
        "http://{unreachable}"
    )));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        gateway::run(listener, &config, async {
            let _ = stopped.await;
        })
        .await
    });
    let client = reqwest::Client::new();
    let mut scrape = String::new();
    // The second scrape shows the first one's request and upstream errors.
    for _ in 0..2 {
        let response = client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        scrape = response.text().await.unwrap();
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    assert!(
        scrape.contains("rekor_witness_scrape_up{service=\"signer\"} 0"),
        "{scrape}"
    );
    collect(&mut exported, &scrape);

    // Prometheus's own series per target.
    exported.insert("up".into(), BTreeSet::new());
    for labels in exported.values_mut() {
        labels.extend(TARGET_LABELS.map(String::from));
    }
    exported
}

/// Problems of one expression (and the labels its templates use) against
/// what the code exports.
fn check_expr(
    exported: &Exported,
    context: &str,
    expr: &str,
    template_labels: &BTreeSet<String>,
) -> Vec<String> {
    let (metrics, labels) = promql_names(expr);
    let mut problems = Vec::new();
    if metrics.is_empty() {
        problems.push(format!("{context}: no metric found in {expr:?}"));
    }
    let mut known_labels = BTreeSet::new();
    for metric in &metrics {
        match exported.get(metric) {
            Some(labels) => known_labels.extend(labels.iter().cloned()),
            None => problems.push(format!(
                "{context}: metric {metric} is not exported by the code"
            )),
        }
    }
    for label in labels.iter().chain(template_labels) {
        if !known_labels.contains(label) {
            problems.push(format!(
                "{context}: label {label} is on none of {metrics:?} as the code exports them"
            ));
        }
    }
    problems
}

/// The `X` of every `$labels.X` in a rule's templates.
fn template_labels(block: &str) -> BTreeSet<String> {
    block
        .split("$labels.")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// The `X` of every `{{X}}` in a Grafana legend.
fn legend_labels(legend: &str) -> BTreeSet<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|rest| {
            rest.split_once("}}")
                .map(|(label, _)| label.trim().to_owned())
        })
        .collect()
}

fn check_rules(exported: &Exported, rules: &str) -> Vec<String> {
    alerts(rules)
        .iter()
        .flat_map(|alert| {
            check_expr(
                exported,
                &alert.name,
                &alert.expr,
                &template_labels(&alert.block),
            )
        })
        .collect()
}

fn check_dashboard(exported: &Exported, dashboard: &serde_json::Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut targets = 0;
    let mut panels: Vec<&serde_json::Value> =
        dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            targets += 1;
            let context = format!("panel {:?}", panel["title"]);
            let expr = target["expr"].as_str().unwrap();
            let legend = target["legendFormat"].as_str().unwrap_or("");
            problems.extend(check_expr(exported, &context, expr, &legend_labels(legend)));
        }
    }
    assert!(targets > 0, "the dashboard has no queries");
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        let Some(query) = variable["query"]["query"].as_str() else {
            continue;
        };
        let context = format!("variable {:?}", variable["name"]);
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
            .unwrap_or_else(|| panic!("{context}: not label_values(SELECTOR, LABEL): {query}"));
        let (selector, label) = inner;
        let label = BTreeSet::from([label.trim().to_owned()]);
        problems.extend(check_expr(exported, &context, selector, &label));
    }
    problems
}

#[test]
fn rules_pass_promtool_check_and_every_rule_is_read() {
    let (ok, report) = promtool(&integration::repo_root(), &["check", "rules", RULES]);
    assert!(ok, "promtool check rules failed:\n{report}");
    let found: usize = report
        .split("SUCCESS: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rule count in:\n{report}"));
    let alerts = alerts(&read(RULES));
    assert_eq!(alerts.len(), found, "alerts read: {alerts:#?}");
    for alert in &alerts {
        assert!(!alert.expr.is_empty(), "{} has no expression", alert.name);
    }
}

#[test]
fn unit_tests_pass_and_cover_every_alert_firing_and_not_firing() {
    let (ok, report) = promtool(&integration::repo_root(), &["test", "rules", RULE_TESTS]);
    assert!(ok, "promtool test rules failed:\n{report}");

    // Each `alertname:` is followed by `exp_alerts: []` (not firing) or by a
    // list of expected alerts (firing).
    let tests = read(RULE_TESTS);
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for (i, line) in lines.iter().enumerate() {
        if let Some(name) = line.strip_prefix("alertname:") {
            let next = lines[i + 1..].iter().find(|l| !l.is_empty()).unwrap();
            match *next {
                "exp_alerts: []" => quiet.insert(name.trim().to_owned()),
                "exp_alerts:" => firing.insert(name.trim().to_owned()),
                other => panic!("unexpected line after {line}: {other}"),
            };
        }
    }
    for alert in alerts(&read(RULES)) {
        assert!(
            firing.contains(&alert.name),
            "no firing case for {}",
            alert.name
        );
        assert!(
            quiet.contains(&alert.name),
            "no not-firing case for {}",
            alert.name
        );
    }
}

/// Copies the rules and their tests into a temp dir with `from` replaced by
/// `to` in the rules; the failing `promtool test rules` report.
fn unit_tests_with_altered_rules(from: &str, to: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let rules = read(RULES);
    assert_eq!(rules.matches(from).count(), 1, "{from:?} must occur once");
    std::fs::write(
        dir.path().join("witness-alerts.yml"),
        rules.replace(from, to),
    )
    .unwrap();
    std::fs::write(dir.path().join("witness-alerts.test.yml"), read(RULE_TESTS)).unwrap();
    let (ok, report) = promtool(dir.path(), &["check", "rules", "witness-alerts.yml"]);
    assert!(ok, "the altered rules must still be valid:\n{report}");
    let (ok, report) = promtool(dir.path(), &["test", "rules", "witness-alerts.test.yml"]);
    assert!(
        !ok,
        "the unit tests passed with {from:?} changed to {to:?}:\n{report}"
    );
    report
}

#[test]
fn unit_tests_fail_when_the_checkpoint_age_threshold_moves() {
    let report = unit_tests_with_altered_rules(
        "witness_checkpoint_age_seconds > 5400",
        "witness_checkpoint_age_seconds > 5460",
    );
    assert!(report.contains("WitnessCheckpointStale"), "{report}");
}

#[test]
fn unit_tests_fail_when_a_first_misbehaviour_would_go_unnoticed() {
    // Without the new-series clause, increase() cannot see a counter's first
    // sample, so the first piece of evidence would not alert.
    let report = unit_tests_with_altered_rules(
        "unless witness_misbehaviour_total offset 5m",
        "unless witness_misbehaviour_total",
    );
    assert!(report.contains("WitnessLogMisbehaviour"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_dashboard_use_only_metrics_and_labels_the_code_exports() {
    let exported = exported_by_the_code().await;
    let rules = read(RULES);
    let problems = check_rules(&exported, &rules);
    assert!(problems.is_empty(), "{problems:#?}");
    let dashboard: serde_json::Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    let problems = check_dashboard(&exported, &dashboard);
    assert!(problems.is_empty(), "{problems:#?}");

    // Every metric family the rules alert on is also on the dashboard.
    let dashboard_text = read(DASHBOARD);
    for alert in alerts(&rules) {
        for metric in promql_names(&alert.expr).0 {
            assert!(
                dashboard_text.contains(&metric),
                "{metric} (alert {}) is not on the dashboard",
                alert.name
            );
        }
    }

    // The check fails on a renamed metric (the exporter's suffix dropped), an
    // unknown label in a matcher and one in a template.
    for (from, to, expected) in [
        (
            "witness_checkpoint_age_seconds > 5400",
            "witness_checkpoint_age > 5400",
            "metric witness_checkpoint_age is not exported",
        ),
        (
            "signer_refusals_total{reason=~\"rollback|fork|unproven\"}[5m]",
            "signer_refusals_total{cause=~\"rollback|fork|unproven\"}[5m]",
            "label cause",
        ),
        (
            "No fresh cosignature for {{ $labels.log }}",
            "No fresh cosignature for {{ $labels.origin }}",
            "label origin",
        ),
    ] {
        assert_eq!(rules.matches(from).count(), 1, "{from:?}");
        let problems = check_rules(&exported, &rules.replace(from, to));
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "renaming {from:?} to {to:?} went unnoticed: {problems:#?}"
        );
    }
}
