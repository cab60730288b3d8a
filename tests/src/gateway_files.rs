//! The local gateway's Envoy files, as a pure function of the filter configuration,
//! the exposed InferenceServices and the per-namespace ModelMesh upstreams.
//!
//! Layout (one directory, watched by Envoy; every file replaced atomically):
//! - `bootstrap.json`: node, admin, the listener (HTTP/1.1 + h2c), and where to find
//!   the rest. The only file with ports; Envoy reads it once at start.
//! - `ecds.json`: the modelsplit wasm filter (ECDS) with its configuration JSON.
//! - `rds.json`: the routes a `VirtualService` per namespace expresses in a cluster.
//! - `cds.json`: one REST and one gRPC cluster per namespace (ModelMesh 8008 / 8033).
//!
//! Written in the order CDS, RDS, ECDS so that a member's route and cluster exist
//! before the filter may rewrite requests to it.

use modelsplit_filter::config::FilterConfig;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

pub const BOOTSTRAP_FILE: &str = "bootstrap.json";
pub const ECDS_FILE: &str = "ecds.json";
pub const RDS_FILE: &str = "rds.json";
pub const CDS_FILE: &str = "cds.json";
/// The HTTP filter's name, also the ECDS resource name (stats: `extension_config_discovery.http_filter.modelsplit.*`).
pub const FILTER_NAME: &str = "modelsplit";
/// The route configuration's name (one per gateway).
pub const ROUTE_CONFIG_NAME: &str = "modelsplit-gateway";
/// The gateway listener's name and HTTP stat prefix.
pub const LISTENER_NAME: &str = "gateway";
/// ModelMesh's REST proxy and gRPC ports, as in `modelmesh-serving.<ns>.svc`.
pub const MODELMESH_REST_PORT: u16 = 8008;
pub const MODELMESH_GRPC_PORT: u16 = 8033;

/// An InferenceService the gateway routes to (what a VirtualService route names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExposedIsvc {
    pub namespace: String,
    pub name: String,
    /// Whether the isvc owns its gRPC name on this gateway (names are global for gRPC).
    pub grpc: bool,
}

impl ExposedIsvc {
    pub fn new(namespace: &str, name: &str) -> Self {
        ExposedIsvc {
            namespace: namespace.to_string(),
            name: name.to_string(),
            grpc: true,
        }
    }
}

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
}

/// What the bootstrap needs: where to listen and where the other files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapSettings {
    /// The gateway listener (port 0: any free port, read back from the admin API).
    pub listener: SocketAddr,
    /// The admin interface; keep it on loopback.
    pub admin: SocketAddr,
    /// The watched directory holding `ecds.json`, `rds.json` and `cds.json`.
    pub config_dir: PathBuf,
}

impl BootstrapSettings {
    /// The layout inside a container (`envoy/bootstrap.json`, docker-compose):
    /// gateway on 8080 for the host to reach, admin on loopback 9901, files in
    /// `/etc/modelsplit/gateway`.
    pub fn container() -> Self {
        BootstrapSettings {
            listener: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9901)),
            config_dir: PathBuf::from("/etc/modelsplit/gateway"),
        }
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
pub fn cluster_name(namespace: &str, port: u16) -> String {
    format!("outbound|{port}||modelmesh-serving.{namespace}.svc.cluster.local")
}

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

/// The RDS file: per exposed isvc the routes of DESIGN.md section 4's VirtualService.
pub fn render_rds(isvcs: &[ExposedIsvc], rest_prefix: &str) -> String {
    rds_file(route_entries(isvcs, rest_prefix))
}

/// The routes of `isvcs`, in VirtualService order.
fn route_entries(isvcs: &[ExposedIsvc], rest_prefix: &str) -> Vec<Value> {
    let mut routes = Vec::new();
    for isvc in isvcs {
        let (ns, name) = (&isvc.namespace, &isvc.name);
        let id = format!("{ns}.{name}");
        if isvc.grpc {
            routes.push(json!({
                "name": format!("{id}.grpc"),
                "match": {
                    "prefix": "/",
                    "headers": [
                        {"name": ":method", "string_match": {"exact": "POST"}},
                        {"name": "content-type", "string_match": {"prefix": "application/grpc"}},
                        {"name": "mm-vmodel-id", "string_match": {"exact": name}},
                    ],
                },
                "route": {"cluster": cluster_name(ns, MODELMESH_GRPC_PORT)},
            }));
        }
        let rest_cluster = cluster_name(ns, MODELMESH_REST_PORT);
        let external = format!("{rest_prefix}/{ns}/v2/models/{name}");
        let internal = format!("/v2/models/{name}");
        // Exact and prefix-with-slash, as Istio's rewrite replaces the matched prefix;
        // a bare prefix would also catch `<name>-v2`.
        routes.push(json!({
            "name": format!("{id}.rest"),
            "match": {"path": external},
            "route": {"cluster": rest_cluster, "prefix_rewrite": internal},
        }));
        routes.push(json!({
            "name": format!("{id}.rest-subpaths"),
            "match": {"prefix": format!("{external}/")},
            "route": {"cluster": rest_cluster, "prefix_rewrite": format!("{internal}/")},
        }));
    }
    routes
}

