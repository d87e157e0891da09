//! The deployment files, checked offline: `deploy/check` (Helm lint and render
//! with the Helm v4 engine, kubernetes-validate, checkov, hadolint, docker
//! compose config, chart packaging) must pass, and every TOML configuration the
//! charts render must be accepted by the service's own configuration parser,
//! which refuses unknown keys. Values that would deploy an unsafe witness are
//! refused by the schema and, for the replica rule, by the template itself.
//!
//! The Python tools are installed from PyPI into target/pyvenv-deploy by
//! `scripts/python-env deploy`; a missing tool fails the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs deploy/check once for the whole file (it writes target/deploy-check/).
fn deploy_check() -> &'static Path {
    static DONE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let output = Command::new(repo().join("deploy/check"))
            .output()
            .expect("running deploy/check");
        assert!(
            output.status.success(),
            "deploy/check failed:\n{}",
            text(&output)
        );
        repo().join("target/deploy-check")
    })
}

/// The rendered scenarios of one chart: target/deploy-check/<scenario>/config/<file>.
fn rendered_configs(file: &str) -> Vec<(String, String)> {
    let out = deploy_check();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(out).expect("target/deploy-check") {
        let scenario = entry.expect("directory entry").path();
        let path = scenario.join("config").join(file);
        if path.exists() {
            let toml = std::fs::read_to_string(&path).expect("rendered configuration");
            found.push((path.display().to_string(), toml));
        }
    }
    found.sort();
    found
}

fn python() -> PathBuf {
    let output = Command::new(repo().join("scripts/python-env"))
        .arg("deploy")
        .output()
        .expect("scripts/python-env deploy");
    assert!(output.status.success(), "{}", text(&output));
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// Renders `chart` with `values` (YAML text) through deploy/helm/chart_tool.py.
fn render(chart: &str, values: &str, extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("temporary directory");
    let values_file = dir.path().join("values.yaml");
    std::fs::write(&values_file, values).expect("writing values");
    Command::new(python())
        .arg(repo().join("deploy/helm/chart_tool.py"))
        .arg("render")
        .arg(repo().join("deploy/helm").join(chart))
        .arg("--values")
        .arg(&values_file)
        .arg("--out")
        .arg(dir.path().join("out"))
        .args(extra)
        .output()
        .expect("running chart_tool.py")
}

#[test]
fn deploy_check_passes_and_every_scenario_renders_the_three_configurations() {
    // Two signer scenarios at least (defaults and the ci-values), likewise the witness.
    assert!(rendered_configs("signer.toml").len() >= 4);
    assert!(rendered_configs("witness.toml").len() >= 2);
    assert!(rendered_configs("gateway.toml").len() >= 2);
    let charts = deploy_check().join("charts");
    for chart in ["rekor-witness-signer-0.1.0.tgz", "rekor-witness-0.1.0.tgz"] {
        assert!(charts.join(chart).exists(), "{chart} was not packaged");
    }
}

#[test]
fn rendered_signer_configurations_parse_with_the_signers_parser() {
    for (path, toml) in rendered_configs("signer.toml") {
        let config = signer_svc::config::Config::parse(&toml)
            .unwrap_or_else(|e| panic!("{path}: {e}\n{toml}"));
        assert_eq!(config.listen.port(), 7390, "{path}");
        assert!(config.state_path.starts_with("/var/lib/signer"), "{path}");
    }
}

#[test]
fn rendered_witness_configurations_parse_with_the_witness_parser() {
    use witness_core::service::config::WitnessConfig;
    for (path, toml) in rendered_configs("witness.toml") {
        let config = WitnessConfig::parse(&toml).unwrap_or_else(|e| panic!("{path}: {e}\n{toml}"));
        // The keys are vkeys, so resolving them reads no file.
        let logs = config
            .trusted_logs(Path::new("/"))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(!logs.logs.is_empty() || !logs.sharded.is_empty(), "{path}");
        assert!(
            config.tls.is_some(),
            "{path}: the listener must be mutual TLS"
        );
        // A rendered mirror_path means air-gap mode, with the producer key
        // the chart mounts, and nothing else: no archive to upload to.
        if toml.contains("mirror_path") {
            assert!(
                matches!(
                    config.mode(Path::new("/")),
                    witness_core::service::config::ServiceMode::Airgap { .. }
                ),
                "{path}"
            );
            assert!(
                config.archive.is_none(),
                "{path}: no archive in the air gap"
            );
        }
    }
}

/// The documents of a rendered scenario's `manifests.yaml`, as JSON (PyYAML
/// from the deploy tools' environment).
fn rendered_manifests(scenario: &Path) -> Vec<serde_json::Value> {
    let output = Command::new(python())
        .args([
            "-c",
            "import json, sys, yaml\n\
             json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)",
        ])
        .arg(scenario.join("manifests.yaml"))
        .output()
        .expect("running PyYAML");
    assert!(output.status.success(), "{}", text(&output));
    serde_json::from_slice(&output.stdout).expect("manifests as JSON")
}

/// The witness-core container's mounts (mount path, volume name) and the
/// StatefulSet's claim templates.
fn witness_mounts_and_claims(
    manifests: &[serde_json::Value],
) -> (Vec<(String, String)>, Vec<String>) {
    let statefulset = manifests
        .iter()
        .find(|d| {
            d["kind"] == "StatefulSet"
                && d["spec"]["template"]["spec"]["containers"][0]["name"] == "witness-core"
        })
        .expect("the witness-core StatefulSet");
    let mounts = statefulset["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .map(|m| {
            (
                m["mountPath"].as_str().expect("mountPath").to_owned(),
                m["name"].as_str().expect("name").to_owned(),
            )
        })
        .collect();
    let claims = statefulset["spec"]["volumeClaimTemplates"]
        .as_array()
        .expect("volumeClaimTemplates")
        .iter()
        .map(|c| {
            c["metadata"]["name"]
                .as_str()
                .expect("claim name")
                .to_owned()
        })
        .collect();
    (mounts, claims)
}

