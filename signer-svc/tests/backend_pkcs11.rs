//! The backend suite against the `pkcs11` backend on a real SoftHSM2 token, and
//! its refusals: wrong PIN, unknown token or key, a PIN file others can read, a
//! key of another algorithm, a mismatched or ambiguous key pair.
//!
//! SoftHSM2 finds its tokens through `SOFTHSM2_CONF`, which is process-wide and
//! read when the module is initialised (once per process), and the workspace
//! forbids the `unsafe` needed to set an environment variable in-process. So
//! [`softhsm2_backend`] creates the token directory, configuration and token,
//! then runs this test binary again as a child process with `SOFTHSM2_CONF`
//! set, running only [`softhsm2_cases`], which does every PKCS#11 call in
//! sequence. SoftHSM2 missing is a failure, not a skip.

#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use signer_svc::config::KeyRef;
use signer_svc::error::Error;
use signer_svc::keys::pkcs11::Pkcs11Key;
use signer_svc::keys::{Algorithm, SigningKey};

const TOKEN: &str = "witness-test";
const OTHER_TOKEN: &str = "other-token";
const SO_PIN: &str = "87654321";
const USER_PIN: &str = "246810";

/// The environment variable that carries the test directory to the child.
const DIR_VAR: &str = "SIGNER_SVC_PKCS11_TEST_DIR";
/// The environment variable that carries the module path to the child.
const MODULE_VAR: &str = "SIGNER_SVC_PKCS11_MODULE";

const MODULE_PATHS: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

/// DER OIDs for `CKA_EC_PARAMS`.
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

fn softhsm2_module() -> PathBuf {
    if let Some(path) = std::env::var_os("SOFTHSM2_MODULE") {
        let path = PathBuf::from(path);
        assert!(
            path.exists(),
            "SOFTHSM2_MODULE={} does not exist",
            path.display()
        );
        return path;
    }
    MODULE_PATHS.iter().map(PathBuf::from).find(|path| path.exists()).unwrap_or_else(|| {
        panic!(
            "SoftHSM2 is required by the pkcs11 backend tests but its module was not found at any of {MODULE_PATHS:?} \
             (or SOFTHSM2_MODULE): install it with `apt-get install -y softhsm2` (scripts/test does this)"
        )
    })
}

fn softhsm2_util(conf: &Path, args: &[&str]) -> String {
    let output = Command::new("softhsm2-util")
        .args(args)
        .env("SOFTHSM2_CONF", conf)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "SoftHSM2 is required by the pkcs11 backend tests but `softhsm2-util` cannot run ({e}): \
                 install it with `apt-get install -y softhsm2` (scripts/test does this)"
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "softhsm2-util {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn write_file(path: &Path, contents: &str, mode: u32) {
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Sets up a SoftHSM2 configuration and two tokens in a temporary directory,
/// then runs [`softhsm2_cases`] in a child process that uses them.
#[test]
fn softhsm2_backend() {
    let module = softhsm2_module();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    write_file(
        &conf,
        &format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            tokens.display()
        ),
        0o600,
    );
    let version = softhsm2_util(&conf, &["--version"]);
    println!("SoftHSM2 {}", version.trim());
    for label in [TOKEN, OTHER_TOKEN] {
        softhsm2_util(
            &conf,
            &[
                "--init-token",
                "--free",
                "--label",
                label,
                "--so-pin",
                SO_PIN,
                "--pin",
                USER_PIN,
            ],
        );
    }
    write_file(&dir.path().join("pin"), &format!("{USER_PIN}\n"), 0o600);
    write_file(
        &dir.path().join("pin-crlf"),
        &format!("{USER_PIN}\r\n"),
        0o400,
    );
    write_file(&dir.path().join("wrong-pin"), "135790\n", 0o600);
    write_file(
        &dir.path().join("readable-pin"),
        &format!("{USER_PIN}\n"),
        0o644,
    );
    write_file(&dir.path().join("empty-pin"), "\n", 0o600);

    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "softhsm2_cases",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .env(DIR_VAR, dir.path())
        .env(MODULE_VAR, &module)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "the SoftHSM2 cases failed (output above)"
    );
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "the SoftHSM2 cases did not run (output above)"
    );
}

/// Key pairs the cases load, generated in the token through cryptoki.
struct Provisioned {
    ed25519: &'static str,
    p256: &'static str,
    /// Whether the token accepted an Ed25519 key with its curve named
    /// "edwards25519" (labelled `named-ed25519`).
    named_ed25519: bool,
}

