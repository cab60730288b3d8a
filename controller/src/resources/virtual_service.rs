//! Istio `VirtualService` (`networking.istio.io/v1beta1`): routes each exposed
//! InferenceService from the gateway to its namespace's ModelMesh.

use crate::planner::{NamespaceRoutes, MODELMESH_GRPC_PORT, MODELMESH_REST_PORT};
use kube::CustomResource;
use modelsplit_filter::config::{DEFAULT_GRPC_HEADER, DEFAULT_REST_PREFIX};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Name of the one VirtualService modelsplit writes in each mesh namespace.
pub const VIRTUAL_SERVICE_NAME: &str = "modelsplit";

#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "networking.istio.io",
    version = "v1beta1",
    kind = "VirtualService",
    namespaced,
    schema = "disabled",
    derive = "PartialEq"
)]
pub struct VirtualServiceSpec {
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub http: Vec<HttpRoute>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpRoute {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(rename = "match", default)]
    pub matches: Vec<HttpMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
}

/// Istio's `StringMatch`: exactly one of the fields is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StringMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

impl StringMatch {
    pub fn exact(value: impl Into<String>) -> Self {
        StringMatch {
            exact: Some(value.into()),
            prefix: None,
        }
    }
    pub fn prefix(value: impl Into<String>) -> Self {
        StringMatch {
            exact: None,
            prefix: Some(value.into()),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rewrite {
    pub uri: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteDestination {
    pub destination: Destination,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Destination {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PortSelector {
    pub number: u32,
}

impl VirtualService {
    /// The VirtualService routing a mesh namespace's exposed InferenceServices from
    /// its gateway to ModelMesh: per model a gRPC route (if it owns its gRPC name)
    /// and two REST routes.
    pub fn for_namespace(routes: &NamespaceRoutes) -> VirtualService {
        let host = routes.modelmesh_host();
        let to = |port| {
            vec![RouteDestination {
                destination: Destination {
                    host: host.clone(),
                    port: Some(PortSelector { number: port }),
                },
            }]
        };
        let mut http = Vec::new();
        for model in &routes.models {
            let name = &model.name;
            if model.grpc {
                http.push(HttpRoute {
                    name: format!("{name}-grpc"),
                    matches: vec![HttpMatch {
                        method: Some(StringMatch::exact("POST")),
                        headers: BTreeMap::from([
                            (
                                "content-type".to_string(),
                                StringMatch::prefix("application/grpc"),
                            ),
                            (DEFAULT_GRPC_HEADER.to_string(), StringMatch::exact(name)),
                        ]),
                        ..HttpMatch::default()
                    }],
                    rewrite: None,
                    route: to(MODELMESH_GRPC_PORT),
                });
            }
            let public = format!(
                "{DEFAULT_REST_PREFIX}/{}/v2/models/{name}",
                routes.namespace
            );
            let internal = format!("/v2/models/{name}");
            http.push(HttpRoute {
                name: format!("{name}-rest"),
                matches: vec![HttpMatch {
                    uri: Some(StringMatch::exact(&public)),
                    ..HttpMatch::default()
                }],
                rewrite: Some(Rewrite {
                    uri: internal.clone(),
                }),
                route: to(MODELMESH_REST_PORT),
            });
            // Trailing slash on both sides: Istio swaps the matched prefix for
            // `rewrite.uri`, and a bare prefix would also catch `<name>-v2`.
            http.push(HttpRoute {
                name: format!("{name}-rest-paths"),
                matches: vec![HttpMatch {
                    uri: Some(StringMatch::prefix(format!("{public}/"))),
                    ..HttpMatch::default()
                }],
                rewrite: Some(Rewrite {
                    uri: format!("{internal}/"),
                }),
                route: to(MODELMESH_REST_PORT),
            });
        }
        let mut service = VirtualService::new(
            VIRTUAL_SERVICE_NAME,
            VirtualServiceSpec {
                gateways: vec![routes.gateway.to_string()],
                hosts: vec!["*".to_string()],
                http,
            },
        );
        service.metadata.namespace = Some(routes.namespace.clone());
        service.metadata.labels = Some(super::managed_labels());
        service
    }
}
