//! The whole local flow as a user runs it: manifests in a directory, the
//! `modelsplit local` process writing Envoy's files, a real Envoy started from the
//! bootstrap it wrote, and ModelMesh stand-ins behind it. Processes are killed on
//! drop; on a failed test their output is printed.

use crate::envoy_admin::{applied_filter_config, find_group};
use crate::gateway::{envoy_binary, require_filter_wasm};
use crate::http::HttpClient;
use crate::infer::grpc_client;
use crate::kserve::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::standin::{StandIn, StandInConfig};
use modelsplit_controller::local::admin::parse_stats;
use modelsplit_controller::local::envoy_files::{FILTER_NAME, LISTENER_NAME};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// How long Envoy may take to start (V8 compiles the module per worker). This and the
/// deadlines below are generous on purpose: they end a wait only for something that
/// never happens; how fast things happen is measured in bench/, not asserted here.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long an edit may take to be in force, or `modelsplit local` to print a line.
const EDIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Starts with a freshly picked admin port, when the one picked was taken meanwhile.
const START_ATTEMPTS: usize = 5;
/// One admin API request (a poll; the next one follows when it times out).
const ADMIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The `modelsplit` binary: `$MODELSPLIT_BIN`, else built (once per test process)
/// into the target directory the tests run from, so it is never stale.
pub fn modelsplit_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("MODELSPLIT_BIN") {
                return PathBuf::from(path);
            }
            // This test executable is <target>/<profile>/deps/<name>.
            let exe = std::env::current_exe().expect("the test executable's path");
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("test executable inside <target>/<profile>/deps");
            let target_dir = profile_dir.parent().expect("a target directory");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut build = Command::new(cargo);
            build
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "modelsplit-controller",
                    "--bin",
                    "modelsplit",
                ])
                .arg("--target-dir")
                .arg(target_dir)
                .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                build.arg("--release");
            }
            let status = build.status().expect("running cargo to build modelsplit");
            assert!(status.success(), "building the modelsplit binary failed");
            profile_dir.join("modelsplit")
        })
        .clone()
}

/// A free port on loopback (bound, then released for the child to take): another process
/// may take it first, so whoever uses it must retry on a bind failure.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Writes `contents` to `dir/name` the way editors and `kubectl`-style tools do:
/// a temporary file renamed over the old one (never half a manifest).
pub fn write_manifest(dir: &Path, name: &str, contents: &str) {
    let temporary = dir.join(format!(".{name}.tmp"));
    std::fs::write(&temporary, contents).expect("writing a manifest");
    std::fs::rename(&temporary, dir.join(name)).expect("renaming a manifest into place");
}

/// A running child process, killed on drop.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &'static str, command: &mut Command, log: PathBuf) -> Process {
        let file = std::fs::File::create(&log).expect("creating a log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("sharing a log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Process { name, child, log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "{} exited ({status}):\n{}",
                self.name,
                self.output()
            )),
            _ => None,
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a start attempt ended.
enum Started {
    Serving,
    /// Envoy could not bind the admin port picked for it: another process took it.
    AdminPortTaken,
}

/// Manifests -> `modelsplit local` -> Envoy -> stand-ins.
pub struct LocalGateway {
    // Dropped in this order: Envoy, then modelsplit local, then the stand-ins.
    envoy: Option<Process>,
    local: Option<Process>,
    pub standins: Vec<StandIn>,
    /// The manifests directory `modelsplit local` watches.
    pub manifests: PathBuf,
    pub listener: SocketAddr,
    pub admin_url: String,
    pub http: HttpClient,
    /// For Envoy's admin API, with a timeout: until Envoy has bound the admin port,
    /// whoever took it may accept and never answer.
    admin_http: HttpClient,
    workdir: Option<tempfile::TempDir>,
}

