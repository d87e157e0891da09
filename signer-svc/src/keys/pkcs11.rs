//! The `pkcs11` backend: a private key that never leaves a PKCS#11 token (an
//! HSM, or SoftHSM2 in tests), for Ed25519 (`CKM_EDDSA`, pure) and ECDSA P-256
//! (`CKM_ECDSA` over a SHA-256 digest computed here). ML-DSA-44 is not
//! supported: PKCS#11 3.2 tokens that implement it are not yet available.
//!
//! At start-up the backend loads the module, finds the token by label, logs in
//! as the user with the PIN from an owner-only file, finds the private key and
//! its public key by `CKA_LABEL`, checks that the key is of the configured
//! algorithm, and makes one signature that it verifies with the public key, so
//! that a mismatched pair or a token without the mechanism stops the signer
//! from starting instead of failing its first request.
//!
//! Sessions: a PKCS#11 session may be used by one thread at a time, so the key
//! keeps a small pool of sessions, at most [`POOL_SIZE`], each used by one
//! signing call at a time under a semaphore permit, on a blocking thread
//! (`spawn_blocking`). The module is initialised with `CKF_OS_LOCKING_OK`, so
//! calls on different sessions may run in parallel. A separate session holds
//! the user login for the lifetime of the key (in PKCS#11 the login belongs to
//! the application and ends when its last session on the token closes); it is
//! not used for signing. A session whose call fails is closed, not reused.
//!
//! Lost sessions and logins: a token may log the application out, close its
//! sessions, or go away and come back (`CKR_USER_NOT_LOGGED_IN`,
//! `CKR_SESSION_HANDLE_INVALID`, `CKR_SESSION_CLOSED`, `CKR_TOKEN_NOT_PRESENT`,
//! `CKR_DEVICE_REMOVED`, and `CKR_KEY_HANDLE_INVALID` /
//! `CKR_OBJECT_HANDLE_INVALID` from tokens that drop the handles of private
//! objects at logout). On such a failure the key opens a new session, logs in
//! again with the PIN (kept in memory for this, zeroised when the key is
//! dropped), finds its private key again by label (handles may change), and
//! retries the signature once. Sessions whose handles the token voided are
//! forgotten rather than closed: the token may already have given their
//! numbers to new sessions. Calls that fail together re-establish once: each
//! notes the generation of the sessions it used, and only the first to report
//! a loss of that generation logs in again. If the token is still away, the
//! call fails (`UNAVAILABLE`) and the next one tries again.
//!
//! A module is loaded and `C_Initialize`d once per process and never
//! finalised: several keys (the cosigning key and the manifest key) may share
//! one module and one token. Because the login belongs to the application, a
//! second key on a token where the signer is already logged in does not log in
//! again (and so does not re-check its PIN).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::RawAuthPin;
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

use super::{Algorithm, BoxFuture, SigningKey};
use crate::error::{Error, Result};

/// The most sessions (and so concurrent signing calls) one key uses.
pub const POOL_SIZE: usize = 4;

/// DER of the P-256 (prime256v1, secp256r1) curve OID, 1.2.840.10045.3.1.7.
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the Ed25519 OID, 1.3.101.112 (RFC 8410).
const ED25519_OID_PARAMS: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// DER PrintableString "edwards25519", the curve name PKCS#11 3.0 also allows.
const ED25519_NAME_PARAMS: &[u8] = b"\x13\x0cedwards25519";

/// The message of the start-up self-test signature.
const SELF_TEST_MESSAGE: &[u8] = b"rekor-witness signer-svc pkcs11 self-test";

/// A key in a PKCS#11 token.
pub struct Pkcs11Key {
    inner: Arc<Inner>,
    public: Vec<u8>,
}

/// What a signing call needs, shared with the blocking threads.
struct Inner {
    pkcs11: Pkcs11,
    slot: Slot,
    scheme: Scheme,
    /// "key `k` on token `t`", for messages.
    name: String,
    /// The private key object's label, to find it again after a new login.
    key_label: String,
    /// The user PIN, to log in again when the token lost the login.
    pin: RawAuthPin,
    sessions: Mutex<Sessions>,
    /// One permit per session the pool may have.
    permits: Arc<Semaphore>,
}

/// The sessions and the key handle, valid together until the token loses them.
struct Sessions {
    key: ObjectHandle,
    /// Idle sessions; a session is taken out while it is in use.
    idle: Vec<Session>,
    /// Holds the user login; never used for signing.
    login: Session,
    /// Counts re-established logins, so that calls failing together log in
    /// again once.
    generation: u64,
}

