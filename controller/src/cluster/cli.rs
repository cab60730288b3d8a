//! The `run` subcommand's own flags and its entry point (the planner's flags are shared
//! with `render` and parsed by main.rs).

use std::net::SocketAddr;
use std::time::Duration;

use super::error::exit_code;
use super::lease::LeaseSettings;
use super::reconcile::Publishing;
use super::watch::Scope;
use super::RunSettings;
use modelsplit_core::resources::wasm_plugin::WASM_PLUGIN_NAME;
use modelsplit_core::settings::{Settings, DEFAULT_PLUGIN_URL};

/// Flags of `modelsplit run` besides the planner settings.
#[derive(clap::Args, Debug, Clone)]
pub struct RunFlags {
    /// Watch ServingRuntimes and InferenceServices only in this namespace (repeatable;
    /// default: all namespaces).
    #[arg(long = "watch-namespace", value_name = "NAMESPACE")]
    pub watch_namespaces: Vec<String>,
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, default_value = "0.0.0.0:8080", value_name = "ADDR")]
    pub metrics_addr: SocketAddr,
    /// Name of the WasmPlugin and VirtualServices this controller publishes; it changes or
    /// removes only objects of this name. Controllers limited to different namespaces on one
    /// gateway each need their own [default: modelsplit; with --watch-namespace:
    /// modelsplit-<first watched namespace>].
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
    /// Name of the Lease that elects the writing replica [default: modelsplit-controller for
    /// the default instance, else <instance>-controller].
    #[arg(long, value_name = "NAME")]
    pub lease_name: Option<String>,
    /// How long a route outlives the filter-config change that stopped using it: long
    /// enough for the gateway to run the new config (istiod's debounce and push).
    #[arg(long, default_value_t = 15, value_name = "SECONDS")]
    pub route_grace_seconds: u64,
    /// Namespace of the Lease [default: $POD_NAMESPACE, else the service account's namespace,
    /// else the kubeconfig's].
    #[arg(long, value_name = "NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease [default: $POD_NAME, else $HOSTNAME].
    #[arg(long, value_name = "ID")]
    pub identity: Option<String>,
    /// Re-plan this often even when nothing changed.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub resync_seconds: u64,
    /// Changes within this long of the first one are planned together, in one pass.
    #[arg(long, default_value_t = 500, value_name = "MILLISECONDS")]
    pub debounce_ms: u64,
}

const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

impl RunFlags {
    /// Resolves defaults from the environment; `client_namespace` is the kubeconfig's.
    pub fn settings(&self, planner: Settings, client_namespace: &str) -> RunSettings {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let lease_namespace = self
            .lease_namespace
            .clone()
            .or_else(|| env("POD_NAMESPACE"))
            .or_else(|| {
                std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
                    .ok()
                    .map(|ns| ns.trim().to_string())
                    .filter(|ns| !ns.is_empty())
            })
            .unwrap_or_else(|| client_namespace.to_string());
        let identity = self
            .identity
            .clone()
            .or_else(|| env("POD_NAME"))
            .or_else(|| env("HOSTNAME"))
            .unwrap_or_else(|| format!("modelsplit-{}", std::process::id()));
        let scope = if self.watch_namespaces.is_empty() {
            Scope::AllNamespaces
        } else {
            Scope::Namespaces(self.watch_namespaces.clone())
        };
        let instance =
            self.instance
                .clone()
                .unwrap_or_else(|| match self.watch_namespaces.first() {
                    None => WASM_PLUGIN_NAME.to_string(),
                    Some(first) => format!("{WASM_PLUGIN_NAME}-{first}"),
                });
        let lease_name = self.lease_name.clone().unwrap_or_else(|| {
            if instance == WASM_PLUGIN_NAME {
                "modelsplit-controller".to_string()
            } else {
                format!("{instance}-controller")
            }
        });
        RunSettings {
            planner,
            scope: scope.clone(),
            lease: LeaseSettings::new(&lease_name, &lease_namespace, &identity),
            publishing: Publishing {
                instance,
                scope,
                route_grace: Duration::from_secs(self.route_grace_seconds),
            },
            metrics_addr: self.metrics_addr,
            resync: Duration::from_secs(self.resync_seconds.max(1)),
            debounce: Duration::from_millis(self.debounce_ms),
        }
    }
}

/// `modelsplit run`: returns the process exit code (0 after a clean shutdown).
pub fn main(args: RunFlags, planner: Settings) -> i32 {
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("modelsplit run: cannot start the async runtime: {error}");
            return exit_code::FAILURE;
        }
    };
    runtime.block_on(async move {
        let mut config = match kube::Config::infer().await {
            Ok(config) => config,
            Err(error) => {
                tracing::error!(%error, "cannot configure a Kubernetes client (in-cluster service account or KUBECONFIG)");
                return exit_code::FAILURE;
            }
        };
        if planner.url == DEFAULT_PLUGIN_URL {
            tracing::warn!(
                url = DEFAULT_PLUGIN_URL,
                "--url is the placeholder default, an image nobody publishes: the gateway cannot fetch the filter until --url names the image you pushed (controller/deploy/README.md)"
            );
        }
        let settings = args.settings(planner, &config.default_namespace);
        // Audit logs and API server metrics then tell the replicas apart.
        let agent = format!(
            "modelsplit/{} ({})",
            env!("CARGO_PKG_VERSION"),
            settings.lease.identity
        );
        if let Ok(value) = http::HeaderValue::from_str(&agent) {
            config.headers.push((http::header::USER_AGENT, value));
        }
        let client = match kube::Client::try_from(config) {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "cannot build a Kubernetes client");
                return exit_code::FAILURE;
            }
        };
        tracing::info!(
            identity = %settings.lease.identity,
            lease = %format!("{}/{}", settings.lease.namespace, settings.lease.name),
            scope = ?settings.scope,
            instance = %settings.publishing.instance,
            "starting modelsplit controller"
        );
        let shutdown = super::shutdown_on_signals();
        match super::run(client, settings, shutdown).await {
            Ok(()) => 0,
            Err(error) => {
                tracing::error!(%error, "modelsplit run stopped");
                eprintln!("modelsplit run: {error}");
                error.exit_code()
            }
        }
    })
}

/// Structured logs; the level comes from `RUST_LOG` (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
