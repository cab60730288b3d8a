//! The local gateway's Envoy files, as a pure function of the filter configuration,
//! the exposed InferenceServices and the per-namespace ModelMesh upstreams: what the
//! `WasmPlugin` and `VirtualService`s say in a cluster, as Envoy xDS files.
//!
//! Layout (one directory, watched by Envoy; every file replaced atomically):
//! - `bootstrap.json`: node, admin, the listener (HTTP/1.1 + h2c), and where to find
//!   the rest. The only file with ports; Envoy reads it once at start.
//! - `ecds.json`: the modelsplit wasm filter (ECDS) with its configuration JSON.
//! - `rds.json`: the routes a `VirtualService` per namespace expresses in a cluster.
//! - `cds.json`: one REST and one gRPC cluster per namespace (ModelMesh 8008 / 8033).
//!
//! A first state is written in the order CDS, RDS, ECDS so that a member's route and
//! cluster exist before the filter may rewrite requests to it; later changes go
//! through [`super::transition`].

use modelsplit_core::encode::envoy_routes;
use modelsplit_core::routing::{self, ModelMeshPort};
use modelsplit_filter::config::FilterConfig;
use modelsplit_filter::plan::{ENVOY_STATS_PREFIX, LATENCY_HISTOGRAM_PREFIX};
use serde_json::{json, Value};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

pub const BOOTSTRAP_FILE: &str = "bootstrap.json";
pub const ECDS_FILE: &str = "ecds.json";
pub const RDS_FILE: &str = "rds.json";
pub const CDS_FILE: &str = "cds.json";
/// The HTTP filter's name, also the ECDS resource name (stats: `extension_config_discovery.http_filter.modelsplit.*`).
pub const FILTER_NAME: &str = "modelsplit";
pub use modelsplit_core::encode::envoy_routes::ROUTE_CONFIG_NAME;
/// The gateway listener's name and HTTP stat prefix.
pub const LISTENER_NAME: &str = "gateway";

pub use modelsplit_core::routing::ExposedIsvc;

/// Where one namespace's ModelMesh (or its stand-in) listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub namespace: String,
    /// Host name or IP address of the REST proxy.
    pub rest_host: String,
    pub rest_port: u16,
    /// Host name or IP address of the gRPC endpoint.
    pub grpc_host: String,
    pub grpc_port: u16,
}

impl Upstream {
    /// An upstream at two socket addresses (a stand-in on this machine).
    pub fn at(namespace: &str, rest: SocketAddr, grpc: SocketAddr) -> Self {
        Upstream {
            namespace: namespace.to_string(),
            rest_host: rest.ip().to_string(),
            rest_port: rest.port(),
            grpc_host: grpc.ip().to_string(),
            grpc_port: grpc.port(),
        }
    }

    /// Parses `REST_ADDR,GRPC_ADDR` (each `host:port`, host a name or an IP address)
    /// as the ModelMesh of `namespace`.
    pub fn parse(namespace: &str, addresses: &str) -> Result<Self, UpstreamError> {
        let bad = || UpstreamError {
            text: addresses.to_string(),
        };
        let (rest, grpc) = addresses.split_once(',').ok_or_else(bad)?;
        let (rest_host, rest_port) = host_port(rest).ok_or_else(bad)?;
        let (grpc_host, grpc_port) = host_port(grpc).ok_or_else(bad)?;
        Ok(Upstream {
            namespace: namespace.to_string(),
            rest_host,
            rest_port,
            grpc_host,
            grpc_port,
        })
    }

    /// The same addresses for another namespace.
    pub fn for_namespace(&self, namespace: &str) -> Self {
        Upstream {
            namespace: namespace.to_string(),
            ..self.clone()
        }
    }
}

/// An upstream that is not `host:port,host:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not REST_ADDR,GRPC_ADDR (e.g. 127.0.0.1:8008,127.0.0.1:8033 or standin:8008,standin:8033)")]
pub struct UpstreamError {
    pub text: String,
}