/// What a token lost, judging by the error of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loss {
    /// The sessions are gone (closed by the token, or the token was removed):
    /// their handles are void.
    Sessions,
    /// The sessions are open but the login is gone, and with it, on some
    /// tokens, the handles of private objects.
    Login,
}

impl Loss {
    fn of(error: &CkError) -> Option<Loss> {
        match error {
            CkError::Pkcs11(
                RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::TokenNotPresent
                | RvError::DeviceRemoved,
                _,
            ) => Some(Loss::Sessions),
            CkError::Pkcs11(
                RvError::UserNotLoggedIn | RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid,
                _,
            ) => Some(Loss::Login),
            _ => None,
        }
    }
}

/// A failed signing attempt and the generation of the sessions it used.
struct Failed {
    error: CkError,
    generation: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Ed25519,
    EcdsaP256,
}

impl Scheme {
    fn algorithm(self) -> Algorithm {
        match self {
            Scheme::Ed25519 => Algorithm::Ed25519,
            Scheme::EcdsaP256 => Algorithm::EcdsaP256,
        }
    }

    fn mechanism(self) -> Mechanism<'static> {
        match self {
            Scheme::Ed25519 => Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
            Scheme::EcdsaP256 => Mechanism::Ecdsa,
        }
    }

    /// What goes to `C_Sign`: the message itself (EdDSA) or its SHA-256 digest
    /// (`CKM_ECDSA` signs a digest).
    fn input(self, message: &[u8]) -> Vec<u8> {
        match self {
            Scheme::Ed25519 => message.to_vec(),
            Scheme::EcdsaP256 => Sha256::digest(message).to_vec(),
        }
    }

    /// Converts what the token returned to the trait's encoding: the raw
    /// 64-byte Ed25519 signature, or ASN.1 DER for ECDSA (tokens return r || s).
    fn encode(self, raw: &[u8]) -> Result<Vec<u8>> {
        match self {
            Scheme::Ed25519 if raw.len() == 64 => Ok(raw.to_vec()),
            Scheme::Ed25519 => Err(Error::Backend(format!(
                "the token returned a {}-byte Ed25519 signature",
                raw.len()
            ))),
            Scheme::EcdsaP256 => p256::ecdsa::Signature::from_slice(raw)
                .map(|signature| signature.to_der().as_bytes().to_vec())
                .map_err(|_| {
                    Error::Backend(format!(
                        "the token returned a {}-byte ECDSA signature that is not r || s",
                        raw.len()
                    ))
                }),
        }
    }
}