fn generate(
    session: &Session,
    mechanism: &Mechanism,
    params: &[u8],
    private_label: &str,
    public_label: &str,
) {
    let public = [
        Attribute::Token(true),
        Attribute::Verify(true),
        Attribute::EcParams(params.to_vec()),
        Attribute::Label(public_label.as_bytes().to_vec()),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Label(private_label.as_bytes().to_vec()),
    ];
    session.generate_key_pair(mechanism, &public, &private).unwrap_or_else(|e| {
        panic!("SoftHSM2 cannot generate the key pair {private_label:?} (CKA_EC_PARAMS {params:02x?}): {e}")
    });
}

fn provision(pkcs11: &Pkcs11) -> Provisioned {
    let slot = pkcs11
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|slot| pkcs11.get_token_info(*slot).unwrap().label() == TOKEN)
        .unwrap();
    let session = pkcs11.open_rw_session(slot).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::new(USER_PIN.into())))
        .unwrap();
    let edwards = Mechanism::EccEdwardsKeyPairGen;
    let ec = Mechanism::EccKeyPairGen;
    generate(
        &session,
        &edwards,
        ED25519_OID,
        "cosign-ed25519",
        "cosign-ed25519",
    );
    generate(&session, &ec, P256_OID, "manifest-p256", "manifest-p256");
    // An Ed25519 key whose curve is named by the printable string PKCS#11 3.0
    // also allows, where the token accepts it.
    let named = [0x13, 0x0c]
        .iter()
        .chain(b"edwards25519")
        .copied()
        .collect::<Vec<u8>>();
    let public = [
        Attribute::Token(true),
        Attribute::Verify(true),
        Attribute::EcParams(named),
        Attribute::Label(b"named-ed25519".to_vec()),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Sign(true),
        Attribute::Label(b"named-ed25519".to_vec()),
    ];
    let named_ed25519 = match session.generate_key_pair(&edwards, &public, &private) {
        Ok(_) => true,
        Err(e) => {
            println!(
                "SoftHSM2 refuses CKA_EC_PARAMS \"edwards25519\" ({e}); only the OID is tested"
            );
            false
        }
    };
    // A P-384 key: an EC key, but not on P-256.
    generate(&session, &ec, P384_OID, "p384", "p384");
    // Two pairs whose private key and public key share a label but are not one pair.
    generate(
        &session,
        &edwards,
        ED25519_OID,
        "mismatched",
        "mismatched-unused-public",
    );
    generate(
        &session,
        &edwards,
        ED25519_OID,
        "mismatched-unused-private",
        "mismatched",
    );
    // Two pairs with the same label.
    generate(&session, &edwards, ED25519_OID, "duplicate", "duplicate");
    generate(&session, &edwards, ED25519_OID, "duplicate", "duplicate");
    // A private key without its public key object.
    generate(
        &session,
        &edwards,
        ED25519_OID,
        "no-public",
        "no-public-deleted",
    );
    let public = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Label(b"no-public-deleted".to_vec()),
        ])
        .unwrap();
    session.destroy_object(public[0]).unwrap();
    // Closing the only session logs the application out, so that the wrong
    // PIN case below really checks the PIN.
    drop(session);
    Provisioned {
        ed25519: "cosign-ed25519",
        p256: "manifest-p256",
        named_ed25519,
    }
}

fn key_ref(module: &Path, token: &str, key: &str, pin_file: &Path) -> KeyRef {
    KeyRef::Pkcs11 {
        module: module.to_path_buf(),
        token_label: token.into(),
        key_label: key.into(),
        pin_file: pin_file.to_path_buf(),
    }
}

/// A load that must fail with `Error::Config` whose message has every part of `expected`.
#[track_caller]
fn refused(result: signer_svc::error::Result<Arc<dyn SigningKey>>, expected: &[&str]) {
    let error = result.err().expect("the load is refused");
    let message = error.to_string();
    assert!(
        matches!(error, Error::Config(_)),
        "not a configuration error: {message}"
    );
    for part in expected {
        assert!(
            message.contains(part),
            "{message:?} does not mention {part:?}"
        );
    }
    println!("refused as expected: {message}");
}

