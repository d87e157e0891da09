//! The stack from the project's container images (deploy/container/), run the
//! way the issue asks: podman with the runc runtime, read-only root
//! filesystems with no tmpfs, every capability dropped, no new privileges and
//! the project's seccomp profile (deploy/seccomp/rekor-witness.json).
//!
//! The images are built once per run of this file by `deploy/container/build`
//! from the binaries of the profile this test was built with (CI: `debug`, the
//! ones `cargo test --workspace` already built: no second compile). The three
//! containers share the host's network namespace and talk mutual TLS on
//! loopback, with a development PKI; the witness pulls an honest tlog-tiles log
//! served by this test. Podman (Debian `podman`) and runc (Debian `runc`) are
//! installed by scripts/test; without them these tests fail, never skip.
//!
//! Every process's output, the container configurations and the scrapes go to
//! target/e2e/containers-*/.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use integration::misbehaving_log::MisbehavingLog;
use integration::process::{Process, free_loopback_addr};
use witness_core::service::dev_stack::{Material, StackAddrs, write_configs};

/// The UID and GID the images run as.
const SERVICE_UID: u32 = 65532;
const WITNESS_NAME: &str = "rekor-witness.containers.test";
const LOG_ENTRIES: u64 = 5;

/// podman, from `WITNESS_TEST_PODMAN` (scripts/test) or the Debian path.
fn podman() -> PathBuf {
    std::env::var_os("WITNESS_TEST_PODMAN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/podman"))
}

/// The podman settings of the project's machines (runc, no default ulimits).
fn containers_conf() -> PathBuf {
    integration::repo_root().join("deploy/container/containers.conf")
}

fn seccomp_profile() -> PathBuf {
    integration::repo_root().join("deploy/seccomp/rekor-witness.json")
}

/// Image IDs by image name (signer-svc, witness-core, gateway).
struct Images {
    signer: String,
    witness: String,
    gateway: String,
}

static IMAGES: tokio::sync::OnceCell<Result<Images, String>> = tokio::sync::OnceCell::const_new();

/// Builds the images once for this test binary, from the binaries of its own
/// cargo profile, and reads their IDs from target/evidence/images.txt.
async fn images() -> &'static Images {
    let images = IMAGES
        .get_or_init(|| async {
            // The test executable is target/<profile>/deps/<test>-<hash>.
            let exe = std::env::current_exe().map_err(|e| format!("this executable: {e}"))?;
            let profile = exe
                .parent()
                .and_then(Path::parent)
                .and_then(Path::file_name)
                .and_then(|name| name.to_str())
                .ok_or("the test executable has no profile directory")?
                .to_owned();
            ensure_binaries(&profile)?;
            let started = Instant::now();
            let output = tokio::process::Command::new(
                integration::repo_root().join("deploy/container/build"),
            )
            .env("PROFILE", &profile)
            .env("CONTAINERS_CONF", containers_conf())
            .output()
            .await
            .map_err(|e| format!("running deploy/container/build: {e}"))?;
            let log = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            if !output.status.success() {
                return Err(format!("deploy/container/build failed:\n{log}"));
            }
            eprintln!(
                "deploy/container/build (PROFILE={profile}): {:.1} s\n{log}",
                started.elapsed().as_secs_f64()
            );
            let list = integration::target_dir().join("evidence/images.txt");
            let text = std::fs::read_to_string(&list)
                .map_err(|e| format!("reading {}: {e}", list.display()))?;
            let id_of = |name: &str| -> Result<String, String> {
                text.lines()
                    .map(|line| line.split(' ').collect::<Vec<_>>())
                    .find(|fields| {
                        fields.first().is_some_and(|reference| {
                            reference.starts_with(&format!("rekor-witness/{name}:"))
                        }) && fields.get(4) == Some(&profile.as_str())
                    })
                    .and_then(|fields| fields.get(2).map(|id| (*id).to_owned()))
                    .ok_or_else(|| format!("{name} of profile {profile} is not in {text}"))
            };
            Ok(Images {
                signer: id_of("signer-svc")?,
                witness: id_of("witness-core")?,
                gateway: id_of("gateway")?,
            })
        })
        .await;
    match images {
        Ok(images) => images,
        Err(error) => panic!("building the images: {error}"),
    }
}

