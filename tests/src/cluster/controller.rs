//! `modelsplit run` against the test cluster, installed as a user installs it: the
//! kustomization in controller/deploy/ is applied, and the controller runs with a token of
//! its ServiceAccount (TokenRequest API) — never as an admin — so everything it does must be
//! allowed by the shipped RBAC. The Deployment itself never starts (there is no kubelet);
//! its replicas run here as processes with the same arguments.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::apiserver::write_kubeconfig;
use super::kubectl::Kubectl;
use super::process::{free_port, Process, START_ATTEMPTS};
use crate::gateway::require_filter_wasm;
use crate::http::HttpClient;

pub const CONTROLLER_NAMESPACE: &str = "modelsplit-system";
pub const SERVICE_ACCOUNT: &str = "modelsplit-controller";

/// The repository's controller/deploy/ directory.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../controller/deploy")
}

/// The `modelsplit` binary: `$MODELSPLIT_BIN` (scripts/test.sh builds it up front).
pub fn modelsplit_binary() -> PathBuf {
    std::env::var_os("MODELSPLIT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/modelsplit"))
}

/// Applies controller/deploy/ and returns a kubeconfig holding a token of its ServiceAccount.
pub fn install(admin: &Kubectl, dir: &Path, api_port: u16, ca: &Path) -> PathBuf {
    admin.run(&["apply", "-k", &deploy_dir().display().to_string()]);
    let token = admin.run(&[
        "create",
        "token",
        SERVICE_ACCOUNT,
        "-n",
        CONTROLLER_NAMESPACE,
        "--duration=24h",
    ]);
    let path = dir.join("controller.kubeconfig");
    write_kubeconfig(&path, api_port, ca, "modelsplit-controller", token.trim());
    // Like a pod's service-account mount: the kubeconfig's namespace is the controller's.
    let text = std::fs::read_to_string(&path).expect("read kubeconfig");
    std::fs::write(
        &path,
        text.replace(
            "namespace: default",
            &format!("namespace: {CONTROLLER_NAMESPACE}"),
        ),
    )
    .expect("write kubeconfig");
    path
}

/// Which filter module a replica publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleSource {
    /// `--url=file://<built module>`: istiod hands Envoy the file (no fetch).
    FileUrl,
    /// No `--url`: the module it serves itself (`--filter-file=<path>`), at its Service's
    /// `http://` URL.
    Served(PathBuf),
}

/// One running replica of `modelsplit run`.
pub struct Controller {
    pub identity: String,
    pub metrics_port: u16,
    process: Process,
    http: HttpClient,
    /// How it was started, to start it again on a fresh metrics port.
    kubeconfig: PathBuf,
    module: ModuleSource,
    extra: Vec<String>,
    dir: PathBuf,
}

impl Controller {
    /// Starts a replica with the Deployment's arguments plus `extra` (test-only settings such
    /// as the gateway and the module URL). Its metrics port is picked free; if another
    /// process takes it first, [`Controller::wait_ready`] starts the replica again.
    pub fn start(
        kubeconfig: &Path,
        identity: &str,
        module: ModuleSource,
        extra: &[String],
        dir: &Path,
    ) -> Controller {
        let metrics_port = free_port();
        Controller {
            identity: identity.to_string(),
            metrics_port,
            process: spawn(kubeconfig, identity, &module, extra, dir, metrics_port),
            http: HttpClient::default(),
            kubeconfig: kubeconfig.to_path_buf(),
            module,
            extra: extra.to_vec(),
            dir: dir.to_path_buf(),
        }
    }

    /// `/metrics` as Prometheus text, or empty when not reachable.
    pub async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        match self.http.get(&url, &[]).await {
            Ok(reply) if reply.status == 200 => reply.text(),
            _ => String::new(),
        }
    }

    /// The value of one sample (`name{labels}` exactly as printed), 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        metric_value(&self.metrics().await, sample)
    }

    /// Reconcile passes run so far, whatever their result.
    pub async fn passes(&self) -> f64 {
        let text = self.metrics().await;
        metric_value(&text, "modelsplit_reconciles_total{result=\"ok\"}")
            + metric_value(&text, "modelsplit_reconciles_total{result=\"error\"}")
    }

    /// Waits until `more` reconcile passes have *started* after this call: the first to
    /// end may have been under way already, so `more + 1` must end. Generous deadline.
    pub async fn wait_for_passes(&self, more: f64) {
        let target = self.passes().await + more + 1.0;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while self.passes().await < target {
            assert!(
                std::time::Instant::now() < deadline,
                "{} ran fewer than {more} reconcile passes in 120 s",
                self.identity
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until /readyz answers 200 (every watch listed). The metrics port was picked
    /// free before the start: if the replica exited because it was taken meanwhile, it is
    /// started again on a fresh one (it binds before it runs for leadership).
    pub async fn wait_ready(&mut self) {
        let url = |port: u16| format!("http://127.0.0.1:{port}/readyz");
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let mut restarts = 0;
        loop {
            if matches!(self.http.get(&url(self.metrics_port), &[]).await, Ok(r) if r.status == 200)
                && self.process.running()
            {
                return;
            }
            if self.process.exited_on_taken_port() && restarts < START_ATTEMPTS {
                restarts += 1;
                self.metrics_port = free_port();
                eprintln!(
                    "{}: its metrics port was taken; starting it on {}",
                    self.identity, self.metrics_port
                );
                self.process = spawn(
                    &self.kubeconfig,
                    &self.identity,
                    &self.module,
                    &self.extra,
                    &self.dir,
                    self.metrics_port,
                );
                continue;
            }
            self.process.assert_running("starting");
            assert!(
                std::time::Instant::now() < deadline,
                "{} was not ready after 120 s",
                self.identity
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until this replica reports `modelsplit_leader` = `leading` (1 or 0).
    pub async fn wait_leader(&self, leading: bool, timeout: Duration) {
        let want = if leading { 1.0 } else { 0.0 };
        let deadline = std::time::Instant::now() + timeout;
        while self.metric("modelsplit_leader").await != want {
            assert!(
                std::time::Instant::now() < deadline,
                "{} did not report modelsplit_leader {want} within {timeout:?}",
                self.identity
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}

/// Starts `modelsplit run` as `identity` with its metrics on `metrics_port`.
fn spawn(
    kubeconfig: &Path,
    identity: &str,
    module: &ModuleSource,
    extra: &[String],
    dir: &Path,
    metrics_port: u16,
) -> Process {
    let wasm = require_filter_wasm();
    let mut command = Command::new(modelsplit_binary());
    command
        .arg("run")
        .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
        .arg(format!("--identity={identity}"));
    match module {
        ModuleSource::FileUrl => command.arg(format!("--url=file://{}", wasm.display())),
        ModuleSource::Served(path) => command.arg(format!("--filter-file={}", path.display())),
    };
    command
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info,kube=warn")
        .env_remove("POD_NAMESPACE")
        .env_remove("POD_NAME");
    Process::spawn(&format!("modelsplit-{identity}"), command, dir)
}

/// The value of a Prometheus sample line starting with `sample` (then a space).
pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(sample).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