/// Every PKCS#11 case, in one process with `SOFTHSM2_CONF` set by [`softhsm2_backend`].
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "run by softhsm2_backend in a child process with SOFTHSM2_CONF set"]
async fn softhsm2_cases() {
    let (Some(dir), Some(module)) = (std::env::var_os(DIR_VAR), std::env::var_os(MODULE_VAR))
    else {
        println!("softhsm2_cases is run by softhsm2_backend, which sets up its token");
        return;
    };
    let (dir, module) = (PathBuf::from(dir), PathBuf::from(module));
    let pin = dir.join("pin");

    // Provision with an independent context: the backend then finds the module
    // already initialised in this process, as when another library uses it.
    let provisioning = Pkcs11::new(&module).unwrap();
    provisioning
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let info = provisioning.get_library_info().unwrap();
    println!(
        "module {}: {} {}",
        module.display(),
        info.library_description(),
        info.library_version()
    );
    let keys = provision(&provisioning);

    // Refusals, first the wrong PIN while no session of this process is logged in.
    refused(
        signer_svc::load_key(
            &key_ref(&module, TOKEN, keys.ed25519, &dir.join("wrong-pin")),
            Algorithm::Ed25519,
        )
        .await,
        &["PIN", "incorrect"],
    );
    refused(
        signer_svc::load_key(
            &key_ref(&module, TOKEN, keys.ed25519, &dir.join("readable-pin")),
            Algorithm::Ed25519,
        )
        .await,
        &["readable-pin", "644"],
    );
    refused(
        signer_svc::load_key(
            &key_ref(&module, TOKEN, keys.ed25519, &dir.join("empty-pin")),
            Algorithm::Ed25519,
        )
        .await,
        &["empty"],
    );
    refused(
        signer_svc::load_key(
            &key_ref(&module, TOKEN, keys.ed25519, &dir.join("missing-pin")),
            Algorithm::Ed25519,
        )
        .await,
        &["missing-pin"],
    );
    refused(
        signer_svc::load_key(
            &key_ref(&module, "no-such-token", keys.ed25519, &pin),
            Algorithm::Ed25519,
        )
        .await,
        &["no-such-token", TOKEN, OTHER_TOKEN],
    );
    refused(
        signer_svc::load_key(
            &key_ref(&dir.join("no-such-module.so"), TOKEN, keys.ed25519, &pin),
            Algorithm::Ed25519,
        )
        .await,
        &["no-such-module.so"],
    );
    refused(
        signer_svc::load_key(
            &key_ref(&module, TOKEN, "no-such-key", &pin),
            Algorithm::Ed25519,
        )
        .await,
        &["no-such-key", "no private key"],
    );
    // The key is on the other token only.
    refused(
        signer_svc::load_key(
            &key_ref(&module, OTHER_TOKEN, keys.ed25519, &pin),
            Algorithm::Ed25519,
        )
        .await,
        &[OTHER_TOKEN, "no private key"],
    );
    refused(
        signer_svc::load_key(
            &key_ref(&module, TOKEN, keys.ed25519, &pin),
            Algorithm::MlDsa44,
        )
        .await,
        &["ML-DSA-44", "not supported"],
    );
    refused(
        signer_svc::load_key(
            &key_ref(&module, TOKEN, keys.p256, &pin),
            Algorithm::Ed25519,
        )
        .await,
        &[keys.p256, "is an ecdsa-p256 key", "expects ed25519"],
    );
    refused(
        signer_svc::load_key(
            &key_ref(&module, TOKEN, keys.ed25519, &pin),
            Algorithm::EcdsaP256,
        )
        .await,
        &[keys.ed25519, "is an ed25519 key", "expects ecdsa-p256"],
    );
    refused(
        signer_svc::load_key(&key_ref(&module, TOKEN, "p384", &pin), Algorithm::EcdsaP256).await,
        &[
            "p384",
            "an EC key on a curve other than P-256",
            "expects ecdsa-p256",
        ],
    );
    refused(
        signer_svc::load_key(
            &key_ref(&module, TOKEN, "mismatched", &pin),
            Algorithm::Ed25519,
        )
        .await,
        &["mismatched", "not one key pair"],
    );
    refused(
        signer_svc::load_key(
            &key_ref(&module, TOKEN, "duplicate", &pin),
            Algorithm::Ed25519,
        )
        .await,
        &["duplicate", "unique"],
    );
    refused(
        signer_svc::load_key(
            &key_ref(&module, TOKEN, "no-public", &pin),
            Algorithm::Ed25519,
        )
        .await,
        &["no-public", "no public key"],
    );

    // The backend suite, with both keys of one token loaded at once (as the
    // cosigning and manifest keys are), through the configuration's KeyRef.
    let ed25519 = signer_svc::load_key(
        &key_ref(&module, TOKEN, keys.ed25519, &pin),
        Algorithm::Ed25519,
    )
    .await
    .unwrap();
    let p256 = signer_svc::load_key(
        &key_ref(&module, TOKEN, keys.p256, &dir.join("pin-crlf")),
        Algorithm::EcdsaP256,
    )
    .await
    .unwrap();
    assert_eq!(ed25519.public_key().len(), 32);
    assert!(signer_svc::keys::public_key_pem(ed25519.as_ref()).is_some());
    assert!(signer_svc::keys::public_key_pem(p256.as_ref()).is_some());
    support::check_backend(ed25519.clone(), Algorithm::Ed25519).await;
    support::check_backend(p256.clone(), Algorithm::EcdsaP256).await;

    // More concurrent calls than the pool has sessions, on both keys at once.
    let mut tasks = Vec::new();
    for i in 0..64u32 {
        let key = if i % 2 == 0 {
            ed25519.clone()
        } else {
            p256.clone()
        };
        tasks.push(tokio::spawn(async move {
            let message = i.to_be_bytes().repeat(100);
            let signature = key.sign(&message).await.unwrap();
            support::verify(key.algorithm(), key.public_key(), &message, &signature)
        }));
    }
    for task in tasks {
        assert!(task.await.unwrap());
    }

    // The same key loaded again gives the same public key.
    let again = Pkcs11Key::load(&module, TOKEN, keys.ed25519, &pin, Algorithm::Ed25519).unwrap();
    assert_eq!(again.public_key(), ed25519.public_key());
    support::check_backend(Arc::new(again), Algorithm::Ed25519).await;

    // A key with the curve named rather than given by OID, where SoftHSM2 made one.
    if keys.named_ed25519 {
        let named =
            Pkcs11Key::load(&module, TOKEN, "named-ed25519", &pin, Algorithm::Ed25519).unwrap();
        support::check_backend(Arc::new(named), Algorithm::Ed25519).await;
    }

    // The token logs the application out (here through another session of
    // this process: the login belongs to the application, not to a session).
    // SoftHSM2 then also drops the handles of private objects, so the keys
    // must log in again and find their key objects again.
    let slot = provisioning
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|slot| provisioning.get_token_info(*slot).unwrap().label() == TOKEN)
        .unwrap();
    let intruder = provisioning.open_ro_session(slot).unwrap();
    intruder.logout().unwrap();
    signs_again(&[&ed25519, &p256], "after a logout").await;
    drop(intruder);

    // The token goes away and comes back: the library is finalised (every
    // session closed, every handle void) and initialised again. While it is
    // away, signing fails cleanly; once it is back, the keys open new
    // sessions, log in again and sign.
    provisioning.finalize().unwrap();
    for key in [&ed25519, &p256] {
        let error = key.sign(b"while the token is away").await.unwrap_err();
        assert_eq!(error.kind(), "backend", "{error}");
        println!("refused as expected while the token is away: {error}");
    }
    let back = Pkcs11::new(&module).unwrap();
    back.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    signs_again(&[&ed25519, &p256], "after the token came back").await;
}

/// 16 concurrent signatures over the keys (calls racing to log in again must
/// not trip over each other), then one more from each key; every signature
/// verifies.
async fn signs_again(keys: &[&Arc<dyn SigningKey>], when: &str) {
    let mut tasks = Vec::new();
    for i in 0..16u32 {
        let key = Arc::clone(keys[i as usize % keys.len()]);
        let when = when.to_owned();
        tasks.push(tokio::spawn(async move {
            let message = format!("{i} signed {when}").into_bytes();
            let signature = key
                .sign(&message)
                .await
                .unwrap_or_else(|e| panic!("no signature {when}: {e}"));
            support::verify(key.algorithm(), key.public_key(), &message, &signature)
        }));
    }
    for task in tasks {
        assert!(task.await.unwrap());
    }
    for key in keys {
        let message = format!("signed {when}").into_bytes();
        let signature = key.sign(&message).await.unwrap();
        assert!(support::verify(
            key.algorithm(),
            key.public_key(),
            &message,
            &signature
        ));
    }
}