/// `host:port`, `[v6]:port` or `v4:port`; the host without brackets.
fn host_port(text: &str) -> Option<(String, u16)> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some((addr.ip().to_string(), addr.port()));
    }
    let (host, port) = text.rsplit_once(':')?;
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    valid_host.then(|| (host.to_string(), port))
}

/// What the bootstrap needs: where to listen and where the other files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapSettings {
    /// The gateway listener (port 0: any free port, read back from the admin API).
    pub listener: SocketAddr,
    /// The admin interface (loopback unless another container must reach it).
    pub admin: SocketAddr,
    /// The watched directory holding `ecds.json`, `rds.json` and `cds.json`.
    pub config_dir: PathBuf,
}

impl BootstrapSettings {
    /// The layout inside a container (`envoy/bootstrap.json`, docker-compose):
    /// gateway on 8080 and admin on 9901, both on every interface of the container so
    /// that the host (published ports) and `modelsplit local` in the next container
    /// (confirming each change) reach them; files in `/etc/modelsplit/gateway`.
    pub fn container() -> Self {
        BootstrapSettings {
            listener: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin: SocketAddr::from(([0, 0, 0, 0], 9901)),
            config_dir: PathBuf::from("/etc/modelsplit/gateway"),
        }
    }
}

/// The three files Envoy watches, one per kind of xDS resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WatchedFile {
    Ecds,
    Rds,
    Cds,
}

impl WatchedFile {
    /// The file's name in the config directory.
    pub const fn file_name(self) -> &'static str {
        match self {
            WatchedFile::Ecds => ECDS_FILE,
            WatchedFile::Rds => RDS_FILE,
            WatchedFile::Cds => CDS_FILE,
        }
    }

    /// What the file configures, in a word: `filter`, `routes`, `clusters`.
    pub const fn contents(self) -> &'static str {
        match self {
            WatchedFile::Ecds => "filter",
            WatchedFile::Rds => "routes",
            WatchedFile::Cds => "clusters",
        }
    }
}

impl fmt::Display for WatchedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

/// The three files Envoy watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicFiles {
    pub ecds: String,
    pub rds: String,
    pub cds: String,
}

/// The Envoy cluster of a namespace's ModelMesh on `port`, named as Istio names it.
pub fn cluster_name(namespace: &str, port: ModelMeshPort) -> String {
    envoy_routes::cluster_name(namespace, port)
}

/// Upper bounds (ms) of the latency histograms' buckets: member routes' and the filter's.
pub const LATENCY_BUCKETS_MS: [f64; 19] = [
    1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 250.0, 500.0,
    1000.0, 2500.0, 10000.0, 60000.0,
];

/// The bootstrap: static listener and admin, everything else from the watched directory.
pub fn render_bootstrap(settings: &BootstrapSettings) -> String {
    let source = |file: &str| {
        json!({
            "resource_api_version": "V3",
            "path_config_source": {
                "path": settings.config_dir.join(file),
                "watched_directory": {"path": settings.config_dir},
            },
        })
    };
    let hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": LISTENER_NAME,
        // HTTP/1.1 for REST and h2c (prior knowledge) for gRPC on the same port.
        "codec_type": "AUTO",
        "rds": {"route_config_name": ROUTE_CONFIG_NAME, "config_source": source(RDS_FILE)},
        "http_filters": [
            {
                "name": FILTER_NAME,
                "config_discovery": {
                    "config_source": source(ECDS_FILE),
                    "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"],
                },
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    });
    let bootstrap = json!({
        "node": {"id": "modelsplit-local-gateway", "cluster": "modelsplit-local"},
        "admin": {"address": socket_address(&settings.admin.ip().to_string(), settings.admin.port())},
        "dynamic_resources": {"cds_config": source(CDS_FILE)},
        // Each member route's latency histogram (`modelsplit status` reads p50/p99 off it)
        // and the filter's latency histograms of observed groups: finer buckets than
        // Envoy's default where model calls fall, and histograms merged for the admin API
        // every second rather than every five.
        "stats_config": {"histogram_bucket_settings": [
            {"match": {"suffix": "upstream_rq_time"}, "buckets": LATENCY_BUCKETS_MS},
            {
                "match": {"prefix": format!("{ENVOY_STATS_PREFIX}{LATENCY_HISTOGRAM_PREFIX}")},
                "buckets": LATENCY_BUCKETS_MS,
            },
        ]},
        "stats_flush_interval": "1s",
        "static_resources": {
            "listeners": [{
                "name": LISTENER_NAME,
                "address": socket_address(&settings.listener.ip().to_string(), settings.listener.port()),
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm,
                }]}],
            }],
        },
    });
    pretty(&bootstrap)
}