/// The volume holding `path`: the mount with the longest path containing it.
fn volume_of<'a>(mounts: &'a [(String, String)], path: &Path) -> Option<&'a str> {
    mounts
        .iter()
        .filter(|(mount, _)| path.starts_with(mount))
        .max_by_key(|(mount, _)| mount.len())
        .map(|(_, name)| name.as_str())
}

#[test]
fn a_local_archive_gets_a_claim_of_its_own_so_filling_it_cannot_stop_the_state_or_spool() {
    use witness_core::service::config::WitnessConfig;
    let mut local_archives = 0;
    for (path, toml) in rendered_configs("witness.toml") {
        let scenario = Path::new(&path)
            .ancestors()
            .nth(2)
            .expect("scenario directory");
        let config = WitnessConfig::parse(&toml).unwrap_or_else(|e| panic!("{path}: {e}"));
        let (mounts, claims) = witness_mounts_and_claims(&rendered_manifests(scenario));
        // Every path the witness writes is on a persistent claim.
        let on_claim = |what: &str, file: &Path| -> String {
            let volume = volume_of(&mounts, file)
                .unwrap_or_else(|| panic!("{path}: the {what} {} is on no volume", file.display()));
            assert!(
                claims.iter().any(|c| c == volume),
                "{path}: the {what} is on volume {volume:?}, not a claim of {claims:?}"
            );
            volume.to_owned()
        };
        let state = (!config.state.starts_with("postgres"))
            .then(|| on_claim("SQLite state", Path::new(&config.state)));
        let Some(archive) = &config.archive else {
            continue;
        };
        let spool = on_claim("archive spool", &archive.spool_dir);
        if let Some(local) = archive.url.strip_prefix("file://") {
            local_archives += 1;
            let archive_volume = on_claim("local archive", Path::new(local));
            assert_ne!(
                archive_volume, spool,
                "{path}: the local archive shares the spool's volume"
            );
            assert_ne!(
                Some(&archive_volume),
                state.as_ref(),
                "{path}: the local archive shares the state's volume"
            );
        }
    }
    assert!(
        local_archives >= 1,
        "no rendered scenario has a local archive"
    );
}

