//! `modelsplit`: the command line of the modelsplit controller.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use modelsplit_controller::cluster::cli::RunFlags;
use modelsplit_controller::cluster::filter_module::FilterModule;
use modelsplit_controller::local::{self, admin::Admin, envoy_files::Upstream, state::Upstreams};
use modelsplit_controller::render;
use modelsplit_core::settings::{self, Delivery, FailStrategy, GatewayRef, Settings};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Percentage traffic splitting for KServe ModelMesh through the Istio ingress gateway.
#[derive(Parser)]
#[command(name = "modelsplit", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the WasmPlugin and VirtualServices for a set of manifests.
    ///
    /// Reads Namespaces, ServingRuntimes and InferenceServices, writes the resources
    /// as multi-document YAML on stdout and one line per group on stderr.
    Render(RenderArgs),
    /// Run the controller in a cluster: watch, plan, apply, prune, report Events.
    ///
    /// Needs the InferenceService, ServingRuntime, WasmPlugin and VirtualService CRDs and
    /// the RBAC of controller/deploy/. Exit codes: 3 CRD missing, 4 RBAC denies access.
    Run(RunArgs),
    /// Feed a local Envoy: render its files from manifests and re-render on every change.
    ///
    /// Writes bootstrap.json (once) and the watched ecds.json (filter), rds.json (routes)
    /// and cds.json (ModelMesh clusters) into --out; a change is written in steps that
    /// Envoy applies one by one, so no request fails. Invalid edits keep the last good
    /// split. Start Envoy with `envoy -c OUT/bootstrap.json`.
    Local(LocalArgs),
    /// Show what a gateway does with each group: configured weight, observed share,
    /// requests/s and totals per member, and whether the split is in line with the weights.
    ///
    /// Reads the gateway's Envoy admin API: its filter configuration (config_dump) and the
    /// filter's per-member counters (stats, at most 1 s behind). The local gateway's admin
    /// is http://127.0.0.1:9901; for an Istio gateway, `kubectl -n istio-system port-forward
    /// deploy/<gateway> 15000` and --admin http://127.0.0.1:15000.
    Status(StatusArgs),
}

#[derive(Args)]
struct StatusArgs {
    /// Envoy's admin URL.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9901", value_parser = |s: &str| Admin::parse(s))]
    admin: Admin,
    /// Observe this long (counters are flushed every 0.5 s, so use 2 s or more); 0: totals
    /// since the gateway started.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    window: f64,
    /// Output format: table or json.
    #[arg(short = 'o', long = "output", default_value = "table", value_parser = ["table", "json"])]
    output: String,
    /// Repeat, one window after another, redrawing in place.
    #[arg(long)]
    watch: bool,
}

#[derive(Args)]
struct LocalArgs {
    /// A manifest file or directory (multi-document YAML or JSON); repeatable; watched.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    paths: Vec<PathBuf>,
    /// The directory Envoy watches (created if missing); also gets bootstrap.json.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The filter module as Envoy sees it.
    #[arg(long, value_name = "PATH", default_value = local::DEFAULT_WASM)]
    wasm: PathBuf,
    /// ModelMesh (or stand-in) of one namespace; repeatable.
    #[arg(long = "upstream", value_name = "NS=REST_ADDR,GRPC_ADDR", value_parser = parse_upstream)]
    upstreams: Vec<Upstream>,
    /// ModelMesh of every namespace without --upstream (ModelMesh's own ports on this
    /// machine, as `kubectl port-forward svc/modelmesh-serving 8008 8033` gives them).
    #[arg(long, value_name = "REST_ADDR,GRPC_ADDR", default_value = local::state::DEFAULT_UPSTREAM, value_parser = parse_default_upstream)]
    default_upstream: Upstream,
    /// The gateway listener written into bootstrap.json (HTTP/1.1 and h2c gRPC).
    #[arg(long, value_name = "ADDR", default_value = local::DEFAULT_LISTEN)]
    listen: std::net::SocketAddr,
    /// Envoy's admin URL: each step is confirmed through its /stats before the next
    /// (without it, a short pause); also the admin address in bootstrap.json [bootstrap default: 127.0.0.1:9901].
    #[arg(long, value_name = "URL", value_parser = |s: &str| Admin::parse(s))]
    admin: Option<Admin>,
    /// The gateway workload this Envoy plays: namespaces bound to gateways elsewhere are
    /// left out [default: the namespace of --default-gateway, or --plugin-namespace].
    #[arg(long, value_name = "NAMESPACE")]
    gateway_namespace: Option<String>,
    /// Render and write once, then exit (non-zero if the manifests cannot be read).
    #[arg(long)]
    once: bool,
    #[command(flatten)]
    settings: SettingsArgs,
}

