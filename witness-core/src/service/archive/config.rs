//! The archive's configuration (the `[archive]` table of the witness's TOML
//! file), and the object store it names. The field docs are the operator manual.

use std::net::IpAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use serde::Deserialize;

use crate::service::archive::layout::MAX_PREFIX_LEN;
use crate::{Error, Result};

/// Where and how cosigned checkpoints are archived. Every field has a default.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchiveConfig {
    /// Where checkpoints and manifests are written.
    /// `file:///var/lib/witness/checkpoints` (the default), or a plain path: a
    /// local directory, created if missing; every object written is fsynced.
    /// `s3://<bucket>` or `s3://<bucket>/<prefix>`: an S3 bucket, or an
    /// S3-compatible store (see `endpoint`), with every object under `<prefix>/`.
    pub url: String,
    /// S3 only: the API endpoint of an S3-compatible store, `https://host[:port]`.
    /// Absent: AWS itself (or `AWS_ENDPOINT` from the environment).
    pub endpoint: Option<String>,
    /// S3 only: the bucket's region. Absent: `AWS_REGION` or `AWS_DEFAULT_REGION`
    /// from the environment, else `us-east-1`.
    pub region: Option<String>,
    /// S3 only: allow an `http://` endpoint. Only loopback endpoints
    /// (`127.0.0.0/8`, `[::1]`, `localhost`), for local emulators and tests,
    /// are accepted: credentials and checkpoints never cross a network unencrypted.
    pub allow_http: bool,
    /// S3 only: the access key ID, together with `secret_access_key_file`.
    /// Absent (both): the standard AWS chain (`AWS_ACCESS_KEY_ID`, web identity,
    /// ECS and EC2 instance credentials).
    pub access_key_id: Option<String>,
    /// S3 only: a file holding the secret access key (owner-readable only; a
    /// final newline is ignored).
    pub secret_access_key_file: Option<PathBuf>,
    /// How often a signed manifest is written, as `30m`, `1h` or `1day`: whole
    /// seconds, at least `1s`. Periods are aligned to multiples of this length
    /// since the Unix epoch (hourly manifests start on the hour). Default `1h`.
    #[serde(deserialize_with = "crate::service::duration")]
    pub period: Duration,
    /// A local directory for the durable spool: checkpoints waiting to be
    /// written, the list of objects written in the current period, periods
    /// whose manifest is not written yet, and `conflicts/` (checkpoints and
    /// manifests refused because another object already holds their name). It
    /// must survive restarts and should not be on the archive's own filesystem
    /// if that is a network mount. Default `/var/lib/witness/archive-spool`.
    pub spool_dir: PathBuf,
    /// The most checkpoints held in memory at each stage: submitted but not yet
    /// spooled, and read back from the spool for upload. When submissions
    /// arrive faster than the spool's disk takes them, submitters wait for
    /// room (the witness answers later, never without archiving); an object
    /// store outage only grows the spool. With a SQLite state, whose outbox
    /// replaces submissions, the outbox may hold
    /// [`OUTBOX_ROWS_PER_QUEUE_SLOT`](super::OUTBOX_ROWS_PER_QUEUE_SLOT) times
    /// this many checkpoints waiting for the spool before new cosignatures
    /// are refused. Default 1024.
    pub queue_capacity: usize,
    /// The longest wait between two attempts to write to the object store or to
    /// have a manifest signed; waits start at one second and double. Default `1m`.
    #[serde(deserialize_with = "crate::service::duration")]
    pub max_retry_interval: Duration,
}

impl Default for ArchiveConfig {
    fn default() -> ArchiveConfig {
        ArchiveConfig {
            url: "file:///var/lib/witness/checkpoints".to_owned(),
            endpoint: None,
            region: None,
            allow_http: false,
            access_key_id: None,
            secret_access_key_file: None,
            period: Duration::from_secs(3_600),
            spool_dir: PathBuf::from("/var/lib/witness/archive-spool"),
            queue_capacity: 1_024,
            max_retry_interval: Duration::from_secs(60),
        }
    }
}

/// Where the archive is, parsed from `url`.
#[derive(Debug, PartialEq, Eq)]
enum Location {
    Local(PathBuf),
    S3 {
        bucket: String,
        prefix: Option<Path>,
    },
}

fn config_error(detail: impl Into<String>) -> Error {
    Error::Config {
        detail: format!("archive: {}", detail.into()),
    }
}

