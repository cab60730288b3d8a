//! istiod and an ingress gateway it configures: a plain Envoy 1.40 (the one the suite
//! already uses) bootstrapped to istiod's plaintext xDS port, labelled
//! `istio: ingressgateway` in `istio-system`, as a gateway pod would be.
//!
//! What this setup leaves out, and why it still tests what users run: there is no
//! istio-agent, so no SDS (upstream TLS is disabled by a DestinationRule) and no fetching
//! of `oci://` modules. For any URL but `file://`, istiod sends Envoy a remote data source
//! through the cluster named `_`, which does not exist in a real gateway because
//! istio-agent fetches the module itself (resolving the URL's host with the pod's DNS) and
//! hands Envoy a local file. Here the bootstrap defines `_` as the controller's Service
//! stand-in ([`super::service::ServiceProxy`]), so Envoy fetches an `http://` module from
//! the controller and checks its `sha256` itself; other tests use a `file://` URL.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::binaries::ControlPlaneBinaries;
use super::process::{free_port, Process, START_ATTEMPTS};
use crate::gateway::{envoy_binary, Stats};
use crate::http::HttpClient;

/// The Istio version the gateway claims in its node metadata (istiod gates features on it).
pub const PROXY_ISTIO_VERSION: &str = "1.31.0";

/// A running istiod.
pub struct Istiod {
    pub grpc_port: u16,
    pub http_port: u16,
    process: Process,
}

