//! A fake of the Cloud KMS REST (HTTP/JSON) API, just the two calls the
//! `gcp-kms` backend makes, as `google-cloud-kms-v1` sends them:
//!
//! - `GET  /v1/{name=projects/*/locations/*/keyRings/*/cryptoKeys/*/cryptoKeyVersions/*}/publicKey`
//! - `POST /v1/{name=projects/*/locations/*/keyRings/*/cryptoKeys/*/cryptoKeyVersions/*}:asymmetricSign`
//!
//! Wire format as the real service speaks it (proto3 JSON): camelCase field
//! names, `bytes` fields in base64, `int64` fields (the CRC32C checksums) as
//! decimal strings, enums as numbers when the client asks for
//! `$alt=json;enum-encoding=int` (it always does) and as names otherwise, and
//! errors as `{"error": {"code", "message", "status"}}` with the matching HTTP
//! status.
//!
//! The fake holds real keys and really signs: `EC_SIGN_ED25519` over `data`, and
//! `EC_SIGN_P256_SHA256` over a prehashed `digest.sha256` (DER signature). It
//! checks the request shape, as the real service does: Ed25519 keys refuse a
//! `digest`, P-256 keys refuse `data` and need a 32-byte `digest.sha256`, and
//! unknown JSON fields are refused. It is stricter than the real service in one
//! way: the CRC32C fields (`dataCrc32c` / `digestCrc32c`) are required, since
//! the backend must always send them; a wrong one is refused like the real
//! service refuses it. As in proto3, an absent `data` is empty data.
//!
//! Faults can be injected (see [`Faults`]) to exercise the backend's integrity
//! checks.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use serde_json::{Value, json};

/// A key algorithm of the fake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// `EC_SIGN_ED25519` (enum value 40).
    Ed25519,
    /// `EC_SIGN_P256_SHA256` (enum value 12).
    EcdsaP256,
}

impl KeyAlgorithm {
    fn enum_name(self) -> &'static str {
        match self {
            KeyAlgorithm::Ed25519 => "EC_SIGN_ED25519",
            KeyAlgorithm::EcdsaP256 => "EC_SIGN_P256_SHA256",
        }
    }

    fn enum_number(self) -> i32 {
        match self {
            KeyAlgorithm::Ed25519 => 40,
            KeyAlgorithm::EcdsaP256 => 12,
        }
    }
}

/// Misbehaviour to inject into the fake's answers.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// `signatureCrc32c` is off by one.
    pub wrong_signature_crc32c: bool,
    /// The sign response names another key version.
    pub wrong_name: bool,
    /// The sign response says the request checksum was not verified.
    pub unverified_request_crc32c: bool,
    /// The signature is corrupted and `signatureCrc32c` recomputed to match it.
    pub corrupt_signature: bool,
    /// `pemCrc32c` of the public key is off by one.
    pub wrong_pem_crc32c: bool,
    /// The next this many requests (of either kind) answer 503 UNAVAILABLE.
    pub unavailable: u32,
}

enum Key {
    Ed25519(Box<ed25519_dalek::SigningKey>),
    EcdsaP256(Box<p256::ecdsa::SigningKey>),
}

impl Key {
    fn algorithm(&self) -> KeyAlgorithm {
        match self {
            Key::Ed25519(_) => KeyAlgorithm::Ed25519,
            Key::EcdsaP256(_) => KeyAlgorithm::EcdsaP256,
        }
    }

    fn public_key_pem(&self) -> String {
        use p256::pkcs8::{EncodePublicKey as _, LineEnding};
        match self {
            Key::Ed25519(key) => key.verifying_key().to_public_key_pem(LineEnding::LF),
            Key::EcdsaP256(key) => key.verifying_key().to_public_key_pem(LineEnding::LF),
        }
        .expect("encodes a public key")
    }
}

#[derive(Default)]
struct Shared {
    keys: Mutex<HashMap<String, Key>>,
    faults: Mutex<Faults>,
    sign_requests: AtomicUsize,
    public_key_requests: AtomicUsize,
}