/// The three binaries of `profile`, built if missing (as integration::stack
/// does).
fn ensure_binaries(profile: &str) -> Result<(), String> {
    let dir = integration::target_dir().join(profile);
    let binaries = ["signer-svc", "rekor-witness", "rekor-witness-gateway"];
    if binaries.iter().all(|binary| dir.join(binary).is_file()) {
        return Ok(());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command.current_dir(integration::repo_root()).arg("build");
    if profile != "debug" {
        command.args(["--profile", profile]);
    }
    for binary in binaries {
        command.args(["--bin", binary]);
    }
    let status = command
        .status()
        .map_err(|e| format!("running cargo build: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo build of the {profile} binaries: {status}"))
    }
}

/// How a container runs: the hardening every run of these tests shares.
struct Run<'a> {
    name: String,
    image: &'a str,
    seccomp: PathBuf,
    /// (host path, container path, read-only)
    mounts: Vec<(PathBuf, &'static str, bool)>,
    args: Vec<String>,
}

impl Run<'_> {
    fn podman_args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "run",
            "--rm",
            "--name",
            &self.name,
            "--network",
            "host",
            "--read-only",
            // No tmpfs on /tmp, /var/tmp and /run either: the volumes are
            // the only writable places.
            "--read-only-tmpfs=false",
            "--cap-drop=ALL",
            "--security-opt",
            "no-new-privileges",
            "--pids-limit",
            "256",
        ]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect();
        args.push("--security-opt".to_owned());
        args.push(format!("seccomp={}", self.seccomp.display()));
        for (host, container, read_only) in &self.mounts {
            args.push("--volume".to_owned());
            args.push(format!(
                "{}:{container}:{}",
                host.display(),
                if *read_only { "ro" } else { "rw" }
            ));
        }
        args.push(self.image.to_owned());
        args.extend(self.args.iter().cloned());
        args
    }

    /// Runs the container to completion: (success, output).
    async fn output(&self) -> (bool, String) {
        let output = tokio::process::Command::new(podman())
            .env("CONTAINERS_CONF", containers_conf())
            .args(self.podman_args())
            .output()
            .await
            .unwrap_or_else(|e| panic!("running {}: {e}", podman().display()));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    }
}

/// Removes the named containers when the test ends, however it ends: a
/// container outlives its `podman run` client, which is all a panic kills.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let _ = std::process::Command::new(podman())
            .env("CONTAINERS_CONF", containers_conf())
            .args(["rm", "--force", "--time", "0", "--ignore"])
            .args(&self.0)
            .output();
    }
}

/// A unique container name for this run.
fn container_name(role: &str) -> String {
    format!("rekor-witness-test-{role}-{}", std::process::id())
}

/// Every file under `dir` (none if it does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flat_map(|entry| {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_under(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

/// Changes the owner of `path` and everything under it to the images' user.
fn chown_tree(path: &Path) {
    std::os::unix::fs::lchown(path, Some(SERVICE_UID), Some(SERVICE_UID)).unwrap_or_else(|e| {
        panic!(
            "chown {} to {SERVICE_UID} (the containers' user; these tests run as root): {e}",
            path.display()
        )
    });
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path());
        }
    }
}

/// The development stack's configuration files, rewritten for the paths
/// inside the containers: state under /var/lib/{signer,witness}, the PKI
/// under /etc/rekor-witness/tls, the file keys under /etc/rekor-witness/keys.
struct ContainerConfigs {
    signer: PathBuf,
    witness: PathBuf,
    gateway: PathBuf,
}

