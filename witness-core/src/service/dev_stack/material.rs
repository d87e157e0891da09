//! Everything a development stack generates once and reuses on later runs: a
//! development CA with the certificates of the three services, and the file
//! keys (the witness's cosigning key, the archive's manifest key, the built-in
//! log's key). Private keys are written owner-readable only.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use p256::pkcs8::LineEnding;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The client identity of the witness service (on the signer's allowlist).
pub const WITNESS_IDENTITY: &str = "spiffe://rekor-witness-quickstart/witness";
/// The client identity of the gateway (accepted by the witness's listener).
pub const GATEWAY_IDENTITY: &str = "spiffe://rekor-witness-quickstart/gateway";

/// Paths of the generated files.
pub struct Material {
    pub ca: PathBuf,
    pub signer_cert: PathBuf,
    pub signer_key: PathBuf,
    pub witness_server_cert: PathBuf,
    pub witness_server_key: PathBuf,
    pub witness_client_cert: PathBuf,
    pub witness_client_key: PathBuf,
    pub gateway_client_cert: PathBuf,
    pub gateway_client_key: PathBuf,
    pub cosigning_key: PathBuf,
    pub manifest_key: PathBuf,
    pub log_key: PathBuf,
}

impl Material {
    /// Loads the material under `dir` (`pki/` and `keys/`), generating whatever
    /// is missing. A partial earlier generation (an interrupted first run) is
    /// regenerated whole, so certificates always share one CA.
    pub fn load_or_generate(dir: &Path) -> Result<Material, String> {
        let pki = dir.join("pki");
        let keys = dir.join("keys");
        let material = Material {
            ca: pki.join("ca.pem"),
            signer_cert: pki.join("signer.pem"),
            signer_key: pki.join("signer.key"),
            witness_server_cert: pki.join("witness-server.pem"),
            witness_server_key: pki.join("witness-server.key"),
            witness_client_cert: pki.join("witness-client.pem"),
            witness_client_key: pki.join("witness-client.key"),
            gateway_client_cert: pki.join("gateway-client.pem"),
            gateway_client_key: pki.join("gateway-client.key"),
            cosigning_key: keys.join("witness-ed25519.pem"),
            manifest_key: keys.join("manifest-p256.pem"),
            log_key: keys.join("log-ed25519.pem"),
        };
        if !material.pki_files().iter().all(|p| p.exists()) {
            create_private_dir(&pki)?;
            material.generate_pki()?;
        }
        create_private_dir(&keys)?;
        if !material.cosigning_key.exists() {
            write_private(&material.cosigning_key, &new_ed25519_pem()?)?;
        }
        if !material.log_key.exists() {
            write_private(&material.log_key, &new_ed25519_pem()?)?;
        }
        if !material.manifest_key.exists() {
            write_private(&material.manifest_key, &new_p256_pem()?)?;
        }
        Ok(material)
    }

    fn pki_files(&self) -> [&PathBuf; 9] {
        [
            &self.ca,
            &self.signer_cert,
            &self.signer_key,
            &self.witness_server_cert,
            &self.witness_server_key,
            &self.witness_client_cert,
            &self.witness_client_key,
            &self.gateway_client_cert,
            &self.gateway_client_key,
        ]
    }

