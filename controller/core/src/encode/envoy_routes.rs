//! The routing model as an Envoy route configuration (the local gateway's RDS file):
//! what a cluster's VirtualServices become inside the gateway's Envoy.

use crate::routing::{modelmesh_host, ModelMeshPort, Route, RouteKind, RouteMatch};
use serde_json::{json, Value};

/// The route configuration's name (one per gateway).
pub const ROUTE_CONFIG_NAME: &str = "modelsplit-gateway";

/// The Envoy cluster of a namespace's ModelMesh port, named as istiod names it.
pub fn cluster_name(namespace: &str, port: ModelMeshPort) -> String {
    format!("outbound|{}||{}", port.number(), modelmesh_host(namespace))
}

/// One Envoy route per model route, in order.
pub fn envoy_routes(routes: &[Route]) -> Vec<Value> {
    routes.iter().map(envoy_route).collect()
}

fn envoy_route(route: &Route) -> Value {
    let name = format!(
        "{}.{}.{}",
        route.namespace,
        route.model,
        route.kind.suffix()
    );
    let cluster = cluster_name(&route.namespace, route.port);
    let matches = match &route.matches {
        RouteMatch::Grpc { header, value } => json!({
            "prefix": "/",
            "headers": [
                {"name": ":method", "string_match": {"exact": "POST"}},
                {"name": "content-type", "string_match": {"prefix": "application/grpc"}},
                {"name": header, "string_match": {"exact": value}},
            ],
        }),
        RouteMatch::PathExact(path) => json!({"path": path}),
        RouteMatch::PathPrefix(prefix) => json!({"prefix": prefix}),
    };
    let action = match &route.rewrite {
        Some(rewrite) => json!({"cluster": cluster, "prefix_rewrite": rewrite}),
        None => json!({"cluster": cluster}),
    };
    json!({
        "name": name,
        "stat_prefix": route_stat_prefix(&route.namespace, &route.model, route.kind),
        "match": matches,
        "route": action,
    })
}

/// The first part of a route's statistics' `stat_prefix` (`modelsplit status` reads them).
pub const ROUTE_STATS: &str = "modelsplit";

/// Where Envoy keeps a route's outcomes: `vhost.<vhost>.route.<this>.upstream_rq_5xx`,
/// `upstream_rq_completed`, the `upstream_rq_time` histogram, ... Envoy counts them natively,
/// so the filter needs no host call for them. Kubernetes names hold no dots, so the parts
/// read back unambiguously.
pub fn route_stat_prefix(namespace: &str, model: &str, kind: RouteKind) -> String {
    format!("{ROUTE_STATS}.{namespace}.{model}.{}", kind.suffix())
}

/// The RDS file (one `RouteConfiguration`, one virtual host) carrying `routes`.
pub fn route_configuration(routes: Vec<Value>) -> Value {
    json!({
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            "name": ROUTE_CONFIG_NAME,
            "virtual_hosts": [{"name": "gateway", "domains": ["*"], "routes": routes}],
        }]
    })
}