/// A running fake KMS on a loopback port.
pub struct FakeKms {
    endpoint: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A key version name in the fake's project.
pub fn key_version(key: &str, version: u32) -> String {
    format!(
        "projects/witness-test/locations/global/keyRings/witness/cryptoKeys/{key}/cryptoKeyVersions/{version}"
    )
}

impl FakeKms {
    /// Starts the fake on `127.0.0.1`, on a free port.
    pub async fn start() -> FakeKms {
        let shared = Arc::new(Shared::default());
        let router = Router::new()
            .route("/v1/{*rest}", get(get_handler).post(post_handler))
            .fallback(|| async { error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such method") })
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .expect("fake KMS serves");
        });
        FakeKms {
            endpoint,
            shared,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// The endpoint to configure: `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Creates a new random key version `name` of `algorithm`, and returns its
    /// public key as the backend reports it (raw 32 bytes for Ed25519, DER
    /// SubjectPublicKeyInfo for P-256).
    pub fn add_key(&self, name: &str, algorithm: KeyAlgorithm) -> Vec<u8> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("randomness");
        let (key, public) = match algorithm {
            KeyAlgorithm::Ed25519 => {
                let key = ed25519_dalek::SigningKey::from_bytes(&seed);
                let public = key.verifying_key().as_bytes().to_vec();
                (Key::Ed25519(Box::new(key)), public)
            }
            KeyAlgorithm::EcdsaP256 => {
                use p256::pkcs8::EncodePublicKey as _;
                let key = p256::ecdsa::SigningKey::from_slice(&seed).expect("scalar in range");
                let public = key
                    .verifying_key()
                    .to_public_key_der()
                    .expect("DER")
                    .into_vec();
                (Key::EcdsaP256(Box::new(key)), public)
            }
        };
        self.shared
            .keys
            .lock()
            .expect("lock")
            .insert(name.to_owned(), key);
        public
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().expect("lock") = faults;
    }

    /// How many `asymmetricSign` requests arrived (including refused ones).
    pub fn sign_requests(&self) -> usize {
        self.shared.sign_requests.load(Ordering::SeqCst)
    }

    /// How many `publicKey` requests arrived.
    pub fn public_key_requests(&self) -> usize {
        self.shared.public_key_requests.load(Ordering::SeqCst)
    }

    /// Stops serving: the port refuses connections afterwards.
    pub async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            // Graceful shutdown closes idle keep-alive connections; do not wait
            // for a client that keeps a request open.
            if tokio::time::timeout(std::time::Duration::from_secs(5), task)
                .await
                .is_err()
            {
                panic!("fake KMS did not stop");
            }
        }
    }
}

