//! The client of the signer (`signer-svc`): gRPC over mutual TLS 1.3. The
//! witness holds no private key; every signature comes from here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use tonic::transport::Channel;
use witness_proto::signer as pb;
use witness_proto::signer::signer_client::SignerClient;

use crate::checkpoint::Checkpoint;
use crate::merkle::Hash;
use crate::note::VerifierKey;
use crate::service::archive::ManifestSigner;
use crate::service::metrics::WitnessMetrics;
use crate::service::witness::{Cosignature, Cosigner, SubtreeRequest};
use crate::tls_reload::{self, ClientFiles, DEFAULT_RELOAD_INTERVAL};
use crate::{Error, Result};

/// How to reach the signer.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerConfig {
    /// The signer's gRPC endpoint, `https://host:port`.
    pub endpoint: String,
    /// PEM file of the CA that issued the signer's server certificate.
    pub ca: PathBuf,
    /// PEM file of this witness's client certificate (its SAN identity must be
    /// on the signer's allowlist).
    pub client_cert: PathBuf,
    /// PEM file of the client certificate's private key (mode 0600 or stricter).
    pub client_key: PathBuf,
    /// The name in the signer's server certificate, when it differs from the
    /// endpoint's host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Deadline of one signer call (default `10s`).
    #[serde(
        default = "default_timeout",
        deserialize_with = "crate::service::duration"
    )]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// How far the timestamp of a cosignature may be from this witness's clock;
/// a cosignature further off is refused and counted
/// (`witness_cosignatures_total{outcome="signer_clock"}`). Clocks synchronised
/// by NTP agree within a second; a minute apart, one of them is wrong.
pub const MAX_SIGNER_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Refuses a cosignature whose timestamp is more than `tolerance` away from
/// `now` (seconds since the epoch), either way. A signer clock in the past
/// makes the witness's statements ("as of this time, the largest tree") older
/// than they are, and can take a log's cosignature times backwards; one in the
/// future makes claims about a time not yet reached, which verifiers may
/// reject (c2sp.org/tlog-cosignature).
pub fn check_signer_clock(timestamp: u64, now: u64, tolerance: Duration) -> Result<()> {
    let tolerance = tolerance.as_secs();
    let (off, direction) = if timestamp >= now {
        (timestamp - now, "ahead of")
    } else {
        (now - timestamp, "behind")
    };
    if off > tolerance {
        return Err(Error::SignerClock {
            detail: format!(
                "the cosignature time {timestamp} is {off}s {direction} the witness's clock \
                 (tolerance {tolerance}s); cosignature refused"
            ),
        });
    }
    Ok(())
}

/// The signer's public keys, as the witness needs them.
#[derive(Clone, Debug)]
pub struct SignerKeys {
    /// The witness (cosigner) name.
    pub name: String,
    /// The cosigning verifier keys (cosignature/v1, and ML-DSA-44 when present).
    pub cosigning: Vec<VerifierKey>,
    /// The manifest key: PEM SubjectPublicKeyInfo and DSSE key ID.
    pub manifest: Option<(String, String)>,
}

/// The signer over gRPC.
#[derive(Clone)]
pub struct GrpcSigner {
    client: SignerClient<Channel>,
    metrics: Arc<WitnessMetrics>,
}

fn status_error(status: &tonic::Status) -> Error {
    if status.code() == tonic::Code::FailedPrecondition
        && let Some(stored_size) = status
            .metadata()
            .get("x-stored-size")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    {
        return Error::OldSizeMismatch {
            old_size: 0,
            stored_size,
        };
    }
    Error::Signer {
        detail: format!("{:?}: {}", status.code(), status.message()),
    }
}

impl GrpcSigner {
    /// Connects lazily (the first call opens the connection, and reconnects
    /// after failures) with the client certificate of `config`, reading the
    /// TLS files again every [`DEFAULT_RELOAD_INTERVAL`].
    pub fn connect(config: &SignerConfig, metrics: Arc<WitnessMetrics>) -> Result<GrpcSigner> {
        GrpcSigner::connect_reloading(config, metrics, DEFAULT_RELOAD_INTERVAL)
    }

