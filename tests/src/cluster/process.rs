//! A background process of the test control plane: output to a log file, killed on drop,
//! its log tail printed when a test fails while it runs.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process with its log file; killed (SIGKILL) when dropped.
pub struct Process {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
    /// Where this run's output starts in the (appended) log.
    log_start: u64,
}

impl Process {
    /// Starts `command` with stdout and stderr appended to `<dir>/<name>.log`.
    pub fn spawn(name: &str, mut command: Command, dir: &Path) -> Process {
        let log = dir.join(format!("{name}.log"));
        let file = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
        let log_start = file.metadata().map(|m| m.len()).unwrap_or(0);
        let err = file.try_clone().expect("clone log file handle");
        command.stdin(Stdio::null()).stdout(file).stderr(err);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        Process {
            name: name.to_string(),
            child: Some(child),
            log,
            log_start,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether this run of the process exited because a port it was given was taken
    /// (Go's and Envoy's wording of EADDRINUSE): the caller picks another and retries.
    pub fn exited_on_taken_port(&mut self) -> bool {
        if self.running() {
            return false;
        }
        let text = std::fs::read(&self.log).unwrap_or_default();
        let this_run = text.get(self.log_start as usize..).unwrap_or_default();
        String::from_utf8_lossy(this_run)
            .to_lowercase()
            .contains("address already in use")
    }

    /// Panics with the log tail if the process has exited.
    pub fn assert_running(&mut self, while_doing: &str) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{} exited ({status}) while {while_doing}; last log lines:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Sends a signal (e.g. `libc`-free: "TERM", "KILL", "STOP", "CONT") through `kill(1)`.
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args([format!("-{signal}"), pid.to_string()])
                .status();
        }
    }

    /// Waits up to `timeout` for the process to exit; returns whether it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.running() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Kills the process and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            eprintln!(
                "--- {} (log {}), last lines:\n{}\n---",
                self.name,
                self.log.display(),
                self.log_tail(12)
            );
        }
        self.kill();
    }
}

/// How many times a process is started with fresh ports when one it was given was taken.
pub const START_ATTEMPTS: usize = 5;

/// A free loopback port (bound and released; the caller binds it right after). Another
/// process may take it first: whoever passes it on retries with a fresh one when the
/// start fails on it ([`Process::exited_on_taken_port`]).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Polls `ready` every 100 ms until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if ready().await {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