fn parse_upstream(text: &str) -> Result<Upstream, String> {
    let (namespace, addresses) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} must be NAMESPACE=REST_ADDR,GRPC_ADDR"))?;
    Upstream::parse(namespace.trim(), addresses).map_err(|e| e.to_string())
}

fn parse_default_upstream(text: &str) -> Result<Upstream, String> {
    Upstream::parse("", text).map_err(|e| e.to_string())
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    run: RunFlags,
    #[command(flatten)]
    settings: SettingsArgs,
}

#[derive(Args)]
struct RenderArgs {
    /// A manifest file or directory (multi-document YAML or JSON), or - for stdin; repeatable.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    paths: Vec<PathBuf>,
    /// Exit non-zero, printing no resources, when any group is invalid.
    #[arg(long)]
    strict: bool,
    /// A previous render output: invalid groups keep the split published there.
    #[arg(long, value_name = "FILE")]
    previous: Option<PathBuf>,
    #[command(flatten)]
    settings: SettingsArgs,
}

/// Settings shared by every mode that plans.
#[derive(Args)]
struct SettingsArgs {
    /// Gateway of mesh namespaces that do not name one.
    #[arg(long, value_name = "NAMESPACE/NAME", default_value = settings::DEFAULT_GATEWAY)]
    default_gateway: GatewayRef,
    /// Put every WasmPlugin in this namespace instead of each gateway's namespace.
    #[arg(long, value_name = "NAMESPACE")]
    plugin_namespace: Option<String>,
    /// Label of the gateway pods the WasmPlugin applies to; repeatable [default: istio=ingressgateway].
    #[arg(long = "selector", value_name = "LABEL=VALUE", value_parser = settings::parse_selector)]
    selector: Vec<(String, String)>,
    /// Where Istio fetches the filter module (oci://, https:// or file://) [default: `run`:
    /// the module it serves itself (--filter-file) at its Service; `render` and `local`:
    /// oci://ghcr.io/modelsplit/modelsplit-filter:0.1.0, a placeholder nobody publishes].
    #[arg(long)]
    url: Option<String>,
    /// SHA-256 checked by Istio, with --url: for an oci:// URL the image's digest (without
    /// "sha256:"), for https:// and file:// the module file's own [default: `run` without
    /// --url: the served module's].
    #[arg(long)]
    sha256: Option<String>,
    /// Secret (in each WasmPlugin's namespace) with the credentials Istio uses to pull an
    /// oci:// module from a private registry: the WasmPlugin's imagePullSecret.
    #[arg(long, value_name = "SECRET")]
    image_pull_secret: Option<String>,
    /// What the gateway does if the filter cannot be loaded: FAIL_OPEN or FAIL_CLOSE.
    #[arg(long, default_value = "FAIL_OPEN")]
    fail_strategy: FailStrategy,
    /// Expose every ModelMesh InferenceService, not only those whose runtime has enable-route: "true".
    #[arg(long)]
    no_require_enable_route: bool,
    /// How `render` and `run` give the gateway its filter: wasmplugin (an Istio WasmPlugin),
    /// or envoyfilter (an EnvoyFilter with the same module and configuration that also lets
    /// the filter read `model_name` from gRPC messages, so standard KServe gRPC clients that
    /// name the group there split too; needs Istio 1.27+ / Envoy 1.35+). The local gateway
    /// always reads `model_name`.
    #[arg(long, default_value = "wasmplugin", value_name = "KIND")]
    delivery: Delivery,
}

impl SettingsArgs {
    /// The settings with `--url`'s default for `render` and `local` (the placeholder).
    fn into_settings(self) -> Result<Settings> {
        let url = self
            .url
            .clone()
            .unwrap_or_else(|| settings::DEFAULT_PLUGIN_URL.to_string());
        let sha256 = self.sha256.clone();
        self.into_settings_with(url, sha256)
    }

