//! `modelsplit local`: the local gateway's Envoy files from manifests, kept current.
//!
//! The same planner as `render` and `run` turns the manifests into a plan; the local
//! gateway plays one gateway workload (`--gateway-namespace`, default the default
//! gateway's namespace): the plan's filter configuration for it becomes Envoy's ECDS
//! file (the `WasmPlugin`), its namespaces' routes the RDS file (the
//! `VirtualService`s), and each namespace's ModelMesh a pair of CDS clusters.
//!
//! - [`envoy_files`]: pure rendering of the bootstrap and the watched files.
//! - [`transition`]: the staged writes that change a running Envoy without a failed request.
//! - [`state`]: plan -> the state of the local gateway.
//! - [`watch`]: manifest change detection.
//! - [`admin`]: Envoy's admin API, to confirm each step was applied.
//! - [`changes`]: what to print after a render.
//! - [`rollouts`]: automated rollouts declared on the manifests, judged from the gateway.
//!
//! Last known good works as in a cluster: the filter configuration last written is
//! the `previous` of the next plan (and, at start, the one found in `--out`).

pub mod admin;
pub mod changes;
pub mod envoy_files;
pub mod rollouts;
pub mod state;
pub mod transition;
pub mod watch;

use admin::{Admin, Counters};
use changes::Changes;
use envoy_files::{
    read_filter_config, render_bootstrap, write_atomically, BootstrapSettings, GatewayState,
    WatchedFile, BOOTSTRAP_FILE,
};
use modelsplit_core::planner::{self, PreviousConfigs};
use modelsplit_core::settings::Settings;
use state::{gateway_state, Upstreams};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The bootstrap's admin address when `--admin` names none.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";
/// The bootstrap's gateway listener by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Where `scripts/build-wasm.sh` puts the filter (docs/design.md section 6).
pub const DEFAULT_WASM: &str = "target/wasm32-unknown-unknown/release/modelsplit_filter.wasm";
/// Time for a configuration Envoy's main thread applied to reach every worker, and
/// for the watch events of a step's other files to drain, before the next step.
const WORKER_PROPAGATION: Duration = Duration::from_millis(250);
/// Without the admin API, the pause between steps (Envoy applies files within milliseconds).
const UNCONFIRMED_PAUSE: Duration = Duration::from_millis(500);
/// How often a rollout in progress is judged.
const ROLLOUT_TICK: Duration = Duration::from_secs(1);
/// How long Envoy may take to apply one step before we go on anyway.
const APPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// What `modelsplit local` was asked to do.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Manifest files or directories.
    pub manifests: Vec<PathBuf>,
    /// The directory Envoy watches; also gets `bootstrap.json`.
    pub out: PathBuf,
    /// The filter module as Envoy sees it.
    pub wasm: PathBuf,
    pub upstreams: Upstreams,
    /// The gateway listener in the bootstrap.
    pub listen: SocketAddr,
    /// Envoy's admin API, to confirm each step; also the bootstrap's admin address.
    pub admin: Option<Admin>,
    /// The gateway workload namespace this local gateway plays.
    pub gateway_namespace: String,
    /// Render once and exit.
    pub once: bool,
}

