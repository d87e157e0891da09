//! Child processes of a test: started with their output in a log file under
//! the test's artifacts directory, waited for until they listen, stopped with
//! SIGTERM or killed with SIGKILL, and always killed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// How long a process gets to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process gets to exit after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running child process.
pub struct Process {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log_path: PathBuf,
    child: Option<Child>,
}

impl Process {
    /// Starts `program args` with `envs`, stdout and stderr appended to
    /// `logs/<name>.log`.
    pub fn start(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(String, String)],
        logs: &Path,
    ) -> Result<Process, String> {
        let mut process = Process {
            name: name.to_owned(),
            program: program.to_path_buf(),
            args: args.to_vec(),
            envs: envs.to_vec(),
            log_path: logs.join(format!("{name}.log")),
            child: None,
        };
        process.spawn()?;
        Ok(process)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| format!("opening {}: {e}", self.log_path.display()))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("opening {}: {e}", self.log_path.display()))?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {} ({}): {e}", self.name, self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// The process's name (its log file is `<name>.log`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process ID, while it runs (to signal it: SIGSTOP, SIGCONT).
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Sets (or replaces) an environment variable for its next start
    /// ([`Process::restart`]).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.envs.retain(|(k, _)| k != key);
        self.envs.push((key.to_owned(), value.to_owned()));
    }

    /// The log file its output goes to.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines of its output, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until `addr` accepts TCP connections; an error if the process
    /// exits first or [`START_TIMEOUT`] passes.
    pub async fn wait_listening(&mut self, addr: SocketAddr) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            self.fail_if_exited()?;
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not listen on {addr} within {START_TIMEOUT:?}; its output ends:\n{}",
                    self.name,
                    self.log_tail(30)
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An error (with the output's tail) if the process has exited.
    pub fn fail_if_exited(&mut self) -> Result<(), String> {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            return Err(format!(
                "{} exited ({status}); its output ends:\n{}",
                self.name,
                self.log_tail(30)
            ));
        }
        Ok(())
    }

    /// Runs until it exits by itself; its exit status.
    pub async fn wait(&mut self) -> Result<std::process::ExitStatus, String> {
        match self.child.as_mut() {
            Some(child) => child
                .wait()
                .await
                .map_err(|e| format!("waiting for {}: {e}", self.name)),
            None => Err(format!("{} is not running", self.name)),
        }
    }

    /// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]. Returns whether it exited
    /// by itself with status 0.
    pub async fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok())
            && let Some(pid) = rustix::process::Pid::from_raw(pid)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(Ok(status)) => status.success(),
            _ => {
                let _ = child.kill().await;
                false
            }
        }
    }

    /// SIGKILL now, as a crash would.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again with the same program, arguments and log file (after
    /// [`Process::stop`] or [`Process::kill`]).
    pub fn restart(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Err(format!("{} is still running", self.name));
        }
        self.spawn()
    }
}

/// Ports handed out for children to listen on: below Linux's default
/// ephemeral range (32768-60999). A port the kernel picks for `bind(0)` comes
/// from that range, and so does the local port of every outgoing connection:
/// between our check and the child's bind, a connection made by any test
/// could take it (a gateway once failed to start with "Address already in
/// use"). Below the range, only another caller of this function could.
const CHILD_PORTS: std::ops::Range<u16> = 20_000..32_768;

/// A loopback address whose port is free right now, outside the ephemeral
/// range; the search starts at a port that differs per call and process.
pub fn free_loopback_addr() -> Result<SocketAddr, String> {
    use std::hash::{BuildHasher as _, Hasher as _};
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    let span = u64::from(CHILD_PORTS.end - CHILD_PORTS.start);
    let start = hasher.finish() % span;
    for step in 0..span {
        let port = CHILD_PORTS.start + u16::try_from((start + step) % span).unwrap_or(0);
        if let Ok(addr) = std::net::TcpListener::bind(("127.0.0.1", port))
            .and_then(|listener| listener.local_addr())
        {
            return Ok(addr);
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|e| format!("finding a free port: {e}"))
}