impl Pkcs11Key {
    /// Loads the key labelled `key_label` in the token labelled `token_label`
    /// of `module`, logging in with the PIN in `pin_file`. Every problem is an
    /// [`Error::Config`]: the signer does not start.
    pub fn load(
        module: &Path,
        token_label: &str,
        key_label: &str,
        pin_file: &Path,
        algorithm: Algorithm,
    ) -> Result<Pkcs11Key> {
        let scheme = match algorithm {
            Algorithm::Ed25519 => Scheme::Ed25519,
            Algorithm::EcdsaP256 => Scheme::EcdsaP256,
            Algorithm::MlDsa44 => {
                return Err(Error::Config(
                    "ML-DSA-44 keys are not supported by the pkcs11 backend; use the file backend"
                        .into(),
                ));
            }
        };
        let pin = read_pin(pin_file)?;
        let pkcs11 = context(module)?;
        let slot = find_token(&pkcs11, module, token_label)?;
        let name = format!("key {key_label:?} on token {token_label:?}");
        let config =
            |what: &str, e: CkError| Error::Config(format!("{name}: {what}: {}", describe(&e)));

        let login = pkcs11
            .open_ro_session(slot)
            .map_err(|e| config("cannot open a session", e))?;
        match login.login_with_raw(UserType::User, &pin) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(Error::Config(format!(
                    "login to token {token_label:?} failed: the PIN in {} is incorrect",
                    pin_file.display()
                )));
            }
            Err(e) => return Err(config("login failed", e)),
        }

        let key =
            find_one(&login, ObjectClass::PRIVATE_KEY, key_label, &name).map_err(Error::Config)?;
        let public_handle =
            find_one(&login, ObjectClass::PUBLIC_KEY, key_label, &name).map_err(Error::Config)?;
        let private_type = key_type(&login, key, &name)?;
        let attributes = login
            .get_attributes(
                public_handle,
                &[
                    AttributeType::KeyType,
                    AttributeType::EcParams,
                    AttributeType::EcPoint,
                ],
            )
            .map_err(|e| config("cannot read the public key", e))?;
        let (mut public_type, mut params, mut point) = (None, None, None);
        for attribute in attributes {
            match attribute {
                Attribute::KeyType(t) => public_type = Some(t),
                Attribute::EcParams(p) => params = Some(p),
                Attribute::EcPoint(p) => point = Some(p),
                _ => {}
            }
        }
        if public_type != Some(private_type) {
            return Err(Error::Config(format!(
                "{name}: the public key object has another key type than the private key"
            )));
        }
        let (Some(params), Some(point)) = (params, point) else {
            return Err(Error::Config(format!(
                "{name}: the public key has no CKA_EC_PARAMS or CKA_EC_POINT"
            )));
        };
        let found = key_algorithm(private_type, &params);
        if found != Some(scheme) {
            let found = match found {
                Some(found) => format!("an {} key", found.algorithm().label()),
                None => key_type_name(private_type, &params),
            };
            return Err(Error::Config(format!(
                "{name} is {found}, but the configuration expects {}",
                scheme.algorithm().label()
            )));
        }
        let public = public_key(scheme, &point).ok_or_else(|| {
            Error::Config(format!(
                "{name}: cannot decode the public key (CKA_EC_POINT)"
            ))
        })?;

        // Self-test: the token signs with the key and mechanism, and the
        // signature verifies with the public key we will publish.
        let raw = login
            .sign(&scheme.mechanism(), key, &scheme.input(SELF_TEST_MESSAGE))
            .map_err(|e| config("the self-test signature failed", e))?;
        let signature = scheme.encode(&raw)?;
        if !verify(scheme, &public, SELF_TEST_MESSAGE, &signature) {
            return Err(Error::Config(format!(
                "{name}: the self-test signature does not verify with the public key labelled {key_label:?}; \
                 the private and public key objects are not one key pair"
            )));
        }

        Ok(Pkcs11Key {
            inner: Arc::new(Inner {
                pkcs11,
                slot,
                scheme,
                name,
                key_label: key_label.to_owned(),
                pin,
                sessions: Mutex::new(Sessions {
                    key,
                    idle: Vec::with_capacity(POOL_SIZE),
                    login,
                    generation: 0,
                }),
                permits: Arc::new(Semaphore::new(POOL_SIZE)),
            }),
            public,
        })
    }
}

impl Inner {
    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        // Every update of the sessions completes under the lock without
        // panicking paths; a poisoned lock still holds a consistent pool.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn failed(&self, what: &str, error: &CkError) -> Error {
        Error::Backend(format!("{}: {what}: {}", self.name, describe(error)))
    }

    /// One signature; runs on a blocking thread while the caller holds a
    /// permit, so there is always a session to take or room to open one. A lost
    /// session or login is re-established and the signature tried once more.
    fn sign_blocking(&self, input: &[u8]) -> Result<Vec<u8>> {
        let raw = match self.try_sign(input) {
            Ok(raw) => raw,
            Err(failed) => {
                let Some(loss) = Loss::of(&failed.error) else {
                    return Err(self.failed("C_Sign failed", &failed.error));
                };
                tracing::warn!(
                    key = %self.name,
                    error = %describe(&failed.error),
                    "PKCS#11 session or login lost; logging in again"
                );
                self.reestablish(failed.generation, loss)?;
                self.try_sign(input).map_err(|retry| {
                    self.failed("C_Sign failed after logging in again", &retry.error)
                })?
            }
        };
        self.scheme.encode(&raw)
    }

    /// One `C_Sign` on a pooled (or new) session, which goes back to the pool
    /// if it worked.
    fn try_sign(&self, input: &[u8]) -> std::result::Result<Vec<u8>, Failed> {
        let (pooled, key, generation) = {
            let mut sessions = self.sessions();
            (sessions.idle.pop(), sessions.key, sessions.generation)
        };
        let session = match pooled {
            Some(session) => session,
            None => self
                .pkcs11
                .open_ro_session(self.slot)
                .map_err(|error| Failed { error, generation })?,
        };
        match session.sign(&self.scheme.mechanism(), key, input) {
            Ok(raw) => {
                self.sessions().idle.push(session);
                Ok(raw)
            }
            Err(error) => {
                if Loss::of(&error) == Some(Loss::Sessions) {
                    // Void handle: closing it could close whichever new session
                    // the token gave its number to.
                    std::mem::forget(session);
                }
                // Otherwise the session is dropped (closed); the next call
                // opens a fresh one.
                Err(Failed { error, generation })
            }
        }
    }

    /// Opens a new session, logs in, and finds the key again, unless a call
    /// that failed with the same generation of sessions already did.
    fn reestablish(&self, generation: u64, loss: Loss) -> Result<()> {
        let mut sessions = self.sessions();
        if sessions.generation != generation {
            return Ok(());
        }
        let login = self
            .pkcs11
            .open_ro_session(self.slot)
            .map_err(|e| self.failed("cannot open a session", &e))?;
        match login.login_with_raw(UserType::User, &self.pin) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(self.failed("login failed", &e)),
        }
        let key = find_one(
            &login,
            ObjectClass::PRIVATE_KEY,
            &self.key_label,
            &self.name,
        )
        .map_err(Error::Backend)?;
        let old_login = std::mem::replace(&mut sessions.login, login);
        if loss == Loss::Sessions {
            for session in sessions.idle.drain(..) {
                std::mem::forget(session);
            }
            std::mem::forget(old_login);
        }
        // After a lost login the old sessions are valid: the idle ones work
        // again under the new login, and closing the old login session keeps
        // the application logged in through the new one.
        sessions.key = key;
        sessions.generation += 1;
        Ok(())
    }
}