impl Istiod {
    pub async fn start(binaries: &ControlPlaneBinaries, kubeconfig: &Path, dir: &Path) -> Istiod {
        // No telemetry providers: istio.stats is an istio-proxy filter, not an Envoy one.
        std::fs::write(
            dir.join("mesh.yaml"),
            "defaultProviders:\n  metrics: []\nenablePrometheusMerge: false\n",
        )
        .expect("write mesh.yaml");
        let http = HttpClient::default();
        for attempt in 1..=START_ATTEMPTS {
            let (grpc_port, http_port, monitoring_port) = (free_port(), free_port(), free_port());
            let mut command = Command::new(&binaries.istiod);
            command
                .arg("discovery")
                .arg(format!("--kubeconfig={}", kubeconfig.display()))
                .args([
                    &format!("--grpcAddr=127.0.0.1:{grpc_port}"),
                    &format!("--httpAddr=127.0.0.1:{http_port}"),
                    &format!("--monitoringAddr=127.0.0.1:{monitoring_port}"),
                    "--httpsAddr=",
                    "--secureGRPCAddr=",
                    "--ctrlz_port=0",
                    "--ctrlz_address=127.0.0.1",
                    "--domain=cluster.local",
                    "--clusterID=Kubernetes",
                    &format!("--meshConfig={}", dir.join("mesh.yaml").display()),
                    "--log_output_level=default:warn,ads:warn,model:warn",
                ])
                .env("POD_NAMESPACE", "istio-system")
                .env("POD_NAME", "istiod-test")
                // Without this the gateway waits for the cluster of `kubernetes.default`, whose
                // Endpoints are empty here.
                .env("PILOT_FILTER_GATEWAY_CLUSTER_CONFIG", "true")
                // Filters that exist only in istio-proxy, not in upstream Envoy.
                .env("PILOT_ENABLE_ALPN_FILTER", "false")
                .env("PILOT_ENABLE_METADATA_EXCHANGE", "false")
                .env("ENABLE_CA_SERVER", "false")
                .env("INJECTION_WEBHOOK_CONFIG_NAME", "")
                .env("VALIDATION_WEBHOOK_CONFIG_NAME", "")
                .env("KUBECONFIG", kubeconfig);
            let mut process = Process::spawn("istiod", command, dir);
            let ready = format!("http://127.0.0.1:{http_port}/ready");
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let answered =
                    matches!(http.get(&ready, &[]).await, Ok(reply) if reply.status == 200);
                if answered && process.running() {
                    return Istiod {
                        grpc_port,
                        http_port,
                        process,
                    };
                }
                if process.exited_on_taken_port() {
                    eprintln!("istiod: one of its ports was taken (attempt {attempt})");
                    break;
                }
                process.assert_running("starting");
                assert!(
                    Instant::now() < deadline,
                    "istiod was not ready after 90 s:\n{}",
                    process.log_tail(40)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("istiod: {START_ATTEMPTS} sets of ports in a row were taken");
    }

    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// Envoy's worker threads in the gateway (`--concurrency`).
pub const GATEWAY_WORKERS: u64 = 2;

/// What the gateway's Envoy had taken up at one moment ([`IstioGateway::mark`]).
#[derive(Debug, Clone, Default)]
pub struct GatewayMark {
    /// The filter configurations (ECDS) the main thread had, by extension config name.
    pub configs: Vec<(String, serde_json::Value)>,
    /// Per ECDS filter, `config_reload`: configurations in force on every worker.
    pub reloads: std::collections::BTreeMap<String, u64>,
    /// Listener versions added to a worker (`listener_create_success` + `_failure`).
    pub listener_creates: u64,
    /// Listeners added or changed (`listener_added` + `listener_modified`).
    pub listener_changes: u64,
    pub listeners_warming: u64,
}

impl GatewayMark {
    /// Whether what `self` shows has reached every worker, given what was taken up at
    /// `since`: each ECDS filter whose configuration changed since counted a reload
    /// since (Envoy counts one only once every worker has the configuration), and, if a
    /// listener changed since (a WasmPlugin added puts a filter into it), a new listener
    /// version is on every worker and none is warming.
    pub fn in_force_since(&self, since: &GatewayMark) -> bool {
        let filters = self.configs.iter().all(|(name, config)| {
            since.configs.contains(&(name.clone(), config.clone()))
                || self.reloads.get(name).copied().unwrap_or(0)
                    > since.reloads.get(name).copied().unwrap_or(0)
        });
        let listeners = self.listener_changes == since.listener_changes
            || (self.listener_creates >= since.listener_creates + GATEWAY_WORKERS
                && self.listeners_warming == 0);
        filters && listeners
    }
}

/// The ingress gateway: Envoy with istiod as its only source of configuration.
pub struct IstioGateway {
    /// The port of the Gateway object's HTTP server, where Envoy listens.
    pub port: u16,
    /// Envoy's admin port (bound on port 0: Envoy picks, `--admin-address-path` says).
    pub admin_port: u16,
    process: Process,
    http: HttpClient,
}

impl IstioGateway {
    /// Starts Envoy; it listens on `port` once istiod has sent it a Gateway for that port.
    /// Returns once its admin API answers.
    /// `module_port`: where the cluster `_` leads (the controller's Service stand-in).
    pub async fn start(istiod: &Istiod, port: u16, module_port: u16, dir: &Path) -> IstioGateway {
        let bootstrap = serde_json::json!({
            "node": {
                "id": "router~127.0.0.1~istio-ingressgateway-0.istio-system~istio-system.svc.cluster.local",
                "cluster": "istio-ingressgateway.istio-system",
                "metadata": {
                    "NAMESPACE": "istio-system",
                    "NAME": "istio-ingressgateway-0",
                    "CLUSTER_ID": "Kubernetes",
                    "ISTIO_VERSION": PROXY_ISTIO_VERSION,
                    "WORKLOAD_NAME": "istio-ingressgateway",
                    "LABELS": {"istio": "ingressgateway"},
                }
            },
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "dynamic_resources": {
                "ads_config": {
                    "api_type": "GRPC",
                    "transport_api_version": "V3",
                    "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]
                },
                "cds_config": {"ads": {}, "resource_api_version": "V3"},
                "lds_config": {"ads": {}, "resource_api_version": "V3"}
            },
            "static_resources": {"clusters": [{
                "name": "xds-grpc",
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}}
                    }
                },
                "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [{"endpoint": {
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": istiod.grpc_port}}
                }}]}]}
            }, {
                // istiod's cluster for remote (non-file://) modules: istio-agent's fetch.
                "name": "_",
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "_", "endpoints": [{"lb_endpoints": [{"endpoint": {
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": module_port}}
                }}]}]}
            }]}
        });
        let path = dir.join("gateway-bootstrap.json");
        std::fs::write(&path, bootstrap.to_string()).expect("write bootstrap");
        let envoy = envoy_binary().unwrap_or_else(|e| panic!("{e}"));
        let admin_path = dir.join("gateway-admin-address");
        // A restarted gateway must not read its predecessor's address.
        let _ = std::fs::remove_file(&admin_path);
        let mut command = Command::new(envoy);
        command.args([
            "-c",
            &path.display().to_string(),
            "--concurrency",
            &GATEWAY_WORKERS.to_string(),
            // No shared memory for hot restart, so no base id to collide with another Envoy.
            "--disable-hot-restart",
            // As istio-agent starts a gateway's Envoy: a replaced listener tells its clients
            // to reconnect at once, and closes what is left after 45 s.
            "--drain-strategy",
            "immediate",
            "--drain-time-s",
            "45",
            "--admin-address-path",
            &admin_path.display().to_string(),
            "--log-level",
            "warning",
        ]);
        let mut process = Process::spawn("gateway-envoy", command, dir);
        let deadline = Instant::now() + Duration::from_secs(120);
        let admin_port = loop {
            let text = std::fs::read_to_string(&admin_path).unwrap_or_default();
            if let Ok(address) = text.trim().parse::<std::net::SocketAddr>() {
                break address.port();
            }
            process.assert_running("starting");
            assert!(
                Instant::now() < deadline,
                "the gateway's Envoy wrote no admin address in 120 s:\n{}",
                process.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        IstioGateway {
            port,
            admin_port,
            process,
            http: HttpClient::default(),
        }
    }

    /// What this Envoy has taken up so far, to tell later what changed since.
    pub async fn mark(&self) -> GatewayMark {
        let stats = Stats::parse(
            &self
                .admin("/stats?filter=extension_config_discovery|listener_manager")
                .await,
        );
        let reloads = stats
            .0
            .iter()
            .filter_map(|(name, value)| {
                let filter = name
                    .strip_prefix("extension_config_discovery.http_filter.")?
                    .strip_suffix(".config_reload")?;
                Some((filter.to_string(), *value))
            })
            .collect();
        GatewayMark {
            configs: self.filter_configs().await,
            reloads,
            listener_creates: stats.get("listener_manager.listener_create_success")
                + stats.get("listener_manager.listener_create_failure"),
            listener_changes: stats.get("listener_manager.listener_added")
                + stats.get("listener_manager.listener_modified"),
            listeners_warming: stats.get("listener_manager.total_listeners_warming"),
        }
    }

    /// Whether Envoy has the Gateway's listener on `port`, bound.
    pub async fn listening_on(&self, port: u16) -> bool {
        let text = self.admin("/listeners?format=json").await;
        let Ok(listeners) = serde_json::from_str::<serde_json::Value>(&text) else {
            return false;
        };
        listeners["listener_statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|l| {
                l["local_address"]["socket_address"]["port_value"].as_u64() == Some(u64::from(port))
            })
    }

    /// Whether Envoy refused the Gateway's listener on `port` because the port is taken.
    pub fn port_taken(&self, port: u16) -> bool {
        self.log()
            .contains(&format!(":{port}': Address already in use"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Envoy's admin endpoint `path` as text.
    pub async fn admin(&self, path: &str) -> String {
        let url = format!("http://127.0.0.1:{}{path}", self.admin_port);
        match self.http.get(&url, &[]).await {
            Ok(reply) => reply.text(),
            Err(_) => String::new(),
        }
    }

    pub async fn stats(&self) -> Stats {
        Stats::parse(&self.admin("/stats?filter=modelsplit").await)
    }

    /// The filter configurations (ECDS) Envoy runs, as istiod sent them, by extension
    /// config name (`<namespace>.<WasmPlugin name>`): each WasmPlugin's pluginConfig.
    pub async fn filter_configs(&self) -> Vec<(String, serde_json::Value)> {
        let dump = self.admin("/config_dump?resource=ecds_filters").await;
        let Ok(dump) = serde_json::from_str::<serde_json::Value>(&dump) else {
            return Vec::new();
        };
        let Some(configs) = dump.get("configs").and_then(|c| c.as_array()) else {
            return Vec::new();
        };
        configs
            .iter()
            .filter_map(|c| {
                let filter = c.get("ecds_filter")?;
                let name = filter.get("name")?.as_str()?.to_string();
                let value = filter.pointer("/typed_config/config/configuration/value")?;
                Some((name, serde_json::from_str(value.as_str()?).ok()?))
            })
            .collect()
    }

    /// Names of the HTTP filters of the gateway's active listeners, in chain order.
    pub async fn active_http_filters(&self) -> Vec<String> {
        let dump = self.admin("/config_dump?resource=dynamic_listeners").await;
        let Ok(dump) = serde_json::from_str::<serde_json::Value>(&dump) else {
            return Vec::new();
        };
        let mut names = Vec::new();
        for listener in dump["configs"].as_array().into_iter().flatten() {
            let chains = listener.pointer("/active_state/listener/filter_chains");
            for chain in chains.and_then(|c| c.as_array()).into_iter().flatten() {
                for filter in chain["filters"].as_array().into_iter().flatten() {
                    let http = filter.pointer("/typed_config/http_filters");
                    for http_filter in http.and_then(|h| h.as_array()).into_iter().flatten() {
                        if let Some(name) = http_filter["name"].as_str() {
                            names.push(name.to_string());
                        }
                    }
                }
            }
        }
        names
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Stops this Envoy (SIGKILL), as a gateway pod that is deleted.
    pub fn stop(&mut self) {
        self.process.kill();
    }

    pub fn assert_running(&mut self, while_doing: &str) {
        self.process.assert_running(while_doing)
    }

    pub fn dir_of(&self) -> PathBuf {
        self.process
            .log_path()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }
}