    fn generate_pki(&self) -> Result<(), String> {
        let rcgen_error = |e: rcgen::Error| format!("generating the development PKI: {e}");
        let mut params = CertificateParams::new(Vec::new()).map_err(rcgen_error)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, "rekor-witness development CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().map_err(rcgen_error)?;
        let ca_cert = params.self_signed(&ca_key).map_err(rcgen_error)?;
        let issuer = Issuer::new(params, ca_key);
        std::fs::write(&self.ca, ca_cert.pem())
            .map_err(|e| format!("writing {}: {e}", self.ca.display()))?;
        // The CA key is not kept: nothing more is ever issued from it.

        let localhost = || -> Result<Vec<SanType>, String> {
            Ok(vec![
                SanType::DnsName("localhost".try_into().map_err(rcgen_error)?),
                SanType::IpAddress([127, 0, 0, 1].into()),
            ])
        };
        let uri = |value: &str| -> Result<Vec<SanType>, String> {
            Ok(vec![SanType::URI(value.try_into().map_err(rcgen_error)?)])
        };
        let server = ExtendedKeyUsagePurpose::ServerAuth;
        let client = ExtendedKeyUsagePurpose::ClientAuth;
        for (sans, usage, cert, key, name) in [
            (
                localhost()?,
                server.clone(),
                &self.signer_cert,
                &self.signer_key,
                "signer-svc",
            ),
            (
                localhost()?,
                server,
                &self.witness_server_cert,
                &self.witness_server_key,
                "witness service",
            ),
            (
                uri(WITNESS_IDENTITY)?,
                client.clone(),
                &self.witness_client_cert,
                &self.witness_client_key,
                "witness service (client)",
            ),
            (
                uri(GATEWAY_IDENTITY)?,
                client,
                &self.gateway_client_cert,
                &self.gateway_client_key,
                "gateway (client)",
            ),
        ] {
            let mut params = CertificateParams::default();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params.distinguished_name.push(
                DnType::CommonName,
                format!("rekor-witness development {name}"),
            );
            params.subject_alt_names = sans;
            params.use_authority_key_identifier_extension = true;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![usage];
            let key_pair = KeyPair::generate().map_err(rcgen_error)?;
            let signed = params.signed_by(&key_pair, &issuer).map_err(rcgen_error)?;
            std::fs::write(cert, signed.pem())
                .map_err(|e| format!("writing {}: {e}", cert.display()))?;
            replace_private(key, &key_pair.serialize_pem())?;
        }
        Ok(())
    }

    /// The witness's cosigning key, for the printed vkey.
    pub fn cosigning_public_key(&self) -> Result<[u8; 32], String> {
        Ok(read_ed25519(&self.cosigning_key)?
            .verifying_key()
            .to_bytes())
    }

    /// The built-in log's signing key.
    pub fn log_signing_key(&self) -> Result<ed25519_dalek::SigningKey, String> {
        read_ed25519(&self.log_key)
    }
}

fn read_ed25519(path: &Path) -> Result<ed25519_dalek::SigningKey, String> {
    let pem =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    ed25519_dalek::SigningKey::from_pkcs8_pem(&pem)
        .map_err(|e| format!("{}: not an Ed25519 PKCS#8 key: {e}", path.display()))
}

fn random_32() -> Result<[u8; 32], String> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| "the system random generator failed")?;
    Ok(bytes)
}

fn new_ed25519_pem() -> Result<String, String> {
    let key = ed25519_dalek::SigningKey::from_bytes(&random_32()?);
    key.to_pkcs8_pem(LineEnding::LF)
        .map(|pem| pem.to_string())
        .map_err(|e| format!("encoding an Ed25519 key: {e}"))
}

fn new_p256_pem() -> Result<String, String> {
    // A uniformly random scalar is out of range with probability ~2^-32.
    for _ in 0..8 {
        if let Ok(key) = p256::SecretKey::from_slice(&random_32()?) {
            return key
                .to_pkcs8_pem(LineEnding::LF)
                .map(|pem| pem.to_string())
                .map_err(|e| format!("encoding a P-256 key: {e}"));
        }
    }
    Err("could not draw a P-256 key".into())
}

fn create_private_dir(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| format!("creating {}: {e}", path.display()))
}

/// Writes a new file readable by its owner only (refuses to overwrite).
fn write_private(path: &Path, contents: &str) -> Result<(), String> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Like [`write_private`], replacing a leftover of an interrupted run.
fn replace_private(path: &Path, contents: &str) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("removing {}: {e}", path.display())),
    }
    write_private(path, contents)
}