impl SigningKey for Pkcs11Key {
    fn algorithm(&self) -> Algorithm {
        self.inner.scheme.algorithm()
    }

    fn public_key(&self) -> &[u8] {
        &self.public
    }

    fn sign<'a>(&'a self, message: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(async move {
            let input = self.inner.scheme.input(message);
            let permit = self
                .inner
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Error::Backend("the PKCS#11 session pool is closed".into()))?;
            let inner = self.inner.clone();
            // The permit moves into the blocking call: it is released when the
            // session is back in the pool, even if this future is dropped first.
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                inner.sign_blocking(&input)
            })
            .await
            .map_err(|e| Error::Backend(format!("PKCS#11 signing task failed: {e}")))?
        })
    }
}

/// The process-wide context of a module: loaded and initialised on first use,
/// then kept (and never finalised), since `C_Initialize` is once per process.
fn context(module: &Path) -> Result<Pkcs11> {
    static MODULES: Mutex<Vec<(PathBuf, Pkcs11)>> = Mutex::new(Vec::new());
    let path = std::fs::canonicalize(module)
        .map_err(|e| Error::Config(format!("PKCS#11 module {}: {e}", module.display())))?;
    let mut modules = MODULES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, pkcs11)) = modules.iter().find(|(loaded, _)| *loaded == path) {
        return Ok(pkcs11.clone());
    }
    let pkcs11 = Pkcs11::new(&path).map_err(|e| {
        Error::Config(format!(
            "cannot load the PKCS#11 module {}: {}",
            module.display(),
            describe(&e)
        ))
    })?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Already initialised by another user of the module in this process.
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(Error::Config(format!(
                "cannot initialise the PKCS#11 module {}: {}",
                module.display(),
                describe(&e)
            )));
        }
    }
    modules.push((path, pkcs11.clone()));
    Ok(pkcs11)
}

/// Reads the user PIN: the file must be owner-only; one trailing newline is
/// not part of the PIN.
fn read_pin(path: &Path) -> Result<RawAuthPin> {
    super::file::check_private_file_mode(path)?;
    let mut pin = std::fs::read(path)
        .map_err(|e| Error::Config(format!("cannot read PIN file {}: {e}", path.display())))?;
    if pin.last() == Some(&b'\n') {
        pin.pop();
        if pin.last() == Some(&b'\r') {
            pin.pop();
        }
    }
    if pin.is_empty() {
        return Err(Error::Config(format!(
            "PIN file {} is empty",
            path.display()
        )));
    }
    Ok(RawAuthPin::new(Box::new(pin)))
}