    /// [`GrpcSigner::connect`], reading the CA bundle, the client certificate
    /// and its key again every `reload_interval`: new connections use the
    /// files as they are then (see [`crate::tls_reload`]).
    pub fn connect_reloading(
        config: &SignerConfig,
        metrics: Arc<WitnessMetrics>,
        reload_interval: Duration,
    ) -> Result<GrpcSigner> {
        let (endpoint, connector) = tls_reload::grpc_client(
            "signer_client",
            &config.endpoint,
            config.server_name.as_deref(),
            ClientFiles {
                ca: &config.ca,
                cert: &config.client_cert,
                key: &config.client_key,
            },
            reload_interval,
            metrics.tls().clone(),
        )?;
        let channel = endpoint
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .connect_with_connector_lazy(connector);
        Ok(GrpcSigner {
            // A signed manifest carries its payload in base64: up to ~5.6 MB
            // for the signer's 4 MiB payload cap, above tonic's 4 MiB default.
            client: SignerClient::new(channel).max_decoding_message_size(8 << 20),
            metrics,
        })
    }

    /// The signer's public keys.
    pub async fn keys(&self) -> Result<SignerKeys> {
        let response = self
            .client
            .clone()
            .public_keys(pb::PublicKeysRequest {})
            .await
            .map_err(|s| status_error(&s))?
            .into_inner();
        let mut keys = SignerKeys {
            name: String::new(),
            cosigning: Vec::new(),
            manifest: None,
        };
        for key in response.keys {
            match key.purpose.as_str() {
                "cosign" => {
                    keys.name = key.name.clone();
                    keys.cosigning.push(VerifierKey::parse_vkey(&key.vkey)?);
                }
                "manifest" => keys.manifest = Some((key.pem, key.key_id)),
                _ => {}
            }
        }
        if keys.cosigning.is_empty() {
            return Err(Error::Signer {
                detail: "the signer has no cosigning key".into(),
            });
        }
        Ok(keys)
    }

    /// A cosignature whose timestamp is within the tolerance of this
    /// witness's clock ([`check_signer_clock`]).
    fn clock_checked(&self, cosignature: Cosignature) -> Result<Cosignature> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| Error::SignerClock {
                detail: "the witness's clock is before 1970".into(),
            })?
            .as_secs();
        check_signer_clock(cosignature.timestamp, now, MAX_SIGNER_CLOCK_SKEW)?;
        Ok(cosignature)
    }

    fn timed<T>(
        &self,
        operation: &'static str,
        started: Instant,
        result: std::result::Result<tonic::Response<T>, tonic::Status>,
    ) -> Result<T> {
        self.metrics
            .signer_call(operation, result.is_ok(), started.elapsed());
        result
            .map(tonic::Response::into_inner)
            .map_err(|s| status_error(&s))
    }
}

#[async_trait]
impl Cosigner for GrpcSigner {
    async fn cosign(
        &self,
        checkpoint: &Checkpoint,
        old_size: u64,
        proof: &[Hash],
    ) -> Result<Cosignature> {
        let request = cosign_request(checkpoint, old_size, proof);
        let started = Instant::now();
        let result = self.client.clone().cosign_checkpoint(request).await;
        let response = self.timed("cosign_checkpoint", started, result)?;
        self.clock_checked(Cosignature {
            lines: response.signature_lines,
            timestamp: response.timestamp,
        })
    }

    async fn sign_subtree(&self, request: &SubtreeRequest) -> Result<Vec<String>> {
        let request = pb::SignSubtreeRequest {
            checkpoint: request.checkpoint.clone(),
            start: request.start,
            end: request.end,
            subtree_hash: request.subtree_hash.0.to_vec(),
            proof: request.proof.iter().map(|h| h.0.to_vec()).collect(),
        };
        let started = Instant::now();
        let result = self.client.clone().sign_subtree(request).await;
        Ok(self.timed("sign_subtree", started, result)?.signature_lines)
    }

    /// `PublicKeys`: the cheapest call that passes the signer's mutual TLS
    /// and allowlist, and signs nothing.
    async fn reachable(&self) -> Result<()> {
        let started = Instant::now();
        let result = self
            .client
            .clone()
            .public_keys(pb::PublicKeysRequest {})
            .await;
        self.timed("public_keys", started, result).map(|_| ())
    }
}

#[async_trait]
impl ManifestSigner for GrpcSigner {
    async fn sign_manifest(&self, payload_type: &str, payload: Vec<u8>) -> Result<Vec<u8>> {
        let request = pb::SignManifestRequest {
            payload_type: payload_type.to_owned(),
            payload,
        };
        let started = Instant::now();
        let result = self.client.clone().sign_manifest(request).await;
        Ok(self.timed("sign_manifest", started, result)?.envelope)
    }
}

/// Most items in one `CosignCheckpoints` call: the signer's cap.
pub const MAX_BATCH: usize = 512;