/// The ECDS file: the wasm filter with `filter_config_json` as its configuration.
///
/// Takes the JSON text rather than a [`FilterConfig`] so that callers (tests) can
/// also push configurations the filter must reject.
pub fn render_ecds(filter_config_json: &str, wasm: &Path) -> String {
    let wasm_filter = json!({
        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name": FILTER_NAME,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": FILTER_NAME,
                // Envoy >= 1.35: let the filter hold a KServe v2 gRPC call's headers while
                // it reads the model name in the message (without it, Envoy turns the
                // filter's StopIteration into StopAll and the body never reaches it).
                "allow_on_headers_stop_iteration": true,
                "vm_config": {
                    "vm_id": FILTER_NAME,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": filter_config_json,
                },
            },
        },
    });
    pretty(&json!({"resources": [wasm_filter]}))
}

/// The RDS file: the routing model of `isvcs` (what their VirtualServices say in a cluster).
pub fn render_rds(isvcs: &[ExposedIsvc], rest_prefix: &str) -> String {
    rds_file(route_entries(isvcs, rest_prefix))
}

/// The Envoy routes of `isvcs`, in VirtualService order.
pub(crate) fn route_entries(isvcs: &[ExposedIsvc], rest_prefix: &str) -> Vec<Value> {
    envoy_routes::envoy_routes(&routing::routes(isvcs, rest_prefix))
}

pub(crate) fn rds_file(routes: Vec<Value>) -> String {
    pretty(&envoy_routes::route_configuration(routes))
}

/// The routes of an RDS file written by `rds_file`, for tests to inspect.
#[cfg(test)]
pub(crate) fn routes_of(rds: &str) -> Vec<Value> {
    let parsed: Value = serde_json::from_str(rds).unwrap();
    parsed["resources"][0]["virtual_hosts"][0]["routes"]
        .as_array()
        .unwrap()
        .clone()
}

/// The CDS file: one REST (HTTP/1.1) and one gRPC (HTTP/2) cluster per namespace.
pub fn render_cds(upstreams: &[Upstream]) -> String {
    let clusters: Vec<Value> = upstreams
        .iter()
        .flat_map(|u| {
            let ns = &u.namespace;
            [
                cluster(
                    &cluster_name(ns, ModelMeshPort::Rest),
                    &u.rest_host,
                    u.rest_port,
                    false,
                ),
                cluster(
                    &cluster_name(ns, ModelMeshPort::Grpc),
                    &u.grpc_host,
                    u.grpc_port,
                    true,
                ),
            ]
        })
        .collect();
    pretty(&json!({"resources": clusters}))
}

/// All three watched files for one state of the gateway.
pub fn render_dynamic(
    config: &FilterConfig,
    isvcs: &[ExposedIsvc],
    upstreams: &[Upstream],
    wasm: &Path,
) -> DynamicFiles {
    DynamicFiles {
        ecds: render_ecds(&config.to_json(), wasm),
        rds: render_rds(isvcs, &config.rest_prefix),
        cds: render_cds(upstreams),
    }
}

/// Everything the watched files are rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayState {
    pub config: FilterConfig,
    pub isvcs: Vec<ExposedIsvc>,
    pub upstreams: Vec<Upstream>,
}

impl GatewayState {
    /// The watched files of this state.
    pub fn render(&self, wasm: &Path) -> DynamicFiles {
        render_dynamic(&self.config, &self.isvcs, &self.upstreams, wasm)
    }
}

