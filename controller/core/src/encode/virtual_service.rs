//! The routing model as an Istio `VirtualService` per mesh namespace.

use crate::resources::virtual_service::{
    Destination, HttpMatch, HttpRoute, PortSelector, Rewrite, RouteDestination, StringMatch,
    VirtualServiceSpec, VIRTUAL_SERVICE_NAME,
};
use crate::resources::{managed_labels, VirtualService};
use crate::routing::{self, NamespaceRoutes, Route, RouteMatch};
use std::collections::BTreeMap;

/// The VirtualService routing a mesh namespace's exposed InferenceServices from its
/// gateway to its ModelMesh.
pub fn virtual_service(routes: &NamespaceRoutes) -> VirtualService {
    let isvcs: Vec<_> = routes.isvcs().collect();
    let http = routing::routes(&isvcs, &routes.rest_prefix)
        .iter()
        .map(http_route)
        .collect();
    let mut service = VirtualService::new(
        VIRTUAL_SERVICE_NAME,
        VirtualServiceSpec {
            gateways: vec![routes.gateway.to_string()],
            hosts: vec!["*".to_string()],
            http,
        },
    );
    service.metadata.namespace = Some(routes.namespace.clone());
    service.metadata.labels = Some(managed_labels());
    service
}

fn http_route(route: &Route) -> HttpRoute {
    let matches = match &route.matches {
        RouteMatch::Grpc { header, value } => HttpMatch {
            method: Some(StringMatch::exact("POST")),
            headers: BTreeMap::from([
                (
                    "content-type".to_string(),
                    StringMatch::prefix("application/grpc"),
                ),
                (header.to_string(), StringMatch::exact(value)),
            ]),
            ..HttpMatch::default()
        },
        RouteMatch::PathExact(path) => HttpMatch {
            uri: Some(StringMatch::exact(path)),
            ..HttpMatch::default()
        },
        RouteMatch::PathPrefix(prefix) => HttpMatch {
            uri: Some(StringMatch::prefix(prefix)),
            ..HttpMatch::default()
        },
    };
    HttpRoute {
        name: format!("{}-{}", route.model, route.kind.suffix()),
        matches: vec![matches],
        rewrite: route.rewrite.clone().map(|uri| Rewrite { uri }),
        route: vec![RouteDestination {
            destination: Destination {
                host: routing::modelmesh_host(&route.namespace),
                port: Some(PortSelector {
                    number: u32::from(route.port.number()),
                }),
            },
        }],
    }
}