/// Batches in flight at once: while one is signed and committed by the signer,
/// the next fills up, so the signer is never idle and each of its durable
/// commits covers every request that arrived meanwhile (group commit).
const BATCHES_IN_FLIGHT: usize = 2;

struct PendingCosign {
    request: pb::CosignCheckpointRequest,
    answer: tokio::sync::oneshot::Sender<Result<Cosignature>>,
}

/// The signer over gRPC with concurrent cosign requests gathered into
/// `CosignCheckpoints` batches: one round trip and one durable signer commit
/// per batch instead of per checkpoint. A lone request goes out at once; a
/// batch forms only from requests that arrive while others are in flight, so
/// batching adds no latency of its own.
#[derive(Clone)]
pub struct BatchingSigner {
    signer: GrpcSigner,
    queue: tokio::sync::mpsc::Sender<PendingCosign>,
}

fn cosign_request(
    checkpoint: &Checkpoint,
    old_size: u64,
    proof: &[Hash],
) -> pb::CosignCheckpointRequest {
    pb::CosignCheckpointRequest {
        origin: checkpoint.origin().to_owned(),
        size: checkpoint.size(),
        root_hash: checkpoint.root_hash().0.to_vec(),
        extension_lines: checkpoint.extensions().to_vec(),
        old_size,
        consistency_proof: proof.iter().map(|h| h.0.to_vec()).collect(),
    }
}

fn item_result(result: Option<pb::CosignCheckpointResult>) -> Result<Cosignature> {
    use pb::cosign_checkpoint_result::Result as Item;
    match result.and_then(|r| r.result) {
        Some(Item::Cosigned(response)) => Ok(Cosignature {
            lines: response.signature_lines,
            timestamp: response.timestamp,
        }),
        Some(Item::Error(error)) => match error.stored_size {
            Some(stored_size) if error.code == tonic::Code::FailedPrecondition as i32 => {
                Err(Error::OldSizeMismatch {
                    old_size: 0,
                    stored_size,
                })
            }
            _ => Err(Error::Signer {
                detail: format!("{} ({})", error.message, error.reason),
            }),
        },
        None => Err(Error::Signer {
            detail: "the signer returned fewer results than items".into(),
        }),
    }
}

impl BatchingSigner {
    /// Starts the batching task on the current runtime; it ends when the last
    /// clone is dropped.
    pub fn new(signer: GrpcSigner) -> BatchingSigner {
        let (queue, mut receiver) = tokio::sync::mpsc::channel::<PendingCosign>(4 * MAX_BATCH);
        let client = signer.clone();
        tokio::spawn(async move {
            let permits = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
            while let Some(first) = receiver.recv().await {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                // Everything queued while waiting for a free slot joins this batch.
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match receiver.try_recv() {
                        Ok(pending) => batch.push(pending),
                        Err(_) => break,
                    }
                }
                let client = client.clone();
                tokio::spawn(async move {
                    client.send_batch(batch).await;
                    drop(permit);
                });
            }
        });
        BatchingSigner { signer, queue }
    }
}

impl GrpcSigner {
    async fn send_batch(&self, batch: Vec<PendingCosign>) {
        let (requests, answers): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| (p.request, p.answer)).unzip();
        let started = Instant::now();
        let result = self
            .client
            .clone()
            .cosign_checkpoints(pb::CosignCheckpointsRequest { items: requests })
            .await;
        match self.timed("cosign_checkpoints", started, result) {
            Ok(response) => {
                let mut results = response.results.into_iter();
                for answer in answers {
                    let item = item_result(results.next());
                    let _ = answer.send(item.and_then(|c| self.clock_checked(c)));
                }
            }
            Err(error) => {
                for answer in answers {
                    let _ = answer.send(Err(error.clone()));
                }
            }
        }
    }
}

#[async_trait]
impl Cosigner for BatchingSigner {
    async fn cosign(
        &self,
        checkpoint: &Checkpoint,
        old_size: u64,
        proof: &[Hash],
    ) -> Result<Cosignature> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let pending = PendingCosign {
            request: cosign_request(checkpoint, old_size, proof),
            answer,
        };
        let closed = || Error::Signer {
            detail: "the batching task stopped".into(),
        };
        self.queue.send(pending).await.map_err(|_| closed())?;
        answered.await.map_err(|_| closed())?
    }

    async fn sign_subtree(&self, request: &SubtreeRequest) -> Result<Vec<String>> {
        self.signer.sign_subtree(request).await
    }

    async fn reachable(&self) -> Result<()> {
        self.signer.reachable().await
    }
}
