//! End-to-end tests against real Rekor instances and real peer witnesses
//! (issue 6): the harness the tests in `integration/tests/` share.
//!
//! Every process a test starts is a real program: our three services (built by
//! cargo into the same target directory), the Go programs `scripts/go-peers`
//! builds into `target/go-bin` (Rekor v2, Rekor v1 on Trillian, litewitness,
//! omniwitness), MariaDB and Prometheus from Debian. The one imitation is
//! [`misbehaving_log`], because real logs cannot be made to misbehave.
//!
//! Each test writes its processes' output and samples (metrics scrapes,
//! cosigned checkpoints) under `target/e2e/<test>/`, kept after the run as CI
//! evidence.

use std::path::PathBuf;

pub mod misbehaving_log;
pub mod peers;
pub mod process;
pub mod prometheus;
pub mod rekor_tiles;
pub mod rekor_v1;
pub mod stack;

/// The repository's root (the workspace directory).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The cargo target directory these tests were built into: the directory of
/// the running test executable's `deps/` parent's parent (`target/`).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    repo_root().join("target")
}

/// `target/e2e/<name>/`, emptied and created: where a test's process output
/// and samples go.
pub fn artifacts_dir(name: &str) -> Result<PathBuf, String> {
    let dir = target_dir().join("e2e").join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("emptying {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

/// A Go program built by `scripts/go-peers`: `$WITNESS_TEST_GO_BIN/<program>`
/// (default `target/go-bin`). Missing is an error naming the fix, never a skip.
pub fn go_program(program: &str) -> Result<PathBuf, String> {
    let dir = std::env::var_os("WITNESS_TEST_GO_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("go-bin"));
    let path = dir.join(program);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: build the Go programs with scripts/go-peers (scripts/test does)",
            path.display()
        ))
    }
}