impl DynamicFiles {
    pub(crate) fn get(&self, file: WatchedFile) -> &str {
        match file {
            WatchedFile::Ecds => &self.ecds,
            WatchedFile::Rds => &self.rds,
            WatchedFile::Cds => &self.cds,
        }
    }

    pub(crate) fn set(&mut self, file: WatchedFile, contents: String) {
        match file {
            WatchedFile::Ecds => self.ecds = contents,
            WatchedFile::Rds => self.rds = contents,
            WatchedFile::Cds => self.cds = contents,
        }
    }

    /// Writes the files into `dir` (CDS, RDS, then ECDS), each atomically.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        for file in [WatchedFile::Cds, WatchedFile::Rds, WatchedFile::Ecds] {
            write_atomically(dir, file.file_name(), self.get(file))?;
        }
        Ok(())
    }
}

/// The filter configuration in `dir/ecds.json`, if that file exists and carries a
/// valid one: what a restarted `modelsplit local` keeps as the last good split.
pub fn read_filter_config(dir: &Path) -> Option<FilterConfig> {
    let text = std::fs::read_to_string(dir.join(ECDS_FILE)).ok()?;
    let ecds: Value = serde_json::from_str(&text).ok()?;
    let carried =
        ecds["resources"][0]["typed_config"]["config"]["configuration"]["value"].as_str()?;
    FilterConfig::from_json(carried.as_bytes()).ok()
}

/// Writes `dir/name` by writing a hidden temporary file and renaming it over the
/// target: Envoy reacts to the move and never sees a half-written file.
pub fn write_atomically(dir: &Path, name: &str, contents: &str) -> std::io::Result<()> {
    let temporary = dir.join(format!(".{name}.tmp"));
    std::fs::write(&temporary, contents)?;
    std::fs::rename(&temporary, dir.join(name))
}

fn cluster(name: &str, host: &str, port: u16, http2: bool) -> Value {
    // IP addresses need no resolver; host names (docker-compose services) use DNS.
    let discovery = if host.parse::<IpAddr>().is_ok() {
        "STATIC"
    } else {
        "STRICT_DNS"
    };
    let mut cluster = json!({
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": name,
        "type": discovery,
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(host, port)}}]}],
        },
    });
    if http2 {
        cluster["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            },
        });
    }
    cluster
}

fn socket_address(host: &str, port: u16) -> Value {
    json!({"socket_address": {"address": host, "port_value": port}})
}