fn container_configs(
    dir: &Path,
    material: &Material,
    addrs: &StackAddrs,
    logs_toml: &str,
) -> ContainerConfigs {
    let host = write_configs(
        dir,
        material,
        addrs,
        WITNESS_NAME,
        &format!("poll_interval = \"1s\"\n\n{logs_toml}"),
    )
    .unwrap();
    let d = dir.display().to_string();
    // Longest prefixes first (archive-spool before archive).
    let rewrites = [
        (format!("{d}/signer/"), "/var/lib/signer/".to_owned()),
        (format!("{d}/witness/"), "/var/lib/witness/".to_owned()),
        (
            format!("{d}/archive-spool"),
            "/var/lib/witness/archive-spool".to_owned(),
        ),
        // The local archive on a volume of its own, as the Helm chart and
        // the Compose file mount it.
        (
            format!("{d}/archive"),
            "/var/lib/witness-archive/archive".to_owned(),
        ),
        (format!("{d}/pki/"), "/etc/rekor-witness/tls/".to_owned()),
        (format!("{d}/keys/"), "/etc/rekor-witness/keys/".to_owned()),
    ];
    let out = dir.join("container-config");
    std::fs::create_dir_all(&out).unwrap();
    let rewrite = |from: &Path, name: &str| -> PathBuf {
        let mut text = std::fs::read_to_string(from).unwrap();
        for (host_prefix, container_prefix) in &rewrites {
            text = text.replace(host_prefix.as_str(), container_prefix);
        }
        assert!(
            !text.contains(&d),
            "{name}: a host path is left in the container configuration:\n{text}"
        );
        let path = out.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    ContainerConfigs {
        signer: rewrite(&host.signer, "signer.toml"),
        witness: rewrite(&host.witness, "witness.toml"),
        gateway: rewrite(&host.gateway, "gateway.toml"),
    }
}

/// Sum of the samples of `family` with every one of `labels` in the
/// exposition `text`.
fn metric_sum(text: &str, family: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                && labels.iter().all(|label| line.contains(label))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `podman healthcheck run <container>`: the image's HEALTHCHECK command.
async fn healthcheck(container: &str) -> (bool, String) {
    let output = tokio::process::Command::new(podman())
        .env("CONTAINERS_CONF", containers_conf())
        .args(["healthcheck", "run", container])
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hardened_containers_cosign_a_real_tiles_log_over_mutual_tls() {
    let images = images().await;
    let artifacts = integration::artifacts_dir("containers-stack").unwrap();
    let log = MisbehavingLog::start("containers-stack", LOG_ENTRIES)
        .await
        .unwrap();

    let dir = artifacts.join("stack");
    std::fs::create_dir_all(&dir).unwrap();
    let material = Material::load_or_generate(&dir).unwrap();
    let addrs = StackAddrs {
        signer: free_loopback_addr().unwrap(),
        witness: free_loopback_addr().unwrap(),
        gateway: free_loopback_addr().unwrap(),
    };
    let configs = container_configs(&dir, &material, &addrs, &log.tiles_log_toml());
    let signer_volume = artifacts.join("volumes/signer");
    let witness_volume = artifacts.join("volumes/witness");
    let archive_volume = artifacts.join("volumes/witness-archive");
    std::fs::create_dir_all(&signer_volume).unwrap();
    std::fs::create_dir_all(&witness_volume).unwrap();
    std::fs::create_dir_all(&archive_volume).unwrap();
    // The services refuse keys others can read, so the PKI and the keys
    // belong to the containers' user, like the volumes.
    chown_tree(&dir);
    chown_tree(&artifacts.join("volumes"));

    let names = [
        container_name("signer"),
        container_name("witness"),
        container_name("gateway"),
    ];
    let _cleanup = Cleanup(names.to_vec());
    let tls = (dir.join("pki"), "/etc/rekor-witness/tls", true);
    let runs = [
        Run {
            name: names[0].clone(),
            image: &images.signer,
            seccomp: seccomp_profile(),
            mounts: vec![
                (
                    configs.signer.clone(),
                    "/etc/rekor-witness/signer.toml",
                    true,
                ),
                tls.clone(),
                (dir.join("keys"), "/etc/rekor-witness/keys", true),
                (signer_volume.clone(), "/var/lib/signer", false),
            ],
            args: vec![],
        },
        Run {
            name: names[1].clone(),
            image: &images.witness,
            seccomp: seccomp_profile(),
            mounts: vec![
                (
                    configs.witness.clone(),
                    "/etc/rekor-witness/witness.toml",
                    true,
                ),
                tls.clone(),
                (witness_volume.clone(), "/var/lib/witness", false),
                (archive_volume.clone(), "/var/lib/witness-archive", false),
            ],
            args: vec![],
        },
        Run {
            name: names[2].clone(),
            image: &images.gateway,
            seccomp: seccomp_profile(),
            mounts: vec![
                (
                    configs.gateway.clone(),
                    "/etc/rekor-witness/gateway.toml",
                    true,
                ),
                tls.clone(),
            ],
            args: vec![],
        },
    ];
    let env = [(
        "CONTAINERS_CONF".to_owned(),
        containers_conf().display().to_string(),
    )];
    let started = Instant::now();
    let mut processes = Vec::new();
    for (run, addr) in runs
        .iter()
        .zip([addrs.signer, addrs.witness, addrs.gateway])
    {
        let role = run.name.split('-').nth(3).unwrap_or("container").to_owned();
        let mut process =
            Process::start(&role, &podman(), &run.podman_args(), &env, &artifacts).unwrap();
        process.wait_listening(addr).await.unwrap();
        processes.push(process);
    }
    let listening = started.elapsed();

    // The images' HEALTHCHECK commands pass against the running services.
    for name in &names {
        let (healthy, output) = healthcheck(name).await;
        assert!(healthy, "healthcheck of {name}: {output}");
    }

    // The witness pulls the log and the gateway serves the cosigned checkpoint.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let gateway = format!("http://{}", addrs.gateway);
    let origin_hash = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(log.tiles_origin().as_bytes()))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let checkpoint = loop {
        let response = http
            .get(format!("{gateway}/{origin_hash}/checkpoint"))
            .send()
            .await
            .unwrap();
        if response.status().as_u16() == 200 {
            let text = response.text().await.unwrap();
            if integration::stack::checkpoint_size(&text) == Some(LOG_ENTRIES) {
                break text;
            }
        }
        for process in &mut processes {
            process.fail_if_exited().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no cosigned checkpoint of size {LOG_ENTRIES} within 60 s; witness output ends:\n{}",
            processes[1].log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let cosigned = started.elapsed();
    std::fs::write(artifacts.join("cosigned-checkpoint.txt"), &checkpoint).unwrap();
    assert!(
        checkpoint.starts_with(&format!("{}\n", log.tiles_origin())),
        "{checkpoint}"
    );
    assert!(
        checkpoint.contains(&format!("\u{2014} {WITNESS_NAME} ")),
        "the checkpoint carries no cosignature of {WITNESS_NAME}:\n{checkpoint}"
    );

    // The cosigned checkpoint reaches the local archive on its own volume:
    // its objects are created and made durable (`syncfs`) under the seccomp
    // profile. Until they are, each batch fails and stays spooled.
    let archive_deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let metrics = http
            .get(format!("{gateway}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let archived = metric_sum(
            &metrics,
            "witness_archive_writes_total",
            &["kind=\"checkpoint\"", "result=\"ok\""],
        );
        if archived > 0.0 {
            break metrics;
        }
        assert!(
            Instant::now() < archive_deadline,
            "no checkpoint archived within 30 s of the cosignature; archive writes:\n{}\n\
             witness output ends:\n{}",
            metrics
                .lines()
                .filter(|line| line.starts_with("witness_archive_writes_total"))
                .collect::<Vec<_>>()
                .join("\n"),
            processes[1].log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    std::fs::write(artifacts.join("metrics.txt"), &metrics).unwrap();
    let archived_checkpoints = archive_volume.join("archive").join("checkpoints");
    assert!(
        !files_under(&archived_checkpoints).is_empty(),
        "the archive metric counts a write but {} holds no object",
        archived_checkpoints.display()
    );
    assert!(
        !witness_volume.join("archive").exists(),
        "the archive was written to the state's volume"
    );
    let cosignatures = metric_sum(&metrics, "witness_cosignatures_total", &["outcome=\"ok\""]);
    assert!(
        cosignatures > 0.0,
        "witness_cosignatures_total{{outcome=\"ok\"}} is {cosignatures}:\n{metrics}"
    );

    // The services ran as 65532 and wrote their state to the volumes only.
    for (volume, file) in [
        (&witness_volume, "state.db"),
        (&witness_volume, "archive-spool"),
        (&archive_volume, "archive/checkpoints"),
        (&signer_volume, "fork-guard.db"),
    ] {
        let metadata = std::fs::metadata(volume.join(file))
            .unwrap_or_else(|e| panic!("{}: {e}", volume.join(file).display()));
        assert_eq!(metadata.uid(), SERVICE_UID, "{file} owner");
    }

    // SIGTERM through podman: each service drains and exits 0.
    while let Some(mut process) = processes.pop() {
        let name = process.name().to_owned();
        assert!(
            process.stop().await,
            "{name} did not stop cleanly; output ends:\n{}",
            process.log_tail(20)
        );
    }
    eprintln!(
        "containers: listening after {:.1} s, cosigned checkpoint after {:.1} s, \
         {cosignatures} cosignatures",
        listening.as_secs_f64(),
        cosigned.as_secs_f64()
    );
    log.stop().await;
}

/// The seccomp profile is enforced: the same signer with a profile that lacks
/// `listen` (one of the syscalls the allowlist grants) cannot serve, while the
/// project's profile lets it (the stack test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_syscall_missing_from_the_seccomp_allowlist_is_refused() {
    let images = images().await;
    let artifacts = integration::artifacts_dir("containers-seccomp").unwrap();
    let profile: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(seccomp_profile()).unwrap()).unwrap();
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO", "an allowlist");
    let mut without_listen = profile.clone();
    let mut removed = false;
    for rule in without_listen["syscalls"].as_array_mut().unwrap() {
        if rule["action"] == "SCMP_ACT_ALLOW"
            && let Some(names) = rule["names"].as_array_mut()
        {
            let before = names.len();
            names.retain(|name| name != "listen");
            removed |= names.len() < before;
        }
    }
    assert!(removed, "the profile does not allow listen");
    let reduced = artifacts.join("without-listen.json");
    std::fs::write(&reduced, without_listen.to_string()).unwrap();

    let dir = artifacts.join("stack");
    std::fs::create_dir_all(&dir).unwrap();
    let material = Material::load_or_generate(&dir).unwrap();
    let addrs = StackAddrs {
        signer: free_loopback_addr().unwrap(),
        witness: free_loopback_addr().unwrap(),
        gateway: free_loopback_addr().unwrap(),
    };
    let configs = container_configs(&dir, &material, &addrs, "");
    let volume = artifacts.join("volumes/signer");
    std::fs::create_dir_all(&volume).unwrap();
    chown_tree(&dir);
    chown_tree(&volume);
    let name = container_name("seccomp");
    let _cleanup = Cleanup(vec![name.clone()]);
    let run = Run {
        name,
        image: &images.signer,
        seccomp: reduced,
        mounts: vec![
            (configs.signer, "/etc/rekor-witness/signer.toml", true),
            (dir.join("pki"), "/etc/rekor-witness/tls", true),
            (dir.join("keys"), "/etc/rekor-witness/keys", true),
            (volume, "/var/lib/signer", false),
        ],
        args: vec![],
    };
    let (success, output) = tokio::time::timeout(Duration::from_secs(60), run.output())
        .await
        .expect("the signer without listen kept running");
    std::fs::write(artifacts.join("signer.log"), &output).unwrap();
    assert!(!success, "the signer served without listen:\n{output}");
    assert!(
        output.contains("Operation not permitted"),
        "the signer failed, but not on the refused syscall:\n{output}"
    );
}

/// The root filesystem is read-only, with no tmpfs: a write to /etc or /tmp
/// fails with EROFS, the same write to the state volume succeeds. The write is
/// the signer's own `keygen --out` (the image has no shell).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_outside_the_state_volume_fail_on_the_read_only_root() {
    let images = images().await;
    let artifacts = integration::artifacts_dir("containers-read-only").unwrap();
    let volume = artifacts.join("volumes/signer");
    std::fs::create_dir_all(&volume).unwrap();
    chown_tree(&volume);
    let keygen = |role: &str, out: &str| Run {
        name: container_name(role),
        image: &images.signer,
        seccomp: seccomp_profile(),
        mounts: vec![(volume.clone(), "/var/lib/signer", false)],
        args: ["keygen", "--algorithm", "ed25519", "--out", out]
            .iter()
            .map(|arg| (*arg).to_owned())
            .collect(),
    };
    let _cleanup = Cleanup(
        ["ro-etc", "ro-tmp", "ro-volume"]
            .iter()
            .map(|role| container_name(role))
            .collect(),
    );
    for (role, path) in [
        ("ro-etc", "/etc/rekor-witness/probe.pem"),
        ("ro-tmp", "/tmp/probe.pem"),
    ] {
        let (success, output) = keygen(role, path).output().await;
        assert!(!success, "{path} was written:\n{output}");
        assert!(
            output.contains("Read-only file system"),
            "writing {path} failed, but not for the read-only root:\n{output}"
        );
    }
    let (success, output) = keygen("ro-volume", "/var/lib/signer/probe.pem")
        .output()
        .await;
    assert!(success, "writing to the state volume failed:\n{output}");
    let written = std::fs::metadata(volume.join("probe.pem")).unwrap();
    assert_eq!(written.uid(), SERVICE_UID, "the key file's owner");
    assert_eq!(written.mode() & 0o777, 0o600, "the key file's mode");
}

/// deploy/apparmor/rekor-witness is a profile AppArmor's own parser accepts
/// (`apparmor_parser -Q`: parse and compile, load nothing; this sandbox's
/// kernel has no AppArmor to load it into), and the parser refuses the same
/// profile with a rule broken, so the check can fail.
#[test]
fn the_apparmor_profile_compiles() {
    let parser = std::env::var_os("WITNESS_TEST_APPARMOR_PARSER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/apparmor_parser"));
    let profile = integration::repo_root().join("deploy/apparmor/rekor-witness");
    let check = |path: &Path| {
        std::process::Command::new(&parser)
            .args(["--skip-kernel-load", "--skip-cache", "-Q"])
            .arg(path)
            .output()
            .unwrap_or_else(|e| panic!("running {} (Debian apparmor): {e}", parser.display()))
    };
    let output = check(&profile);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&profile).unwrap();
    assert!(
        text.contains("  deny ptrace,\n"),
        "the rule the check breaks"
    );
    let broken = integration::artifacts_dir("containers-apparmor")
        .unwrap()
        .join("rekor-witness");
    std::fs::write(&broken, text.replace("  deny ptrace,\n", "  deny ptrace\n")).unwrap();
    assert!(
        !check(&broken).status.success(),
        "the parser accepted a broken profile"
    );
}
