//! A real Prometheus server (Debian's `prometheus` package) scraping our
//! gateway's `/metrics` as the job `rekor-witness` every second, with the
//! project's alert rules (`deploy/prometheus/witness-alerts.yml`) loaded, and
//! queried through its HTTP API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::process::{Process, free_loopback_addr};

/// `$WITNESS_TEST_PROMETHEUS`, else `/usr/bin/prometheus`.
fn program() -> Result<PathBuf, String> {
    let path = std::env::var_os("WITNESS_TEST_PROMETHEUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: install the Debian package `prometheus` (scripts/test does) \
             or set WITNESS_TEST_PROMETHEUS",
            path.display()
        ))
    }
}

/// The project's alert rules.
pub fn alert_rules_path() -> PathBuf {
    crate::repo_root().join("deploy/prometheus/witness-alerts.yml")
}

/// The running server.
pub struct Prometheus {
    web: SocketAddr,
    process: Process,
    http: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus with its data under `dir`, output in
    /// `logs/prometheus.log`, scraping `target` (`host:port`, plain HTTP).
    pub async fn start(dir: &Path, logs: &Path, target: &str) -> Result<Prometheus, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules:?}\n\
                 scrape_configs:\n  - job_name: rekor-witness\n    static_configs:\n      - targets: [{target:?}]\n",
                rules = alert_rules_path().display().to_string(),
            ),
        )
        .map_err(|e| format!("writing {}: {e}", config.display()))?;
        let web = free_loopback_addr()?;
        let args = vec![
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address={web}"),
        ];
        let mut process = Process::start("prometheus", &program()?, &args, &[], logs)?;
        process.wait_listening(web).await?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Prometheus { web, process, http })
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Result<serde_json::Value, String> {
        let response = self
            .http
            .get(format!("http://{}{path}", self.web))
            .query(query)
            .send()
            .await
            .map_err(|e| format!("Prometheus {path}: {e}"))?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("Prometheus {path}: {e}"))?;
        let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "Prometheus {path}: {e}: {}",
                String::from_utf8_lossy(&bytes)
            )
        })?;
        if json["status"] != "success" {
            return Err(format!("Prometheus {path}: {json}"));
        }
        Ok(json["data"].clone())
    }

    /// An instant query's vector result: each sample's labels and value.
    pub async fn query(&self, expr: &str) -> Result<Vec<(serde_json::Value, f64)>, String> {
        let data = self.api("/api/v1/query", &[("query", expr)]).await?;
        let samples = data["result"]
            .as_array()
            .ok_or_else(|| format!("query {expr}: not a vector: {data}"))?;
        samples
            .iter()
            .map(|sample| {
                let value = sample["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .ok_or_else(|| format!("query {expr}: bad sample {sample}"))?;
                Ok((sample["metric"].clone(), value))
            })
            .collect()
    }

    /// Polls `expr` until it returns at least one sample, all matching `ok`.
    pub async fn wait_for(
        &self,
        expr: &str,
        ok: impl Fn(f64) -> bool,
        timeout: Duration,
    ) -> Result<Vec<(serde_json::Value, f64)>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let samples = self.query(expr).await?;
            if !samples.is_empty() && samples.iter().all(|(_, v)| ok(*v)) {
                return Ok(samples);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "Prometheus: {expr} gave {samples:?} within {timeout:?}; its output ends:\n{}",
                    self.process.log_tail(10)
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The loaded alerting rules: (name, state, health) of each, where state
    /// is `inactive`, `pending` or `firing` and health is `ok` once the rule
    /// evaluated without error.
    pub async fn alert_rules(&self) -> Result<Vec<(String, String, String)>, String> {
        let data = self.api("/api/v1/rules", &[("type", "alert")]).await?;
        let mut rules = Vec::new();
        for group in data["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                rules.push((
                    rule["name"].as_str().unwrap_or_default().to_owned(),
                    rule["state"].as_str().unwrap_or_default().to_owned(),
                    rule["health"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
        Ok(rules)
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        self.process.stop().await;
    }
}