fn pretty(value: &Value) -> String {
    // Serialising a `Value` cannot fail.
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelsplit_filter::config::GroupConfig;

    #[test]
    fn routes_mirror_the_virtual_service() {
        let routes = routes_of(&render_rds(
            &[ExposedIsvc::new("apps", "m-one")],
            "/modelmesh",
        ));
        assert_eq!(routes.len(), 3);
        assert_eq!(
            routes[0]["match"]["headers"][2]["string_match"]["exact"],
            "m-one"
        );
        assert_eq!(
            routes[0]["route"]["cluster"],
            "outbound|8033||modelmesh-serving.apps.svc.cluster.local"
        );
        assert_eq!(
            routes[1]["match"]["path"],
            "/modelmesh/apps/v2/models/m-one"
        );
        assert_eq!(routes[1]["route"]["prefix_rewrite"], "/v2/models/m-one");
        assert_eq!(
            routes[2]["match"]["prefix"],
            "/modelmesh/apps/v2/models/m-one/"
        );
        assert_eq!(routes[2]["route"]["prefix_rewrite"], "/v2/models/m-one/");
    }

    #[test]
    fn an_isvc_without_its_grpc_name_gets_rest_routes_only() {
        let mut isvc = ExposedIsvc::new("apps", "m");
        isvc.grpc = false;
        let routes = routes_of(&render_rds(&[isvc], "/modelmesh"));
        assert_eq!(routes.len(), 2);
        assert!(routes.iter().all(|r| r["match"].get("headers").is_none()));
    }

    #[test]
    fn ecds_carries_the_filter_config_as_a_string() {
        let config =
            FilterConfig::with_groups(vec![GroupConfig::weighted("apps", "g", &[("a", 1)])]);
        let files = render_dynamic(&config, &[], &[], Path::new("/x/filter.wasm"));
        let ecds: Value = serde_json::from_str(&files.ecds).unwrap();
        let wasm = &ecds["resources"][0]["typed_config"]["config"];
        assert_eq!(wasm["vm_config"]["runtime"], "envoy.wasm.runtime.v8");
        assert_eq!(
            wasm["vm_config"]["code"]["local"]["filename"],
            "/x/filter.wasm"
        );
        let carried = wasm["configuration"]["value"].as_str().unwrap();
        assert_eq!(FilterConfig::from_json(carried.as_bytes()).unwrap(), config);
    }

    #[test]
    fn clusters_use_dns_only_for_host_names() {
        let upstreams = [
            Upstream::at(
                "a",
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
            ),
            Upstream {
                namespace: "b".into(),
                rest_host: "standin-b".into(),
                rest_port: 8008,
                grpc_host: "standin-b".into(),
                grpc_port: 8033,
            },
        ];
        let cds: Value = serde_json::from_str(&render_cds(&upstreams)).unwrap();
        let clusters = cds["resources"].as_array().unwrap();
        assert_eq!(clusters.len(), 4);
        assert_eq!(clusters[0]["type"], "STATIC");
        assert!(clusters[0]
            .get("typed_extension_protocol_options")
            .is_none());
        assert!(clusters[1]["typed_extension_protocol_options"].is_object());
        assert_eq!(clusters[2]["type"], "STRICT_DNS");
        assert_eq!(
            clusters[3]["name"],
            "outbound|8033||modelmesh-serving.b.svc.cluster.local"
        );
    }

    /// `envoy/bootstrap.json` is this renderer's output for the container layout;
    /// `MODELSPLIT_BLESS=1 cargo test -p modelsplit-controller --lib local::` rewrites it.
    #[test]
    fn the_checked_in_bootstrap_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../envoy/bootstrap.json");
        let rendered = render_bootstrap(&BootstrapSettings::container());
        if std::env::var_os("MODELSPLIT_BLESS").is_some() {
            std::fs::write(&path, &rendered).unwrap();
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == rendered,
            "{} is out of date: run `MODELSPLIT_BLESS=1 cargo test -p modelsplit-controller --lib local::`",
            path.display()
        );
    }

    #[test]
    fn upstreams_parse_names_and_addresses() {
        let up = Upstream::parse("apps", "standin-apps:8008, 127.0.0.1:18033").unwrap();
        assert_eq!(
            (
                up.rest_host.as_str(),
                up.rest_port,
                up.grpc_host.as_str(),
                up.grpc_port
            ),
            ("standin-apps", 8008, "127.0.0.1", 18033)
        );
        let v6 = Upstream::parse("apps", "[::1]:1,[::1]:2").unwrap();
        assert_eq!(v6.rest_host, "::1");
        for bad in ["127.0.0.1:8008", "a:1,b", "a:0,b:1", "a b:1,c:2", ":1,c:2"] {
            assert!(Upstream::parse("apps", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_filter_config_is_read_back_from_the_ecds_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_filter_config(dir.path()), None);
        let config = FilterConfig::with_groups(vec![GroupConfig {
            grpc: false,
            sticky_header: Some("x-user".into()),
            ..GroupConfig::weighted("apps", "g", &[("a", 7)])
        }]);
        write_atomically(
            dir.path(),
            ECDS_FILE,
            &render_ecds(&config.to_json(), Path::new("/f.wasm")),
        )
        .unwrap();
        assert_eq!(read_filter_config(dir.path()), Some(config));
        write_atomically(dir.path(), ECDS_FILE, "{not json").unwrap();
        assert_eq!(read_filter_config(dir.path()), None);
    }

    #[test]
    fn writes_replace_files_atomically() {
        let dir = tempfile::tempdir().unwrap();
        write_atomically(dir.path(), "x.json", "1").unwrap();
        write_atomically(dir.path(), "x.json", "2").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("x.json")).unwrap(),
            "2"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["x.json"], "no temporary file left behind");
    }
}
