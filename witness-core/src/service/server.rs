//! The whole witness service as one library call, [`run`]: `main` and the
//! tests call it on a bound listener with a shutdown future.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use witness_proto::witness::witness_server::WitnessServer;

use crate::service::config::{Logs, ServiceMode, WitnessConfig};
use crate::service::feeder::{FeederConfig, LogKind};
use crate::service::grpc::WitnessGrpc;
use crate::service::metrics::WitnessMetrics;
use crate::service::signer_client::{BatchingSigner, GrpcSigner, SignerKeys};
use crate::service::store::postgres::PostgresStore;
use crate::service::store::sqlite::SqliteStore;
use crate::service::store::{ArchiveOutbox, LogStore};
use crate::service::witness::{CheckpointArchive, Feed, Witness};
use crate::service::{archive, feeder, recosign};
use crate::tls_reload::{
    self, ClientAuth, PeerCertificates, ReloadTask, ReloadingClientVerifier, TlsReloader,
};
use crate::{Error, Result};

/// Completes when the stop signal turns true.
pub(crate) async fn stopping(mut stopped: watch::Receiver<bool>) {
    while !*stopped.borrow() {
        if stopped.changed().await.is_err() {
            return;
        }
    }
}

#[async_trait::async_trait]
impl CheckpointArchive for archive::ArchiveSubmitter {
    async fn submit(&self, origin: &str, cosigned_at: u64, note: Vec<u8>) -> crate::Result<()> {
        archive::ArchiveSubmitter::submit(self, origin, cosigned_at, &note)
            .await
            .inspect_err(|error| {
                tracing::warn!(origin, error = %error, "checkpoint not archived: not revealed");
            })
    }

    fn outbox(&self) -> Option<Arc<archive::OutboxTicket>> {
        archive::ArchiveSubmitter::outbox(self)
    }
}

/// The feeders of the pulled logs: each tlog-tiles log, and each Rekor v1
/// server (all its shards).
fn pulled_logs(logs: &Logs, config: &WitnessConfig) -> Result<Vec<FeederConfig>> {
    let mut feeders = Vec::new();
    let mut add = |name: &str, url: &str, kind: LogKind| -> Result<()> {
        let mut feeder = FeederConfig::new(name, url, kind)?;
        feeder.poll_interval = config.poll_interval;
        feeder.max_backoff = feeder.max_backoff.max(config.poll_interval);
        feeders.push(feeder);
        Ok(())
    };
    for log in &logs.logs {
        if let Feed::Tiles { url } = &log.feed {
            add(&log.origin, url, LogKind::Tiles)?;
        }
    }
    for sharded in &logs.sharded {
        add(
            sharded.origin_prefix.trim_end_matches(" - "),
            &sharded.url,
            LogKind::RekorV1,
        )?;
    }
    Ok(feeders)
}

/// Opens the state store a configuration names.
pub async fn open_store(config: &WitnessConfig) -> Result<Arc<dyn LogStore>> {
    Ok(open_store_with_outbox(config).await?.0)
}

/// Opens the state store a configuration names, and its archive outbox if it
/// has one (SQLite: the archive then takes cosigned checkpoints from the
/// state's own transactions; PostgreSQL: from submissions to its spool).
pub async fn open_store_with_outbox(
    config: &WitnessConfig,
) -> Result<(Arc<dyn LogStore>, Option<Arc<dyn ArchiveOutbox>>)> {
    if config.state.starts_with("postgres://") || config.state.starts_with("postgresql://") {
        Ok((
            Arc::new(PostgresStore::connect(&config.state, config.state_pool_size).await?),
            None,
        ))
    } else {
        let path = config
            .state
            .strip_prefix("sqlite://")
            .unwrap_or(&config.state);
        let store = Arc::new(SqliteStore::open(Path::new(path))?);
        Ok((store.clone(), Some(store)))
    }
}