impl Drop for FakeKms {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// An error in the shape the Google REST APIs use.
fn error(http: StatusCode, status: &str, message: &str) -> Response {
    let body = json!({
        "error": {"code": http.as_u16(), "message": message, "status": status}
    });
    (
        http,
        [("content-type", "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

fn invalid(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
}

fn ok(body: Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

/// Whether the client asked for enums as numbers (`$alt=json;enum-encoding=int`).
fn enums_as_numbers(query: &HashMap<String, String>) -> bool {
    query
        .get("$alt")
        .is_some_and(|alt| alt.split(';').any(|part| part == "enum-encoding=int"))
}

fn algorithm_json(algorithm: KeyAlgorithm, numbers: bool) -> Value {
    if numbers {
        json!(algorithm.enum_number())
    } else {
        json!(algorithm.enum_name())
    }
}

fn protection_level_json(numbers: bool) -> Value {
    // SOFTWARE = 1.
    if numbers { json!(1) } else { json!("SOFTWARE") }
}

fn crc32c(bytes: &[u8]) -> u32 {
    ::crc32c::crc32c(bytes)
}

/// The int64 JSON mapping: a decimal string (what clients send), or a number.
fn parse_int64(value: &Value) -> Option<i64> {
    match value {
        Value::String(text) => text.parse().ok(),
        Value::Number(number) => number.as_i64(),
        _ => None,
    }
}

/// The bytes JSON mapping: standard or URL-safe base64, padded or not.
fn parse_bytes(value: &Value) -> Option<Vec<u8>> {
    use base64::alphabet;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let text = value.as_str()?;
    GeneralPurpose::new(&alphabet::STANDARD, config)
        .decode(text)
        .or_else(|_| GeneralPurpose::new(&alphabet::URL_SAFE, config).decode(text))
        .ok()
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn valid_key_version_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    let literals = [
        "projects",
        "locations",
        "keyRings",
        "cryptoKeys",
        "cryptoKeyVersions",
    ];
    parts.len() == 10
        && parts
            .chunks(2)
            .zip(literals)
            .all(|(pair, literal)| pair[0] == literal && !pair[1].is_empty())
}

fn not_found(name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        &format!("{name} not found."),
    )
}

/// Takes one injected 503, if any remain.
fn take_unavailable(shared: &Shared) -> Option<Response> {
    let mut faults = shared.faults.lock().expect("lock");
    if faults.unavailable > 0 {
        faults.unavailable -= 1;
        return Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "The service is currently unavailable.",
        ));
    }
    None
}

async fn get_handler(
    State(shared): State<Arc<Shared>>,
    Path(rest): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(name) = rest.strip_suffix("/publicKey") else {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such method");
    };
    shared.public_key_requests.fetch_add(1, Ordering::SeqCst);
    if !valid_key_version_name(name) {
        return invalid(&format!("Invalid resource name: {name}"));
    }
    // publicKeyFormat: absent, 0 (unspecified) or PEM (1) give the PEM.
    if let Some(format) = query.get("publicKeyFormat")
        && !matches!(
            format.as_str(),
            "0" | "1" | "PEM" | "PUBLIC_KEY_FORMAT_UNSPECIFIED"
        )
    {
        return invalid(&format!(
            "publicKeyFormat {format} is not supported by this fake"
        ));
    }
    if let Some(response) = take_unavailable(&shared) {
        return response;
    }
    let faults = shared.faults.lock().expect("lock").clone();
    let keys = shared.keys.lock().expect("lock");
    let Some(key) = keys.get(name) else {
        return not_found(name);
    };
    let numbers = enums_as_numbers(&query);
    let pem = key.public_key_pem();
    let mut pem_crc32c = crc32c(pem.as_bytes());
    if faults.wrong_pem_crc32c {
        pem_crc32c = pem_crc32c.wrapping_add(1);
    }
    ok(json!({
        "pem": pem,
        "algorithm": algorithm_json(key.algorithm(), numbers),
        "pemCrc32c": pem_crc32c.to_string(),
        "name": name,
        "protectionLevel": protection_level_json(numbers),
    }))
}

async fn post_handler(
    State(shared): State<Arc<Shared>>,
    Path(rest): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(name) = rest.strip_suffix(":asymmetricSign") else {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such method");
    };
    shared.sign_requests.fetch_add(1, Ordering::SeqCst);
    if !valid_key_version_name(name) {
        return invalid(&format!("Invalid resource name: {name}"));
    }
    let json_body = headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !json_body {
        return invalid(
            "Invalid JSON payload received: the content type must be application/json.",
        );
    }
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(&body) else {
        return invalid("Invalid JSON payload received.");
    };
    for field in request.keys() {
        if !matches!(
            field.as_str(),
            "name" | "digest" | "digestCrc32c" | "data" | "dataCrc32c"
        ) {
            return invalid(&format!(
                "Invalid JSON payload received. Unknown name \"{field}\": Cannot find field."
            ));
        }
    }
    if let Some(body_name) = request.get("name").and_then(Value::as_str)
        && body_name != name
    {
        return invalid("The name in the body does not match the name in the URL.");
    }
    if let Some(response) = take_unavailable(&shared) {
        return response;
    }
    let faults = shared.faults.lock().expect("lock").clone();
    let numbers = enums_as_numbers(&query);

    let (signature, verified_data) = {
        let keys = shared.keys.lock().expect("lock");
        let Some(key) = keys.get(name) else {
            return not_found(name);
        };
        let has_data = request.contains_key("data");
        let has_digest = request.contains_key("digest");
        if has_data && has_digest {
            return invalid("Only one of data and digest may be supplied.");
        }
        match key {
            Key::Ed25519(key) => {
                if has_digest || request.contains_key("digestCrc32c") {
                    return invalid(
                        "The algorithm EC_SIGN_ED25519 requires the data field; digest is not supported.",
                    );
                }
                // proto3: an absent bytes field is empty.
                let data = match request.get("data") {
                    Some(value) => match parse_bytes(value) {
                        Some(data) => data,
                        None => {
                            return invalid("Invalid value at 'data' (TYPE_BYTES): not base64.");
                        }
                    },
                    None => Vec::new(),
                };
                let Some(claimed) = request.get("dataCrc32c") else {
                    return invalid("fake KMS requires data_crc32c.");
                };
                let Some(claimed) = parse_int64(claimed) else {
                    return invalid("Invalid value at 'data_crc32c' (TYPE_INT64).");
                };
                if claimed != i64::from(crc32c(&data)) {
                    return invalid(
                        "The checksum in field data_crc32c did not match the data in field data.",
                    );
                }
                use ed25519_dalek::Signer as _;
                (key.sign(&data).to_bytes().to_vec(), true)
            }
            Key::EcdsaP256(key) => {
                if has_data || request.contains_key("dataCrc32c") {
                    return invalid(
                        "The algorithm EC_SIGN_P256_SHA256 requires the digest field; data is not supported.",
                    );
                }
                let Some(Value::Object(digest)) = request.get("digest") else {
                    return invalid("The digest field is required for EC_SIGN_P256_SHA256.");
                };
                if digest.len() != 1 || !digest.contains_key("sha256") {
                    return invalid(
                        "The digest type does not match the algorithm EC_SIGN_P256_SHA256.",
                    );
                }
                let Some(sha256) = digest.get("sha256").and_then(parse_bytes) else {
                    return invalid("Invalid value at 'digest.sha256' (TYPE_BYTES): not base64.");
                };
                if sha256.len() != 32 {
                    return invalid("The digest.sha256 field must be 32 bytes.");
                }
                let Some(claimed) = request.get("digestCrc32c") else {
                    return invalid("fake KMS requires digest_crc32c.");
                };
                let Some(claimed) = parse_int64(claimed) else {
                    return invalid("Invalid value at 'digest_crc32c' (TYPE_INT64).");
                };
                if claimed != i64::from(crc32c(&sha256)) {
                    return invalid(
                        "The checksum in field digest_crc32c did not match the data in field digest.",
                    );
                }
                use p256::ecdsa::signature::hazmat::PrehashSigner as _;
                let signature: p256::ecdsa::DerSignature =
                    key.sign_prehash(&sha256).expect("signs a prehash");
                (signature.as_bytes().to_vec(), false)
            }
        }
    };

    let mut signature = signature;
    if faults.corrupt_signature {
        let last = signature.len() - 1;
        signature[last] ^= 0x01;
    }
    let mut signature_crc32c = crc32c(&signature);
    if faults.wrong_signature_crc32c {
        signature_crc32c = signature_crc32c.wrapping_add(1);
    }
    let response_name = if faults.wrong_name {
        key_version("other", 1)
    } else {
        name.to_owned()
    };
    let mut response = json!({
        "signature": base64(&signature),
        "signatureCrc32c": signature_crc32c.to_string(),
        "name": response_name,
        "protectionLevel": protection_level_json(numbers),
    });
    // proto3 JSON leaves out fields at their default (false) value.
    if !faults.unverified_request_crc32c {
        let verified = if verified_data {
            "verifiedDataCrc32c"
        } else {
            "verifiedDigestCrc32c"
        };
        response[verified] = json!(true);
    }
    ok(response)
}