/// The slot of the one initialised token labelled `label`.
fn find_token(pkcs11: &Pkcs11, module: &Path, label: &str) -> Result<Slot> {
    let failed = |e: CkError| {
        Error::Config(format!(
            "cannot list the tokens of PKCS#11 module {}: {}",
            module.display(),
            describe(&e)
        ))
    };
    let mut matching = Vec::new();
    let mut others = Vec::new();
    for slot in pkcs11.get_slots_with_initialized_token().map_err(failed)? {
        let info = pkcs11.get_token_info(slot).map_err(failed)?;
        if info.label() == label {
            matching.push(slot);
        } else {
            others.push(format!("{:?}", info.label()));
        }
    }
    match matching[..] {
        [slot] => Ok(slot),
        [] => Err(Error::Config(format!(
            "no initialised token labelled {label:?} in PKCS#11 module {} (tokens found: {})",
            module.display(),
            if others.is_empty() {
                "none".into()
            } else {
                others.join(", ")
            }
        ))),
        _ => Err(Error::Config(format!(
            "{} tokens are labelled {label:?} in PKCS#11 module {}; token labels must be unique",
            matching.len(),
            module.display()
        ))),
    }
}

/// The one object of `class` labelled `label`, or what is wrong.
fn find_one(
    session: &Session,
    class: ObjectClass,
    label: &str,
    name: &str,
) -> std::result::Result<ObjectHandle, String> {
    let what = if class == ObjectClass::PRIVATE_KEY {
        "private"
    } else {
        "public"
    };
    let found = session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| format!("{name}: cannot search for the {what} key: {}", describe(&e)))?;
    match found[..] {
        [handle] => Ok(handle),
        [] => Err(format!("{name}: no {what} key object has this label")),
        _ => Err(format!(
            "{name}: {} {what} key objects have this label; it must be unique",
            found.len()
        )),
    }
}

fn key_type(session: &Session, key: ObjectHandle, name: &str) -> Result<KeyType> {
    let attributes = session
        .get_attributes(key, &[AttributeType::KeyType])
        .map_err(|e| {
            Error::Config(format!(
                "{name}: cannot read the private key: {}",
                describe(&e)
            ))
        })?;
    attributes
        .into_iter()
        .find_map(|attribute| match attribute {
            Attribute::KeyType(t) => Some(t),
            _ => None,
        })
        .ok_or_else(|| Error::Config(format!("{name}: the private key has no CKA_KEY_TYPE")))
}

/// The scheme of a key, if it is one this backend signs with.
fn key_algorithm(key_type: KeyType, params: &[u8]) -> Option<Scheme> {
    if key_type == KeyType::EC_EDWARDS
        && (params == ED25519_OID_PARAMS || params == ED25519_NAME_PARAMS)
    {
        Some(Scheme::Ed25519)
    } else if key_type == KeyType::EC && params == P256_PARAMS {
        Some(Scheme::EcdsaP256)
    } else {
        None
    }
}

/// A description of a key this backend does not sign with, for messages.
fn key_type_name(key_type: KeyType, params: &[u8]) -> String {
    if key_type == KeyType::EC_EDWARDS {
        format!(
            "an EdDSA key on a curve other than Ed25519 (CKA_EC_PARAMS {})",
            hex::encode(params)
        )
    } else if key_type == KeyType::EC {
        format!(
            "an EC key on a curve other than P-256 (CKA_EC_PARAMS {})",
            hex::encode(params)
        )
    } else {
        format!("a key of type {key_type}")
    }
}

/// The public key in the trait's encoding from `CKA_EC_POINT`, which PKCS#11
/// says is a DER OCTET STRING; some tokens store the bare point instead.
fn public_key(scheme: Scheme, point: &[u8]) -> Option<Vec<u8>> {
    match scheme {
        Scheme::Ed25519 => {
            let bytes = if point.len() == 32 {
                point
            } else {
                der_octet_string(point)?
            };
            let bytes: [u8; 32] = bytes.try_into().ok()?;
            ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok()?;
            Some(bytes.to_vec())
        }
        Scheme::EcdsaP256 => {
            use p256::pkcs8::EncodePublicKey as _;
            let bytes = if point.len() == 65 && point[0] == 0x04 {
                point
            } else {
                der_octet_string(point)?
            };
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(bytes).ok()?;
            Some(key.to_public_key_der().ok()?.into_vec())
        }
    }
}

/// The contents of a DER OCTET STRING that is all of `der`.
fn der_octet_string(der: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    if tag != 0x04 {
        return None;
    }
    let (len, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81 => {
            let (&len, rest) = rest.split_first()?;
            (usize::from(len), rest)
        }
        _ => return None,
    };
    (rest.len() == len).then_some(rest)
}