impl LocalGateway {
    /// Writes `manifests` (file name, YAML), starts one stand-in per namespace in
    /// `namespaces`, `modelsplit local` and Envoy; returns once Envoy serves with the
    /// filter configuration `modelsplit local` rendered.
    pub async fn start(manifests: &[(&str, &str)], namespaces: &[StandInConfig]) -> LocalGateway {
        let wasm = require_filter_wasm();
        let envoy = envoy_binary().unwrap_or_else(|e| panic!("{e}"));
        let modelsplit = modelsplit_binary();
        let workdir = tempfile::Builder::new()
            .prefix("modelsplit-local-")
            .tempdir()
            .expect("a working directory");
        let manifest_dir = workdir.path().join("manifests");
        std::fs::create_dir(&manifest_dir).expect("creating the manifests directory");
        for (name, yaml) in manifests {
            write_manifest(&manifest_dir, name, yaml);
        }
        let mut standins = Vec::new();
        for config in namespaces {
            standins.push(
                StandIn::start_local(config.clone())
                    .await
                    .unwrap_or_else(|e| panic!("stand-in for {}: {e}", config.namespace)),
            );
        }
        let mut gateway = LocalGateway {
            envoy: None,
            local: None,
            standins,
            manifests: manifest_dir,
            listener: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_url: String::new(),
            http: HttpClient::default(),
            admin_http: HttpClient::with_timeout(ADMIN_REQUEST_TIMEOUT),
            workdir: Some(workdir),
        };
        // The gateway listener is bound on port 0 (Envoy picks, the admin API says which).
        // The admin port must be known beforehand (`modelsplit local` confirms each step
        // through it), so it is picked free and the start retried if it was taken.
        for attempt in 1..=START_ATTEMPTS {
            let admin_port = free_port();
            match gateway
                .start_processes(&modelsplit, &envoy, &wasm, attempt, admin_port)
                .await
            {
                Started::Serving => return gateway,
                Started::AdminPortTaken if attempt < START_ATTEMPTS => {
                    eprintln!("admin port {admin_port} was taken before Envoy bound it; retrying");
                }
                Started::AdminPortTaken => panic!(
                    "Envoy's admin port was taken {START_ATTEMPTS} times:\n{}",
                    gateway.envoy_output()
                ),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Starts `modelsplit local` writing to a fresh output directory, then Envoy from the
    /// bootstrap it wrote; waits until Envoy serves with the filter on every worker.
    async fn start_processes(
        &mut self,
        modelsplit: &Path,
        envoy: &Path,
        wasm: &Path,
        attempt: usize,
        admin_port: u16,
    ) -> Started {
        // Stop an earlier attempt's processes first (Envoy before modelsplit local).
        self.envoy = None;
        self.local = None;
        let workdir = self.workdir.as_ref().expect("the working directory").path();
        let out = workdir.join(format!("gateway-{attempt}"));
        self.admin_url = format!("http://127.0.0.1:{admin_port}");
        let mut command = Command::new(modelsplit);
        command
            .arg("local")
            .arg("-f")
            .arg(&self.manifests)
            .arg("--out")
            .arg(&out)
            .arg("--wasm")
            .arg(wasm)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--admin")
            .arg(&self.admin_url);
        for standin in &self.standins {
            command.arg("--upstream").arg(format!(
                "{}={},{}",
                standin.namespace, standin.rest_addr, standin.grpc_addr
            ));
        }
        let mut local = Process::spawn(
            "modelsplit local",
            &mut command,
            workdir.join(format!("local-{attempt}.log")),
        );
        let deadline = Instant::now() + START_TIMEOUT;
        while !out.join("ecds.json").is_file() {
            if let Some(exit) = local.exited() {
                panic!("{exit}");
            }
            assert!(
                Instant::now() < deadline,
                "modelsplit local wrote no files:\n{}",
                local.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.local = Some(local);
        let bootstrap = out.join("bootstrap.json");
        self.envoy = Some(Process::spawn(
            "envoy",
            Command::new(envoy).arg("-c").arg(&bootstrap).args([
                "--concurrency",
                "2",
                "--disable-hot-restart",
                "-l",
                "info",
            ]),
            workdir.join(format!("envoy-{attempt}.log")),
        ));
        self.wait_until_serving(admin_port, &bootstrap).await
    }

    /// Waits until Envoy runs the filter configuration on every worker (ECDS
    /// `config_reload`, counted only once all workers have it) and answers on its
    /// listener, whose port it picked. The admin API must be this Envoy's (its
    /// `/server_info` names `bootstrap`): a port taken meanwhile may be another Envoy's.
    async fn wait_until_serving(&mut self, admin_port: u16, bootstrap: &Path) -> Started {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.runs_from(bootstrap).await && self.filter_reloads().await >= 1 {
                if let Some(listener) = self.listener_address().await {
                    self.listener = listener;
                    if self.http.get(&self.url("/"), &[]).await.is_ok() {
                        return Started::Serving;
                    }
                }
            }
            let envoy = self.envoy.as_mut().expect("Envoy was started");
            if let Some(exit) = envoy.exited() {
                if exit.contains(&format!("cannot bind '127.0.0.1:{admin_port}'")) {
                    return Started::AdminPortTaken;
                }
                panic!("{exit}");
            }
            if let Some(exit) = self.local.as_mut().and_then(Process::exited) {
                panic!("{exit}");
            }
            assert!(
                Instant::now() < deadline,
                "Envoy did not start serving:\n{}",
                self.envoy_output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the Envoy answering on the admin port was started from `bootstrap`.
    async fn runs_from(&self, bootstrap: &Path) -> bool {
        let url = format!("{}/server_info", self.admin_url);
        match self.admin_http.get(&url, &[]).await {
            Ok(reply) => {
                reply.json()["command_line_options"]["config_path"].as_str() == bootstrap.to_str()
            }
            Err(_) => false,
        }
    }

    /// The gateway listener's bound address, once it is active.
    async fn listener_address(&self) -> Option<SocketAddr> {
        crate::envoy_admin::listener_address(&self.admin_http, &self.admin_url, LISTENER_NAME).await
    }

    /// The ECDS `config_reload` count: filter configurations in force on every worker
    /// since Envoy started (0 when its admin API does not answer).
    pub async fn filter_reloads(&self) -> u64 {
        let url = format!(
            "{}/stats?filter=extension_config_discovery.http_filter.{FILTER_NAME}.config_reload",
            self.admin_url
        );
        match self.admin_http.get(&url, &[]).await {
            Ok(reply) => parse_stats(&reply.text()).values().sum(),
            Err(_) => 0,
        }
    }

    fn envoy_output(&self) -> String {
        self.envoy.as_ref().map(Process::output).unwrap_or_default()
    }

    /// `http://<listener><path>`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.listener, path_and_query)
    }

    /// A gRPC client connected to the gateway over h2c.
    pub async fn grpc(&self) -> GrpcInferenceServiceClient<Channel> {
        grpc_client(&self.url("")).await
    }

    /// The stand-in of `namespace`.
    pub fn standin(&self, namespace: &str) -> &StandIn {
        self.standins
            .iter()
            .find(|s| s.namespace == namespace)
            .unwrap_or_else(|| panic!("no stand-in for {namespace}"))
    }

    /// Replaces (or adds) a manifest file, as an edit.
    pub fn edit(&self, name: &str, yaml: &str) {
        write_manifest(&self.manifests, name, yaml);
    }

    /// What `modelsplit local` printed so far.
    pub fn local_output(&self) -> String {
        self.local.as_ref().map(Process::output).unwrap_or_default()
    }

    /// Waits until Envoy runs group `namespace/name` with exactly `weights` (basis points,
    /// any order) on every worker; returns when that was confirmed.
    ///
    /// `reloads_before` is [`LocalGateway::filter_reloads`] read before the edit, with no
    /// earlier change still on its way. Envoy's `config_dump` shows a configuration as soon
    /// as the main thread took it; ECDS `config_reload` counts it once every worker runs
    /// it. `modelsplit local` writes the filter at most once per edit (transition.rs), so
    /// the next count after `reloads_before` is this edit's.
    pub async fn wait_in_force(
        &self,
        namespace: &str,
        name: &str,
        weights: &[(&str, u32)],
        reloads_before: u64,
    ) -> Instant {
        let mut expected: Vec<(String, u32)> =
            weights.iter().map(|(m, w)| (m.to_string(), *w)).collect();
        expected.sort();
        let deadline = Instant::now() + EDIT_TIMEOUT;
        loop {
            if let Some(config) = applied_filter_config(&self.admin_http, &self.admin_url).await {
                if let Some(group) = find_group(&config, namespace, name) {
                    let mut now: Vec<(String, u32)> = group
                        .members
                        .iter()
                        .map(|m| (m.name.clone(), m.weight))
                        .collect();
                    now.sort();
                    if now == expected && self.filter_reloads().await > reloads_before {
                        return Instant::now();
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "Envoy never ran {namespace}/{name} as {weights:?} on every worker; modelsplit local said:\n{}",
                self.local_output()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until `modelsplit local` has printed a line containing `text`.
    pub async fn wait_for_output(&self, text: &str) -> String {
        let deadline = Instant::now() + EDIT_TIMEOUT;
        loop {
            if let Some(line) = self.local_output().lines().find(|l| l.contains(text)) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "modelsplit local never printed {text:?}; it said:\n{}",
                self.local_output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for LocalGateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let kept = self.workdir.take().map(|d| d.keep());
            let tail = |text: String| {
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(40)..].join("\n")
            };
            eprintln!(
                "---- modelsplit local ----\n{}\n---- Envoy (last 40 lines) ----\n{}\n---- files kept in {} ----",
                self.local_output(),
                tail(self.envoy_output()),
                kept.map(|p| p.display().to_string()).unwrap_or_default()
            );
        }
    }
}

/// Manifests for tests: a mesh namespace with a routed runtime (`routed`) and one
/// without enable-route (`internal`).
pub fn namespace_manifest(namespace: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {namespace}
  labels: {{opendatahub.io/service-mesh: "true"}}
---
apiVersion: serving.kserve.io/v1alpha1
kind: ServingRuntime
metadata: {{name: routed, namespace: {namespace}, annotations: {{enable-route: "true"}}}}
spec: {{supportedModelFormats: [{{name: sklearn, autoSelect: true}}]}}
---
apiVersion: serving.kserve.io/v1alpha1
kind: ServingRuntime
metadata: {{name: internal, namespace: {namespace}}}
spec: {{supportedModelFormats: [{{name: xgboost, autoSelect: true}}]}}
"#
    )
}

/// An InferenceService on ModelMesh; `group` and `weight` label and annotate it,
/// `runtime` is `routed` or `internal`.
pub fn isvc_manifest(
    namespace: &str,
    name: &str,
    runtime: &str,
    group: Option<(&str, &str)>,
) -> String {
    let (labels, weight) = match group {
        Some((group, weight)) => (
            format!("\n  labels: {{serving.kserve.io/model-tag: {group}}}"),
            format!(", serving.kserve.io/canaryTrafficPercent: \"{weight}\""),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        r#"---
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: {name}
  namespace: {namespace}{labels}
  annotations: {{serving.kserve.io/deploymentMode: ModelMesh{weight}}}
spec: {{predictor: {{model: {{modelFormat: {{name: sklearn}}, runtime: {runtime}}}}}}}
"#
    )
}

/// The manifest of a group: its members as (name, canaryTrafficPercent).
pub fn group_manifest(namespace: &str, group: &str, members: &[(&str, &str)]) -> String {
    members
        .iter()
        .map(|(name, weight)| isvc_manifest(namespace, name, "routed", Some((group, weight))))
        .collect()
}
