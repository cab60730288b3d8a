//! The gateway's routing model: which requests reach which namespace's ModelMesh, and
//! how their paths are rewritten. Computed once here; the cluster's `VirtualService`s
//! ([`crate::encode::virtual_service`]) and the local gateway's Envoy route file
//! ([`crate::encode::envoy_routes`]) are two encodings of it (docs/design.md section 4).

use crate::settings::GatewayRef;
use modelsplit_filter::config::DEFAULT_GRPC_HEADER;

/// ModelMesh's Service in each namespace.
pub const MODELMESH_SERVICE: &str = "modelmesh-serving";

/// The two ModelMesh ports a route can lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ModelMeshPort {
    /// The REST proxy (HTTP/1.1).
    Rest,
    /// The gRPC endpoint (HTTP/2).
    Grpc,
}

impl ModelMeshPort {
    /// The port number, as on `modelmesh-serving.<ns>.svc`.
    pub const fn number(self) -> u16 {
        match self {
            ModelMeshPort::Rest => 8008,
            ModelMeshPort::Grpc => 8033,
        }
    }
}

/// The gateway routes of one mesh namespace: what its VirtualService expresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceRoutes {
    pub namespace: String,
    pub gateway: GatewayRef,
    pub plugin_namespace: String,
    /// The REST prefix of the filter config the gateway gets: routes and filter agree.
    pub rest_prefix: String,
    /// Sorted by name.
    pub models: Vec<ExposedModel>,
}

/// An InferenceService reachable through the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExposedModel {
    pub name: String,
    /// Whether it gets the gRPC (`mm-vmodel-id`) route: its name is its namespace's on the gateway.
    pub grpc: bool,
}

/// An InferenceService the gateway routes to, with its namespace (the local gateway's
/// flat list of what the VirtualServices of all namespaces name).
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

impl NamespaceRoutes {
    /// The ModelMesh Service of the namespace.
    pub fn modelmesh_host(&self) -> String {
        modelmesh_host(&self.namespace)
    }

    /// The namespace's models with their namespace.
    pub fn isvcs(&self) -> impl Iterator<Item = ExposedIsvc> + '_ {
        self.models.iter().map(|m| ExposedIsvc {
            namespace: self.namespace.clone(),
            name: m.name.clone(),
            grpc: m.grpc,
        })
    }
}

/// The ModelMesh Service of a namespace.
pub fn modelmesh_host(namespace: &str) -> String {
    format!("{MODELMESH_SERVICE}.{namespace}.svc.cluster.local")
}

/// The kinds of route an exposed InferenceService gets, in route order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteKind {
    /// gRPC calls whose `mm-vmodel-id` names the model.
    Grpc,
    /// The model's REST path itself (`.../v2/models/<name>`: metadata).
    Rest,
    /// Paths below it (`.../v2/models/<name>/infer`, `/ready`, ...).
    RestPaths,
}

impl RouteKind {
    /// The suffix route names carry.
    pub const fn suffix(self) -> &'static str {
        match self {
            RouteKind::Grpc => "grpc",
            RouteKind::Rest => "rest",
            RouteKind::RestPaths => "rest-paths",
        }
    }
}

/// What a route matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch {
    /// `POST`, `content-type: application/grpc*`, and `header` exactly `value`.
    Grpc { header: &'static str, value: String },
    /// The path exactly.
    PathExact(String),
    /// Paths starting with this prefix.
    PathPrefix(String),
}

/// One route from the gateway to a namespace's ModelMesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub namespace: String,
    pub model: String,
    pub kind: RouteKind,
    pub matches: RouteMatch,
    /// The matched path (exact) or prefix is replaced by this one.
    pub rewrite: Option<String>,
    pub port: ModelMeshPort,
}

/// The routes of one exposed InferenceService: gRPC (if it owns its gRPC name), then
/// its REST path exactly, then the paths below it. `rest_prefix` is the filter
/// config's REST prefix, so the routes and the filter agree on the public path.
pub fn routes_of(isvc: &ExposedIsvc, rest_prefix: &str) -> Vec<Route> {
    let (namespace, name) = (&isvc.namespace, &isvc.name);
    let route = |kind, matches, rewrite, port| Route {
        namespace: namespace.clone(),
        model: name.clone(),
        kind,
        matches,
        rewrite,
        port,
    };
    let mut routes = Vec::with_capacity(3);
    if isvc.grpc {
        routes.push(route(
            RouteKind::Grpc,
            RouteMatch::Grpc {
                header: DEFAULT_GRPC_HEADER,
                value: name.clone(),
            },
            None,
            ModelMeshPort::Grpc,
        ));
    }
    let public = format!("{rest_prefix}/{namespace}/v2/models/{name}");
    let internal = format!("/v2/models/{name}");
    // Trailing slash on both sides of the prefix route: the matched prefix is swapped
    // for the rewrite, and a bare prefix would also catch `<name>-v2`.
    routes.push(route(
        RouteKind::Rest,
        RouteMatch::PathExact(public.clone()),
        Some(internal.clone()),
        ModelMeshPort::Rest,
    ));
    routes.push(route(
        RouteKind::RestPaths,
        RouteMatch::PathPrefix(format!("{public}/")),
        Some(format!("{internal}/")),
        ModelMeshPort::Rest,
    ));
    routes
}

/// The routes of many InferenceServices, in their order.
pub fn routes(isvcs: &[ExposedIsvc], rest_prefix: &str) -> Vec<Route> {
    isvcs
        .iter()
        .flat_map(|i| routes_of(i, rest_prefix))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_owner_gets_three_routes_in_order() {
        let routes = routes_of(&ExposedIsvc::new("team", "m"), "/modelmesh");
        let kinds: Vec<_> = routes.iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [RouteKind::Grpc, RouteKind::Rest, RouteKind::RestPaths]
        );
        assert_eq!(
            routes[1].matches,
            RouteMatch::PathExact("/modelmesh/team/v2/models/m".into())
        );
        assert_eq!(
            routes[2].matches,
            RouteMatch::PathPrefix("/modelmesh/team/v2/models/m/".into())
        );
        assert_eq!(routes[2].rewrite.as_deref(), Some("/v2/models/m/"));
        assert_eq!(routes[0].port.number(), 8033);
        assert_eq!(routes[1].port.number(), 8008);
    }

    #[test]
    fn a_model_without_its_grpc_name_gets_rest_only() {
        let isvc = ExposedIsvc {
            grpc: false,
            ..ExposedIsvc::new("team", "m")
        };
        let routes = routes_of(&isvc, "/mm");
        assert!(routes.iter().all(|r| r.port == ModelMeshPort::Rest));
        assert_eq!(
            routes[0].matches,
            RouteMatch::PathExact("/mm/team/v2/models/m".into())
        );
    }
}