fn parse_location(url: &str) -> Result<Location> {
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(config_error(format!(
                "url {url:?}: file URLs must be file:///<absolute path>"
            )));
        }
        return Ok(Location::Local(PathBuf::from(path)));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(config_error(format!("url {url:?} names no bucket")));
        }
        let prefix = prefix.trim_end_matches('/');
        if prefix.len() > MAX_PREFIX_LEN {
            return Err(config_error(format!(
                "url {url:?}: the prefix is over {MAX_PREFIX_LEN} bytes"
            )));
        }
        let prefix = if prefix.is_empty() {
            None
        } else {
            Some(
                Path::parse(prefix)
                    .map_err(|e| config_error(format!("url {url:?}: bad prefix: {e}")))?,
            )
        };
        return Ok(Location::S3 {
            bucket: bucket.to_owned(),
            prefix,
        });
    }
    if url.contains("://") || url.is_empty() {
        return Err(config_error(format!(
            "url {url:?} is not file://, s3:// or a path"
        )));
    }
    Ok(Location::Local(PathBuf::from(url)))
}

/// Whether `endpoint` is `http://` to a loopback address.
fn is_loopback_http(endpoint: &str) -> bool {
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn read_secret(path: &FsPath) -> Result<String> {
    use std::os::unix::fs::MetadataExt as _;
    let metadata = std::fs::metadata(path)
        .map_err(|e| config_error(format!("cannot read {}: {e}", path.display())))?;
    if let Some(problem) =
        crate::secret_file::secret_file_mode_problem(metadata.mode(), metadata.uid())
    {
        return Err(config_error(format!("{}: {problem}", path.display())));
    }
    let secret = std::fs::read_to_string(path)
        .map_err(|e| config_error(format!("cannot read {}: {e}", path.display())))?;
    Ok(secret.trim_end_matches(['\r', '\n']).to_owned())
}

/// The opened object store, and its root directory when it is local (for
/// fsyncing what was written).
pub(crate) struct Storage {
    pub store: Arc<dyn ObjectStore>,
    pub local_root: Option<PathBuf>,
}

impl ArchiveConfig {
    /// Checks the fields that do not depend on the location.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.period < Duration::from_secs(1) || self.period.subsec_nanos() != 0 {
            return Err(config_error("period must be whole seconds, at least 1s"));
        }
        if self.queue_capacity == 0 {
            return Err(config_error("queue_capacity must be at least 1"));
        }
        if self.max_retry_interval.is_zero() {
            return Err(config_error("max_retry_interval must be above zero"));
        }
        Ok(())
    }

    /// Opens the object store `url` names: creates a local directory, or builds
    /// an S3 client (no request is made).
    pub(crate) fn open_storage(&self) -> Result<Storage> {
        let location = parse_location(&self.url)?;
        if !matches!(location, Location::S3 { .. })
            && (self.endpoint.is_some()
                || self.region.is_some()
                || self.allow_http
                || self.access_key_id.is_some()
                || self.secret_access_key_file.is_some())
        {
            return Err(config_error(
                "endpoint, region, allow_http and credentials are for s3:// URLs only",
            ));
        }
        match location {
            Location::Local(root) => {
                std::fs::create_dir_all(&root)
                    .map_err(|e| config_error(format!("cannot create {}: {e}", root.display())))?;
                let store = LocalFileSystem::new_with_prefix(&root)
                    .map_err(|e| config_error(format!("{}: {e}", root.display())))?;
                let root = std::fs::canonicalize(&root)
                    .map_err(|e| config_error(format!("{}: {e}", root.display())))?;
                Ok(Storage {
                    store: Arc::new(store),
                    local_root: Some(root),
                })
            }
            Location::S3 { bucket, prefix } => {
                let s3 = self
                    .s3_builder(&bucket)?
                    .build()
                    .map_err(|e| config_error(format!("S3 bucket {bucket:?}: {e}")))?;
                let store: Arc<dyn ObjectStore> = match prefix {
                    Some(prefix) => Arc::new(PrefixStore::new(s3, prefix)),
                    None => Arc::new(s3),
                };
                Ok(Storage {
                    store,
                    local_root: None,
                })
            }
        }
    }

    fn s3_builder(&self, bucket: &str) -> Result<AmazonS3Builder> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            // The archive retries from its durable spool with its own backoff;
            // long in-call retries would only hold up a batch and shutdown.
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(15),
                ..RetryConfig::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(30)),
            );
        if let Some(region) = &self.region {
            builder = builder.with_region(region);
        }
        let loopback_http = self.endpoint.as_deref().is_some_and(is_loopback_http);
        if self.allow_http && !loopback_http {
            return Err(config_error(
                "allow_http is only for an http:// endpoint on a loopback address",
            ));
        }
        if let Some(endpoint) = &self.endpoint {
            if !endpoint.starts_with("https://") && !self.allow_http {
                return Err(config_error(format!(
                    "endpoint {endpoint:?} must be https://, or http:// on a loopback address with allow_http"
                )));
            }
            builder = builder.with_endpoint(endpoint);
        }
        // Set either way, so that `AWS_ALLOW_HTTP` in the environment cannot
        // open plaintext to a remote endpoint.
        builder = builder.with_allow_http(self.allow_http);
        match (&self.access_key_id, &self.secret_access_key_file) {
            (Some(id), Some(secret)) => {
                builder = builder
                    .with_access_key_id(id)
                    .with_secret_access_key(read_secret(secret)?);
            }
            (None, None) => {}
            _ => {
                return Err(config_error(
                    "access_key_id and secret_access_key_file go together",
                ));
            }
        }
        Ok(builder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> std::result::Result<ArchiveConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn defaults_are_a_local_hourly_archive() {
        let config = parse("").unwrap();
        assert_eq!(config, ArchiveConfig::default());
        assert_eq!(config.period, Duration::from_secs(3_600));
        assert_eq!(
            parse_location(&config.url).unwrap(),
            Location::Local("/var/lib/witness/checkpoints".into())
        );
        config.validate().unwrap();
    }

    #[test]
    fn durations_use_humantime_and_unknown_fields_are_refused() {
        let config = parse("period = \"15m\"\nmax_retry_interval = \"5s\"").unwrap();
        assert_eq!(config.period, Duration::from_secs(900));
        assert_eq!(config.max_retry_interval, Duration::from_secs(5));
        assert!(parse("perod = \"1h\"").is_err());
        assert!(parse("period = \"soon\"").is_err());
        let sub_second = parse("period = \"1500ms\"").unwrap();
        assert!(sub_second.validate().is_err());
    }

    #[test]
    fn locations_parse_into_a_directory_or_a_bucket_and_prefix() {
        assert_eq!(
            parse_location("relative/dir").unwrap(),
            Location::Local("relative/dir".into())
        );
        assert_eq!(
            parse_location("s3://bucket/a/b/").unwrap(),
            Location::S3 {
                bucket: "bucket".into(),
                prefix: Some(Path::from("a/b")),
            }
        );
        assert_eq!(
            parse_location("s3://bucket").unwrap(),
            Location::S3 {
                bucket: "bucket".into(),
                prefix: None,
            }
        );
        for bad in [
            "",
            "gs://bucket",
            "file://host/dir",
            "s3:///prefix",
            "s3://b/../x",
            "s3://b/a//c",
        ] {
            assert!(parse_location(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn plaintext_endpoint_is_refused_unless_loopback() {
        for loopback in [
            "http://127.0.0.1:9000",
            "http://127.3.4.5",
            "http://[::1]:9000/",
            "http://localhost:9000",
        ] {
            assert!(is_loopback_http(loopback), "{loopback}");
        }
        for remote in [
            "http://10.0.0.1:9000",
            "http://127.0.0.1@attacker.example",
            "http://localhost.attacker.example",
            "https://127.0.0.1",
            "http://[::2]:9000",
        ] {
            assert!(!is_loopback_http(remote), "{remote}");
        }
        let config = ArchiveConfig {
            url: "s3://bucket".into(),
            endpoint: Some("http://minio.internal:9000".into()),
            allow_http: true,
            ..ArchiveConfig::default()
        };
        assert_eq!(config.open_storage().err().unwrap().kind(), "config");
        let config = ArchiveConfig {
            endpoint: Some("http://127.0.0.1:9000".into()),
            allow_http: false,
            ..config
        };
        assert_eq!(config.open_storage().err().unwrap().kind(), "config");
    }

    #[test]
    fn world_readable_secret_key_file_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cr3t\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_secret(&secret).is_err());
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret(&secret).unwrap(), "s3cr3t");
    }
}
