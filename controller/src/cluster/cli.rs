//! The `run` subcommand's own flags and its entry point (the planner's flags are shared
//! with `render` and parsed by main.rs).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::error::exit_code;
use super::filter_module::FilterModule;
use super::filter_source::{self, FilterSource, FilterSourceError, ServiceAddress};
use super::gateway_stats::StatsEndpoint;
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
    /// Changes within this long of the first one are planned together, in one pass. Long
    /// enough for one `kubectl apply` of a group's members; a re-weight made as separate
    /// edits may pass through an invalid sum in between, which keeps the last valid split
    /// (and may say so in an Event) until the last edit lands.
    #[arg(long, default_value_t = 200, value_name = "MILLISECONDS")]
    pub debounce_ms: u64,
    /// The filter module this controller serves at /filter/<sha256>.wasm on --metrics-addr
    /// and, without --url, publishes in the WasmPlugins with its sha256 [default:
    /// /filter/plugin.wasm, where controller/Dockerfile puts the module of the same commit;
    /// with --url, nothing is served unless this is given].
    #[arg(long, value_name = "PATH")]
    pub filter_file: Option<PathBuf>,
    /// The Service in front of the replicas, in the published URL of the served module.
    #[arg(long, default_value = DEFAULT_FILTER_SERVICE, value_name = "NAME")]
    pub filter_service: String,
    /// Namespace of --filter-service [default: $POD_NAMESPACE, else modelsplit-system].
    #[arg(long, value_name = "NAMESPACE")]
    pub filter_service_namespace: Option<String>,
    /// The port of --filter-service that reaches --metrics-addr.
    #[arg(long, default_value_t = 8080, value_name = "PORT")]
    pub filter_service_port: u16,
    /// The cluster's DNS domain, in the published URL of the served module.
    #[arg(long, default_value = "cluster.local", value_name = "DOMAIN")]
    pub cluster_domain: String,
    /// Automated rollouts read each gateway pod's statistics (the pods the WasmPlugins
    /// select) on this port: Istio's Prometheus port.
    #[arg(long, default_value_t = 15090, value_name = "PORT")]
    pub gateway_stats_port: u16,
    /// ... at this path.
    #[arg(long, default_value = "/stats/prometheus", value_name = "PATH")]
    pub gateway_stats_path: String,
}

/// The Service of controller/deploy/service.yaml.
pub const DEFAULT_FILTER_SERVICE: &str = "modelsplit-controller-metrics";
/// The namespace of controller/deploy/.
pub const DEFAULT_NAMESPACE: &str = "modelsplit-system";

const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl RunFlags {
    /// The controller's Service as published in the module's URL; `pod_namespace` is
    /// `$POD_NAMESPACE` (the Deployment sets it from the Downward API).
    pub fn service_address(&self, pod_namespace: Option<String>) -> ServiceAddress {
        ServiceAddress {
            name: self.filter_service.clone(),
            namespace: self
                .filter_service_namespace
                .clone()
                .or(pod_namespace)
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
            port: self.filter_service_port,
            domain: self.cluster_domain.clone(),
        }
    }

    /// The module to publish and serve, given the planner's `--url` and `--sha256`
    /// ([`filter_source::choose`]).
    pub fn filter_source(
        &self,
        url: Option<String>,
        sha256: Option<String>,
    ) -> Result<FilterSource, FilterSourceError> {
        filter_source::choose(
            url,
            sha256,
            self.filter_file.as_deref(),
            &self.service_address(env("POD_NAMESPACE")),
        )
    }

    /// Resolves defaults from the environment; `client_namespace` is the kubeconfig's.
    pub fn settings(
        &self,
        planner: Settings,
        client_namespace: &str,
        served: Option<FilterModule>,
    ) -> RunSettings {
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
            served,
            resync: Duration::from_secs(self.resync_seconds.max(1)),
            debounce: Duration::from_millis(self.debounce_ms),
            gateway_stats: StatsEndpoint {
                port: self.gateway_stats_port,
                path: self.gateway_stats_path.clone(),
            },
        }
    }
}

/// `modelsplit run`: returns the process exit code (0 after a clean shutdown). `served` is
/// the module to serve at /filter/<sha256>.wasm (from [`RunFlags::filter_source`]).
pub fn main(args: RunFlags, planner: Settings, served: Option<FilterModule>) -> i32 {
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
                "--url is render's placeholder, an image nobody publishes: the gateway cannot fetch the filter. Drop --url to publish the module this controller serves, or name the image you pushed (controller/deploy/README.md)"
            );
        }
        if let Some(module) = &served {
            tracing::info!(
                file = %module.path().display(),
                sha256 = module.sha256(),
                path = %module.served_path(),
                "serving the filter module"
            );
        }
        tracing::info!(url = %planner.url, sha256 = ?planner.sha256, "WasmPlugins name this filter module");
        let settings = args.settings(planner, &config.default_namespace, served);
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        run: RunFlags,
    }

    fn flags(args: &[&str]) -> RunFlags {
        Flags::try_parse_from(std::iter::once("run").chain(args.iter().copied()))
            .expect("flags parse")
            .run
    }

    #[test]
    fn the_service_defaults_to_the_shipped_one_in_the_pods_namespace() {
        let run = flags(&[]);
        let fallback = run.service_address(None);
        assert_eq!(
            (fallback.name.as_str(), fallback.namespace.as_str()),
            ("modelsplit-controller-metrics", "modelsplit-system")
        );
        assert_eq!(
            (fallback.port, fallback.domain.as_str()),
            (8080, "cluster.local")
        );
        // The Deployment sets POD_NAMESPACE from the Downward API.
        let in_pod = run.service_address(Some("odh-system".into()));
        assert_eq!(in_pod.namespace, "odh-system");
    }

    #[test]
    fn service_flags_win_over_the_environment() {
        let run = flags(&[
            "--filter-service=ms",
            "--filter-service-namespace=tenant",
            "--filter-service-port=9090",
            "--cluster-domain=corp.example",
        ]);
        assert_eq!(
            run.service_address(Some("odh-system".into())),
            ServiceAddress {
                name: "ms".into(),
                namespace: "tenant".into(),
                port: 9090,
                domain: "corp.example".into(),
            }
        );
    }
}