fn rds_file(routes: Vec<Value>) -> String {
    let config = json!({
        "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "name": ROUTE_CONFIG_NAME,
        "virtual_hosts": [{"name": "gateway", "domains": ["*"], "routes": routes}],
    });
    pretty(&json!({"resources": [config]}))
}

/// The CDS file: one REST (HTTP/1.1) and one gRPC (HTTP/2) cluster per namespace.
pub fn render_cds(upstreams: &[Upstream]) -> String {
    let clusters: Vec<Value> = upstreams
        .iter()
        .flat_map(|u| {
            let ns = &u.namespace;
            [
                cluster(
                    &cluster_name(ns, MODELMESH_REST_PORT),
                    &u.rest_host,
                    u.rest_port,
                    false,
                ),
                cluster(
                    &cluster_name(ns, MODELMESH_GRPC_PORT),
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

/// One batch of files to write together; the next batch must wait until Envoy has
/// applied this one.
pub type Step = Vec<(&'static str, String)>;

/// The writes that move Envoy from `old` to `new` without a request failing in
/// between: first routes and clusters for both states, then the filter, then only
/// the new routes and clusters. So a member the filter may pick always has its route
/// and cluster, whether it is being added or removed. Files already in place are
/// not rewritten; steps that would change nothing are dropped.
pub fn transition_steps(old: Option<&GatewayState>, new: &GatewayState, wasm: &Path) -> Vec<Step> {
    let target = new.render(wasm);
    let Some(old) = old else {
        return vec![vec![
            (CDS_FILE, target.cds),
            (RDS_FILE, target.rds),
            (ECDS_FILE, target.ecds),
        ]];
    };
    let current = old.render(wasm);

    // Routes: the new ones first (they win where both match), then old ones still needed.
    let mut routes = route_entries(&new.isvcs, &new.config.rest_prefix);
    for route in route_entries(&old.isvcs, &old.config.rest_prefix) {
        if !routes.contains(&route) {
            routes.push(route);
        }
    }
    // Clusters: a namespace's new address wins; namespaces only in `old` stay for now.
    let mut upstreams = new.upstreams.clone();
    upstreams.extend(
        old.upstreams
            .iter()
            .filter(|o| !new.upstreams.iter().any(|n| n.namespace == o.namespace))
            .cloned(),
    );
    let both = DynamicFiles {
        ecds: current.ecds.clone(),
        rds: rds_file(routes),
        cds: render_cds(&upstreams),
    };

    let mut steps = Vec::new();
    let mut on_disk = current;
    for (next, files) in [
        (&both, [CDS_FILE, RDS_FILE].as_slice()),
        (&target, [ECDS_FILE].as_slice()),
        (&target, [RDS_FILE, CDS_FILE].as_slice()),
    ] {
        let step: Step = files
            .iter()
            .filter(|file| on_disk.get(file) != next.get(file))
            .map(|file| (*file, next.get(file).to_string()))
            .collect();
        for (file, contents) in &step {
            on_disk.set(file, contents.clone());
        }
        if !step.is_empty() {
            steps.push(step);
        }
    }
    steps
}

impl DynamicFiles {
    fn get(&self, file: &str) -> &str {
        match file {
            ECDS_FILE => &self.ecds,
            RDS_FILE => &self.rds,
            _ => &self.cds,
        }
    }

    fn set(&mut self, file: &str, contents: String) {
        match file {
            ECDS_FILE => self.ecds = contents,
            RDS_FILE => self.rds = contents,
            _ => self.cds = contents,
        }
    }

    /// Writes the files into `dir` (CDS, RDS, then ECDS), each atomically.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        write_atomically(dir, CDS_FILE, &self.cds)?;
        write_atomically(dir, RDS_FILE, &self.rds)?;
        write_atomically(dir, ECDS_FILE, &self.ecds)
    }
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
    use modelsplit_filter::config::{GroupConfig, MemberConfig};

    fn routes_of(rds: &str) -> Vec<Value> {
        let parsed: Value = serde_json::from_str(rds).unwrap();
        parsed["resources"][0]["virtual_hosts"][0]["routes"]
            .as_array()
            .unwrap()
            .clone()
    }

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
        let config = FilterConfig::with_groups(vec![GroupConfig {
            namespace: "apps".into(),
            name: "g".into(),
            members: vec![MemberConfig {
                name: "a".into(),
                weight: 1,
            }],
            grpc: true,
            sticky_header: None,
        }]);
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

    fn state(members: &[(&str, u32)], namespaces: &[&str]) -> GatewayState {
        let names: Vec<&str> = members.iter().map(|(m, _)| *m).collect();
        GatewayState {
            config: FilterConfig::with_groups(vec![GroupConfig {
                namespace: "a".into(),
                name: "g".into(),
                members: members
                    .iter()
                    .map(|(n, w)| MemberConfig {
                        name: n.to_string(),
                        weight: *w,
                    })
                    .collect(),
                grpc: true,
                sticky_header: None,
            }]),
            isvcs: names.iter().map(|n| ExposedIsvc::new("a", n)).collect(),
            upstreams: namespaces
                .iter()
                .map(|ns| {
                    Upstream::at(
                        ns,
                        "127.0.0.1:1".parse().unwrap(),
                        "127.0.0.1:2".parse().unwrap(),
                    )
                })
                .collect(),
        }
    }

    fn rest_paths(rds: &str) -> Vec<String> {
        routes_of(rds)
            .iter()
            .filter_map(|r| r["match"]["path"].as_str().map(str::to_string))
            .collect()
    }

    #[test]
    fn the_first_state_is_written_in_one_step() {
        let wasm = Path::new("/f.wasm");
        let steps = transition_steps(None, &state(&[("x", 1)], &["a"]), wasm);
        assert_eq!(steps.len(), 1);
        let files: Vec<_> = steps[0].iter().map(|(f, _)| *f).collect();
        assert_eq!(files, [CDS_FILE, RDS_FILE, ECDS_FILE]);
    }

    #[test]
    fn a_removed_member_keeps_its_route_until_the_filter_stopped_choosing_it() {
        let wasm = Path::new("/f.wasm");
        let old = state(&[("x", 50), ("y", 50)], &["a", "b"]);
        let new = state(&[("x", 100)], &["a"]);
        let steps = transition_steps(Some(&old), &new, wasm);
        assert_eq!(steps.len(), 2, "{steps:#?}");
        // Step 1 would add nothing (the union equals the old files), so the filter goes first.
        assert_eq!(
            steps[0].iter().map(|(f, _)| *f).collect::<Vec<_>>(),
            [ECDS_FILE]
        );
        let last: Vec<_> = steps[1].iter().map(|(f, _)| *f).collect();
        assert_eq!(last, [RDS_FILE, CDS_FILE]);
        assert_eq!(rest_paths(&steps[1][0].1), ["/modelmesh/a/v2/models/x"]);
        let cds: Value = serde_json::from_str(&steps[1][1].1).unwrap();
        assert_eq!(
            cds["resources"].as_array().unwrap().len(),
            2,
            "namespace b's clusters go last"
        );
    }

    #[test]
    fn an_added_member_gets_its_route_before_the_filter_may_choose_it() {
        let wasm = Path::new("/f.wasm");
        let old = state(&[("x", 100)], &["a"]);
        let new = state(&[("x", 50), ("y", 50)], &["a"]);
        let steps = transition_steps(Some(&old), &new, wasm);
        assert_eq!(steps.len(), 2, "{steps:#?}");
        assert_eq!(
            steps[0].iter().map(|(f, _)| *f).collect::<Vec<_>>(),
            [RDS_FILE]
        );
        assert_eq!(
            rest_paths(&steps[0][0].1),
            ["/modelmesh/a/v2/models/x", "/modelmesh/a/v2/models/y"]
        );
        assert_eq!(
            steps[1].iter().map(|(f, _)| *f).collect::<Vec<_>>(),
            [ECDS_FILE]
        );
    }

    #[test]
    fn a_weight_change_touches_only_the_filter() {
        let wasm = Path::new("/f.wasm");
        let steps = transition_steps(
            Some(&state(&[("x", 80), ("y", 20)], &["a"])),
            &state(&[("x", 20), ("y", 80)], &["a"]),
            wasm,
        );
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0][0].0, ECDS_FILE);
        let unchanged = state(&[("x", 1)], &["a"]);
        assert!(transition_steps(Some(&unchanged), &unchanged, wasm).is_empty());
    }

    /// `envoy/bootstrap.json` is this renderer's output for the container layout;
    /// `MODELSPLIT_BLESS=1 cargo test -p modelsplit-e2e --lib` rewrites it.
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
            "{} is out of date: run `MODELSPLIT_BLESS=1 cargo test -p modelsplit-e2e --lib`",
            path.display()
        );
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