    /// The settings of `run`: by default the module it serves, at its Service.
    fn into_run_settings(self, run: &RunFlags) -> Result<(Settings, Option<FilterModule>)> {
        let source = run.filter_source(self.url.clone(), self.sha256.clone())?;
        let settings = self.into_settings_with(source.url, source.sha256)?;
        Ok((settings, source.served))
    }

    fn into_settings_with(self, url: String, sha256: Option<String>) -> Result<Settings> {
        let defaults = Settings::default();
        let settings = Settings {
            default_gateway: self.default_gateway,
            plugin_namespace: self.plugin_namespace,
            selector: if self.selector.is_empty() {
                defaults.selector
            } else {
                self.selector.into_iter().collect::<BTreeMap<_, _>>()
            },
            url,
            sha256,
            image_pull_secret: self.image_pull_secret,
            fail_strategy: self.fail_strategy,
            require_enable_route: !self.no_require_enable_route,
            delivery: self.delivery,
        };
        settings.validate()?;
        Ok(settings)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Render(args) => run_render(args),
        Command::Local(args) => run_local(args),
        Command::Status(args) => run_status(args),
        Command::Run(args) => match args.settings.into_run_settings(&args.run) {
            Ok((settings, served)) => {
                let code = modelsplit_controller::cluster::cli::main(args.run, settings, served);
                return ExitCode::from(u8::try_from(code).unwrap_or(1));
            }
            Err(error) => Err(error),
        },
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("modelsplit: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_render(args: RenderArgs) -> Result<ExitCode> {
    let settings = args.settings.into_settings()?;
    let (plan, yaml) = render::render(&args.paths, args.previous.as_deref(), &settings)?;
    for line in render::report_lines(&plan) {
        eprintln!("{line}");
    }
    let invalid = plan.invalid_groups().count();
    if args.strict && invalid > 0 {
        bail!("{invalid} group(s) invalid (--strict): no resources printed");
    }
    if args.strict && !plan.oversized.is_empty() {
        bail!(
            "{} gateway configuration(s) too large to publish (--strict): no resources printed",
            plan.oversized.len()
        );
    }
    std::io::stdout()
        .lock()
        .write_all(yaml.as_bytes())
        .context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

fn run_status(args: StatusArgs) -> Result<ExitCode> {
    use modelsplit_controller::status;
    use std::io::IsTerminal;
    if !(args.window.is_finite() && args.window >= 0.0) {
        bail!("--window must be a number of seconds, 0 or more");
    }
    let window = std::time::Duration::from_secs_f64(args.window);
    let terminal = std::io::stdout().is_terminal();
    loop {
        let statuses = status::status(&args.admin, window)?;
        let text = if args.output == "json" {
            format!("{}\n", serde_json::to_string_pretty(&statuses)?)
        } else {
            status::table::render(&statuses, window, terminal)
        };
        let mut out = std::io::stdout().lock();
        if args.watch && terminal {
            out.write_all(b"\x1b[H\x1b[2J")?; // redraw in place
        }
        out.write_all(text.as_bytes())?;
        out.flush()?;
        if !args.watch {
            return Ok(ExitCode::SUCCESS);
        }
        if window.is_zero() {
            std::thread::sleep(std::time::Duration::from_secs(2));
        }
    }
}

fn run_local(args: LocalArgs) -> Result<ExitCode> {
    let settings = args.settings.into_settings()?;
    let (wasm, note) = local::resolve_wasm(&args.wasm)?;
    if let Some(note) = note {
        eprintln!("modelsplit: {note}");
    }
    let mut upstreams = Upstreams {
        default: args.default_upstream,
        ..Upstreams::default()
    };
    for upstream in args.upstreams {
        if upstreams.by_namespace.contains_key(&upstream.namespace) {
            bail!(
                "--upstream names namespace {} twice; keep one",
                upstream.namespace
            );
        }
        upstreams
            .by_namespace
            .insert(upstream.namespace.clone(), upstream);
    }
    let gateway_namespace = args
        .gateway_namespace
        .unwrap_or_else(|| settings.plugin_namespace_for(&settings.default_gateway));
    let options = local::LocalOptions {
        manifests: args.paths,
        out: args.out,
        wasm,
        upstreams,
        listen: args.listen,
        admin: args.admin,
        gateway_namespace,
        once: args.once,
    };
    local::run(&options, &settings)?;
    Ok(ExitCode::SUCCESS)
}