/// Verifies a signature in the trait's encoding, for the self-test.
fn verify(scheme: Scheme, public: &[u8], message: &[u8], signature: &[u8]) -> bool {
    match scheme {
        Scheme::Ed25519 => {
            let (Ok(public), Ok(signature)) = (
                <[u8; 32]>::try_from(public),
                ed25519_dalek::Signature::from_slice(signature),
            ) else {
                return false;
            };
            ed25519_dalek::VerifyingKey::from_bytes(&public)
                .is_ok_and(|key| key.verify_strict(message, &signature).is_ok())
        }
        Scheme::EcdsaP256 => {
            use p256::ecdsa::signature::Verifier as _;
            use p256::pkcs8::DecodePublicKey as _;
            let (Ok(key), Ok(signature)) = (
                p256::ecdsa::VerifyingKey::from_public_key_der(public),
                p256::ecdsa::DerSignature::try_from(signature),
            ) else {
                return false;
            };
            key.verify(message, &signature).is_ok()
        }
    }
}

/// A short description of a PKCS#11 failure: the function and the return
/// value's name (`C_Login: PinIncorrect`), not the spec's paragraph.
fn describe(error: &CkError) -> String {
    match error {
        CkError::Pkcs11(rv, function) => format!("C_{function:?}: {rv:?}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_point_is_accepted_wrapped_in_an_octet_string_or_bare() {
        let ed25519 = ed25519_dalek::SigningKey::from_bytes(&[7; 32])
            .verifying_key()
            .to_bytes();
        let mut wrapped = vec![0x04, 0x20];
        wrapped.extend_from_slice(&ed25519);
        assert_eq!(public_key(Scheme::Ed25519, &wrapped).unwrap(), ed25519);
        assert_eq!(public_key(Scheme::Ed25519, &ed25519).unwrap(), ed25519);
        assert!(public_key(Scheme::Ed25519, &wrapped[..33]).is_none());
        assert!(public_key(Scheme::Ed25519, &[0x04, 0x21, 0].repeat(12)).is_none());

        use p256::pkcs8::EncodePublicKey as _;
        let p256 = *p256::ecdsa::SigningKey::from_slice(&[7; 32])
            .unwrap()
            .verifying_key();
        let point = p256.to_sec1_point(false);
        let point = point.as_bytes();
        assert_eq!(point.len(), 65);
        let spki = p256.to_public_key_der().unwrap().into_vec();
        let mut wrapped = vec![0x04, 0x41];
        wrapped.extend_from_slice(point);
        assert_eq!(public_key(Scheme::EcdsaP256, &wrapped).unwrap(), spki);
        assert_eq!(public_key(Scheme::EcdsaP256, point).unwrap(), spki);
        let mut long_form = vec![0x04, 0x81, 0x41];
        long_form.extend_from_slice(point);
        assert_eq!(public_key(Scheme::EcdsaP256, &long_form).unwrap(), spki);
        assert!(public_key(Scheme::EcdsaP256, &wrapped[..66]).is_none());
    }

    #[test]
    fn curves_are_recognised_by_key_type_and_params() {
        assert_eq!(
            key_algorithm(KeyType::EC_EDWARDS, ED25519_OID_PARAMS),
            Some(Scheme::Ed25519)
        );
        assert_eq!(
            key_algorithm(KeyType::EC_EDWARDS, ED25519_NAME_PARAMS),
            Some(Scheme::Ed25519)
        );
        assert_eq!(
            key_algorithm(KeyType::EC, P256_PARAMS),
            Some(Scheme::EcdsaP256)
        );
        assert_eq!(key_algorithm(KeyType::EC, ED25519_OID_PARAMS), None);
        assert_eq!(key_algorithm(KeyType::EC_EDWARDS, P256_PARAMS), None);
        // Ed448 (1.3.101.113).
        assert_eq!(
            key_algorithm(KeyType::EC_EDWARDS, &[0x06, 0x03, 0x2b, 0x65, 0x71]),
            None
        );
        assert_eq!(key_algorithm(KeyType::RSA, &[]), None);
    }

    #[test]
    fn token_signatures_are_converted_to_the_trait_encoding() {
        assert_eq!(Scheme::Ed25519.encode(&[1; 64]).unwrap(), [1; 64]);
        assert!(Scheme::Ed25519.encode(&[1; 63]).is_err());
        let der = Scheme::EcdsaP256.encode(&[1; 64]).unwrap();
        assert_eq!(der[0], 0x30);
        assert!(p256::ecdsa::DerSignature::try_from(der.as_slice()).is_ok());
        assert!(Scheme::EcdsaP256.encode(&[1; 70]).is_err());
        assert_eq!(Scheme::EcdsaP256.input(b"m"), Sha256::digest(b"m").to_vec());
        assert_eq!(Scheme::Ed25519.input(b"m"), b"m");
    }
}