/// Why `modelsplit local` stopped.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the filter module {} does not exist: build it with scripts/build-wasm.sh or pass --wasm", path.display())]
    WasmMissing { path: PathBuf },
    #[error(transparent)]
    Manifests(#[from] modelsplit_core::manifests::ManifestError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LocalError + '_ {
    move |source| LocalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The module path to write into the ECDS file: absolute, since Envoy runs elsewhere.
/// A missing absolute path is accepted with a note (it may exist only where Envoy
/// runs, e.g. in its container); a missing relative path is an error.
pub fn resolve_wasm(path: &Path) -> Result<(PathBuf, Option<String>), LocalError> {
    match path.canonicalize() {
        Ok(found) if found.is_file() => Ok((found, None)),
        _ if path.is_absolute() => Ok((
            path.to_path_buf(),
            Some(format!(
                "note: the filter module {} is not on this machine; Envoy must find it there",
                path.display()
            )),
        )),
        _ => Err(LocalError::WasmMissing {
            path: path.to_path_buf(),
        }),
    }
}

/// Renders, writes and (unless `once`) keeps re-rendering on every manifest change.
/// Prints progress on stdout, one line per event.
pub fn run(options: &LocalOptions, settings: &Settings) -> Result<(), LocalError> {
    std::fs::create_dir_all(&options.out).map_err(io(&options.out))?;
    let out = options.out.canonicalize().map_err(io(&options.out))?;
    let admin_address = options
        .admin
        .as_ref()
        .and_then(Admin::socket_addr)
        .unwrap_or_else(|| DEFAULT_ADMIN.parse().expect("a valid default address"));
    let bootstrap = render_bootstrap(&BootstrapSettings {
        listener: options.listen,
        admin: admin_address,
        config_dir: out.clone(),
    });
    write_if_changed(&out, BOOTSTRAP_FILE, &bootstrap)?;
    say(&format!(
        "writing the gateway's Envoy files to {}; start Envoy with: envoy -c {} --concurrency 2",
        out.display(),
        out.join(BOOTSTRAP_FILE).display()
    ));
    say(&format!(
        "gateway listener http://{}, admin http://{admin_address}; playing the gateway in namespace {}",
        options.listen, options.gateway_namespace
    ));

    let mut previous = PreviousConfigs::new();
    if let Some(config) = read_filter_config(&out) {
        previous.insert(options.gateway_namespace.clone(), config);
    }
    let mut current: Option<GatewayState> = None;
    let mut changes = Changes::default();
    let mut snapshot = watch::Snapshot::take(&options.manifests);
    let mut rollouts = rollouts::LocalRollouts::load(&out);
    loop {
        match modelsplit_core::manifests::load_manifests(&options.manifests) {
            Err(error) if options.once => return Err(error.into()),
            Err(error) => say(&format!(
                "manifests not read: {error}; the gateway keeps its current files"
            )),
            Ok(observed) => {
                let mut plan = planner::plan(&observed, &previous, settings);
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                for line in rollouts.apply(&observed, &mut plan, options.admin.as_ref(), now) {
                    say(&line);
                }
                let (state, others) =
                    gateway_state(&plan, &options.gateway_namespace, &options.upstreams);
                let mut notes: Vec<String> = others.iter().map(ToString::to_string).collect();
                if plan.groups.is_empty() && plan.routes.is_empty() {
                    notes.push("nothing to serve: no namespace in the mesh has an exposed ModelMesh InferenceService".into());
                }
                for line in changes.update(&plan, &notes) {
                    say(&line);
                }
                if current.as_ref() != Some(&state) {
                    let summary = apply(current.as_ref(), &state, &out, options)?;
                    say(&summary);
                    current = Some(state);
                }
                previous = plan.published_configs();
            }
        }
        if options.once {
            return Ok(());
        }
        // A rollout in progress is judged again every second, edits or not.
        let until = rollouts
            .progressing()
            .then(|| Instant::now() + ROLLOUT_TICK);
        if let Some((next, changed)) = watch::wait_for_change(&options.manifests, &snapshot, until)
        {
            snapshot = next;
            let names: Vec<String> = changed.iter().map(|p| p.display().to_string()).collect();
            say(&format!("manifests changed: {}", names.join(", ")));
        }
    }
}

/// Writes the steps from `old` to `new`, confirming each with Envoy when possible;
/// returns a line saying what happened.
fn apply(
    old: Option<&GatewayState>,
    new: &GatewayState,
    out: &Path,
    options: &LocalOptions,
) -> Result<String, LocalError> {
    let started = Instant::now();
    let steps = transition::transition_steps(old, new, &options.wasm);
    let mut written = Vec::new();
    let mut unconfirmed: Option<String> = None;
    let count = steps.len();
    for (index, step) in steps.into_iter().enumerate() {
        let step: Vec<_> = step
            .into_iter()
            .filter(|(file, contents)| {
                std::fs::read_to_string(out.join(file.file_name()))
                    .ok()
                    .as_deref()
                    != Some(contents)
            })
            .collect();
        if step.is_empty() {
            continue;
        }
        let before = options.admin.as_ref().map(|a| (a, a.counters()));
        for (file, contents) in &step {
            let name = file.file_name();
            write_atomically(out, name, contents).map_err(io(&out.join(name)))?;
        }
        let files: Vec<WatchedFile> = step.iter().map(|(file, _)| *file).collect();
        written.push(describe(&files));
        let last = index + 1 == count;
        match before {
            Some((admin, Ok(before))) => {
                if let Err(problem) = wait_applied(admin, &before, &files) {
                    unconfirmed.get_or_insert(problem);
                }
            }
            Some((admin, Err(error))) => {
                unconfirmed.get_or_insert(
                    if error.kind() == std::io::ErrorKind::ConnectionRefused {
                        format!("no Envoy running at {} yet", admin.url())
                    } else {
                        format!("Envoy admin {} not reachable ({error})", admin.url())
                    },
                );
                if !last {
                    std::thread::sleep(UNCONFIRMED_PAUSE);
                }
            }
            None => {
                unconfirmed.get_or_insert("no --admin to confirm with".into());
                if !last {
                    std::thread::sleep(UNCONFIRMED_PAUSE);
                }
            }
        }
        if !last {
            std::thread::sleep(WORKER_PROPAGATION);
        }
    }
    let elapsed = started.elapsed().as_millis();
    Ok(match (written.is_empty(), unconfirmed) {
        (true, _) => "gateway files already current".to_string(),
        (false, None) => format!(
            "gateway updated ({}); Envoy applied it in {elapsed} ms",
            written.join(", then ")
        ),
        (false, Some(why)) => format!(
            "gateway files written ({}) in {elapsed} ms; not confirmed: {why}",
            written.join(", then ")
        ),
    })
}

/// Polls Envoy until every file of the step was applied (or rejected, or time ran out).
fn wait_applied(admin: &Admin, before: &Counters, files: &[WatchedFile]) -> Result<(), String> {
    let deadline = Instant::now() + APPLY_TIMEOUT;
    loop {
        if let Ok(now) = admin.counters() {
            let moved = |file: &WatchedFile, pick: fn(&(u64, u64)) -> u64| {
                now.get(file).map(pick).unwrap_or(0) > before.get(file).map(pick).unwrap_or(0)
            };
            if let Some(file) = files.iter().find(|f| moved(f, |c| c.1)) {
                return Err(format!(
                    "Envoy rejected {file} (see its log); it keeps its previous configuration"
                ));
            }
            if files.iter().all(|f| moved(f, |c| c.0)) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            let names: Vec<&str> = files.iter().map(|f| f.file_name()).collect();
            return Err(format!(
                "Envoy at {} did not apply {} within {} s",
                admin.url(),
                names.join(", "),
                APPLY_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `routes + clusters`, `filter`: what a step changed, in words.
fn describe(files: &[WatchedFile]) -> String {
    let words: Vec<&str> = files.iter().map(|f| f.contents()).collect();
    words.join(" + ")
}

fn write_if_changed(dir: &Path, name: &str, contents: &str) -> Result<(), LocalError> {
    let path = dir.join(name);
    if std::fs::read_to_string(&path).ok().as_deref() == Some(contents) {
        return Ok(());
    }
    write_atomically(dir, name, contents).map_err(io(&path))
}

/// Prints one line with the time of day (UTC, milliseconds) in front.
fn say(line: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (secs, millis) = (now.as_secs() % 86_400, now.subsec_millis());
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) must not stop the gateway's updates.
    let _ = writeln!(
        stdout,
        "{:02}:{:02}:{:02}.{millis:03} {line}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    let _ = stdout.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_module_is_an_error_only_where_it_must_exist() {
        assert!(matches!(
            resolve_wasm(Path::new("no/such/filter.wasm")),
            Err(LocalError::WasmMissing { .. })
        ));
        let (path, note) = resolve_wasm(Path::new("/etc/modelsplit/filter.wasm")).unwrap();
        assert_eq!(path, Path::new("/etc/modelsplit/filter.wasm"));
        assert!(note.is_some());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.wasm"), b"\0asm").unwrap();
        let (path, note) = resolve_wasm(&dir.path().join("f.wasm")).unwrap();
        assert!(path.is_absolute() && note.is_none());
    }

    #[test]
    fn steps_are_described_in_words() {
        assert_eq!(
            describe(&[WatchedFile::Cds, WatchedFile::Rds]),
            "clusters + routes"
        );
        assert_eq!(describe(&[WatchedFile::Ecds]), "filter");
    }
}