#[test]
fn rendered_gateway_configurations_parse_with_the_gateways_parser() {
    let dir = tempfile::tempdir().expect("temporary directory");
    for (path, toml) in rendered_configs("gateway.toml") {
        let file = dir.path().join("gateway.toml");
        std::fs::write(&file, &toml).expect("writing gateway.toml");
        let config = gateway::GatewayConfig::from_file(&file)
            .unwrap_or_else(|e| panic!("{path}: {e}\n{toml}"));
        assert!(config.tls.is_some(), "{path}: the API must be HTTPS");
        assert!(config.witness.endpoint.starts_with("https://"), "{path}");
    }
}

#[test]
fn two_witness_replicas_on_sqlite_are_refused_by_the_schema_and_by_the_template() {
    let values = "witnessCore:\n  replicas: 2\n";
    let schema = render("rekor-witness", values, &[]);
    assert!(!schema.status.success(), "{}", text(&schema));
    assert!(text(&schema).contains("postgres"), "{}", text(&schema));
    // Without the schema, the template's own guard refuses it too.
    let template = render("rekor-witness", values, &["--skip-schema"]);
    assert!(!template.status.success(), "{}", text(&template));
    assert!(
        text(&template).contains("SQLite state cannot be shared"),
        "{}",
        text(&template)
    );
    // The same replicas on PostgreSQL render.
    let postgres = "witnessCore:\n  replicas: 2\n  state:\n    backend: postgres\n    postgresUrl: postgres://witness@db/witness\n";
    let accepted = render("rekor-witness", postgres, &[]);
    assert!(accepted.status.success(), "{}", text(&accepted));
}

#[test]
fn values_violating_the_schemas_are_refused() {
    for (chart, values, expected) in [
        (
            "rekor-witness",
            "checkpoint_intervall: 1h\n",
            "checkpoint_intervall",
        ),
        (
            "rekor-witness",
            "checkpoint_interval: soon\n",
            "checkpoint_interval",
        ),
        ("rekor-witness", "gateway:\n  port: 443\n", "/gateway/port"),
        (
            "rekor-witness",
            "witnessCore:\n  archive:\n    url: file:///var/lib/witness/checkpoints\n",
            "archive/url",
        ),
        (
            "rekor-witness",
            "gateway:\n  limits:\n    max_conections: 5\n",
            "max_conections",
        ),
        (
            "rekor-witness",
            "seccompProfile:\n  type: Unconfined\n",
            "seccompProfile",
        ),
        ("rekor-witness-signer", "replicas: 2\n", "/replicas"),
        (
            "rekor-witness-signer",
            "signer:\n  backend: floppy\n",
            "/signer",
        ),
        (
            "rekor-witness-signer",
            "cosignerName: has space\n",
            "/cosignerName",
        ),
        (
            "rekor-witness-signer",
            "tls:\n  allowedIdentities: [spiffe://w]\n",
            "allowedIdentities",
        ),
    ] {
        let output = render(chart, values, &[]);
        assert!(!output.status.success(), "{chart} accepted {values:?}");
        assert!(
            text(&output).contains(expected),
            "{values:?}: {}",
            text(&output)
        );
    }
}

#[test]
fn a_rendered_configuration_with_an_unknown_key_is_refused_by_the_parsers() {
    // The parse tests above can fail: the parsers refuse what a chart typo
    // would produce.
    let (_, signer) = rendered_configs("signer.toml")
        .into_iter()
        .next()
        .expect("a rendered signer.toml");
    let typo = signer.replace("state_path", "state_file");
    assert!(signer_svc::config::Config::parse(&typo).is_err());
    let (_, witness) = rendered_configs("witness.toml")
        .into_iter()
        .next()
        .expect("a rendered witness.toml");
    let typo = witness.replace("checkpoint_interval", "checkpoint_period");
    assert!(witness_core::service::config::WitnessConfig::parse(&typo).is_err());
}