/// Reads the signer's keys, retrying with backoff while the signer is not up
/// yet (the two services start independently).
pub(crate) async fn signer_keys(
    signer: &GrpcSigner,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<SignerKeys> {
    let mut delay = Duration::from_millis(200);
    loop {
        match signer.keys().await {
            Ok(keys) => return Ok(keys),
            Err(error) => {
                tracing::warn!(error = %error, retry_in = ?delay, "signer not reachable yet");
            }
        }
        tokio::select! {
            _ = shutdown.changed() => return Err(Error::Signer { detail: "shut down before the signer answered".into() }),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// The listener's mutual TLS 1.3, its certificate and client CA read again
/// every `tls_reload_interval` (see [`crate::tls_reload`]), and the task
/// watching the files.
fn server_tls(
    config: &WitnessConfig,
    metrics: &WitnessMetrics,
) -> Result<Option<(TlsAcceptor, Arc<ReloadingClientVerifier>, ReloadTask)>> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    let mut reloader = TlsReloader::new("grpc_server", metrics.tls().clone());
    let certificate = reloader.certified_key(&tls.cert, &tls.key)?;
    let verifier = reloader.client_verifier(&tls.client_ca, ClientAuth::Required)?;
    let mut server = rustls::ServerConfig::builder_with_provider(reloader.provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Config {
            detail: format!("listener TLS: {e}"),
        })?
        .with_client_cert_verifier(verifier.clone())
        .with_cert_resolver(certificate);
    // gRPC runs over HTTP/2 only.
    server.alpn_protocols = vec![b"h2".to_vec()];
    tls_reload::no_resumption(&mut server);
    Ok(Some((
        TlsAcceptor::from(Arc::new(server)),
        verifier,
        reloader.spawn(config.tls_reload_interval),
    )))
}

/// Serves the witness on `listener` until `shutdown` completes. `base`
/// resolves relative paths in the configuration.
///
/// The mode is decided here, before anything is built: air-gap mode
/// (`mirror_path`) runs [`airgap::run`](crate::service::airgap::run), which
/// never reaches the feeders, the proof fetcher or the archive below, so it
/// constructs no HTTP client at all.
pub async fn run(
    listener: TcpListener,
    config: &WitnessConfig,
    base: &Path,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    match config.mode(base) {
        ServiceMode::Online => run_online(listener, config, base, shutdown).await,
        ServiceMode::Airgap(airgap) => {
            crate::service::airgap::run(listener, config, &airgap, base, shutdown).await
        }
    }
}

/// The connected witness: the gRPC service, the pull feeders, re-cosigning
/// and the archive.
async fn run_online(
    listener: TcpListener,
    config: &WitnessConfig,
    base: &Path,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let (stop, stopped) = watch::channel(false);
    let metrics = Arc::new(WitnessMetrics::new()?);
    let (store, outbox) = open_store_with_outbox(config).await?;
    let signer =
        GrpcSigner::connect_reloading(&config.signer, metrics.clone(), config.tls_reload_interval)?;
    let mut waiting = stopped.clone();
    let keys = signer_keys(&signer, &mut waiting).await?;
    tracing::info!(witness = %keys.name, keys = keys.cosigning.len(), "signer keys loaded");

    let archive_config = config.archive.clone().unwrap_or_default();
    let archive = match outbox {
        Some(outbox) => {
            archive::Archive::open_with_outbox(
                &archive_config,
                &keys.name,
                Arc::new(signer.clone()),
                metrics.clone(),
                outbox,
            )
            .await?
        }
        None => archive::Archive::open(
            &archive_config,
            &keys.name,
            Arc::new(signer.clone()),
            metrics.clone(),
        )?,
    };
    let submitter = archive.submitter();

    let logs = config.trusted_logs(base)?;
    let pulled = pulled_logs(&logs, config)?;
    let witness = Witness::new(
        logs.logs,
        logs.sharded,
        keys.cosigning.clone(),
        store,
        Arc::new(BatchingSigner::new(signer.clone())),
        Some(Arc::new(submitter)),
        metrics.clone(),
    )
    .await?
    .with_proof_source(Arc::new(feeder::LogProofSource::new(metrics.clone())?));
    let witness = Arc::new(witness);

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(archive.run(stopping(stopped.clone())));
    tasks.spawn(recosign::run(
        witness.clone(),
        config.checkpoint_interval,
        stopped.clone(),
    ));
    for log in pulled {
        let witness = witness.clone();
        let metrics = metrics.clone();
        let stop = stopping(stopped.clone());
        tasks.spawn(async move {
            let name = log.name.clone();
            if let Err(error) = feeder::run_feeder(log, witness, metrics, stop).await {
                tracing::error!(log = %name, error = %error, "feeder stopped");
            }
        });
    }

    let served = serve_grpc(listener, config, witness, shutdown, &stop).await;
    let _ = stop.send(true);
    // Background tasks see the stop and finish their current step (the archive
    // flushes its queue to the spool and writes the partial manifest).
    while tasks.join_next().await.is_some() {}
    served
}

/// Serves the gRPC API of `witness` on `listener` until `shutdown` completes,
/// then turns `stop` true (for the background tasks).
pub(crate) async fn serve_grpc(
    listener: TcpListener,
    config: &WitnessConfig,
    witness: Arc<Witness>,
    shutdown: impl Future<Output = ()>,
    stop: &watch::Sender<bool>,
) -> Result<()> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<WitnessServer<WitnessGrpc>>()
        .await;
    let tls = server_tls(config, witness.metrics())?;
    let mut builder = tonic::transport::Server::builder()
        // Each request's deadline: a stuck signer or database must not pile up
        // requests forever; the client sees DEADLINE_EXCEEDED and retries.
        .timeout(Duration::from_secs(30))
        // Bounds the work one connection (the gateway multiplexes many logs
        // over one) can have in flight, so one client cannot starve the rest.
        .concurrency_limit_per_connection(1024)
        .tcp_nodelay(true);
    // With mutual TLS, every witness call needs a client certificate whose
    // identity is allowlisted; the CA alone only admits to the handshake (and
    // to health checks).
    let allowed: Option<Arc<Vec<String>>> = config
        .tls
        .as_ref()
        .map(|tls| Arc::new(tls.allowed_identities.clone()));
    let service = WitnessServer::with_interceptor(
        WitnessGrpc::new(witness),
        move |request: tonic::Request<()>| match &allowed {
            None => Ok(request),
            Some(allowed) => {
                // Set by the TLS listener from the verified handshake; a
                // client cannot supply it.
                let permitted = request
                    .extensions()
                    .get::<PeerCertificates>()
                    .and_then(|certs| certs.0.first())
                    .is_some_and(|leaf| {
                        crate::peer_identity::certificate_identities(leaf.as_ref())
                            .iter()
                            .any(|id| allowed.contains(id))
                    });
                if permitted {
                    Ok(request)
                } else {
                    Err(tonic::Status::permission_denied(
                        "the client certificate's identity is not in tls.allowed_identities",
                    ))
                }
            }
        },
    );
    let router = builder.add_service(health_service).add_service(service);
    let shutdown = async {
        shutdown.await;
        let _ = stop.send(true);
    };
    let served = match tls {
        Some((acceptor, client_verifier, _reload)) => {
            let incoming = tls_reload::incoming(listener, acceptor, client_verifier);
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        None => {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    };
    served.map_err(|e| Error::Config {
        detail: format!("gRPC server: {e}"),
    })
}
