//! The local gateway's state from a plan: the filter configuration of the gateway
//! workload it plays, the routes of the namespaces on that gateway, and where each
//! namespace's ModelMesh is.

use super::envoy_files::{ExposedIsvc, GatewayState, Upstream};
use modelsplit_core::planner::Plan;
use modelsplit_filter::config::FilterConfig;
use std::collections::BTreeMap;

/// Where each namespace's ModelMesh (or stand-in) listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstreams {
    /// From `--upstream NS=REST,GRPC`.
    pub by_namespace: BTreeMap<String, Upstream>,
    /// For every other namespace (its `namespace` field is ignored).
    pub default: Upstream,
}

/// ModelMesh's own ports on this machine, as `kubectl port-forward
/// svc/modelmesh-serving 8008 8033` (or one stand-in with its defaults) gives them.
pub const DEFAULT_UPSTREAM: &str = "127.0.0.1:8008,127.0.0.1:8033";

impl Upstreams {
    /// The ModelMesh of `namespace`.
    pub fn of(&self, namespace: &str) -> Upstream {
        self.by_namespace
            .get(namespace)
            .cloned()
            .unwrap_or_else(|| self.default.for_namespace(namespace))
    }
}

impl Default for Upstreams {
    fn default() -> Self {
        Upstreams {
            by_namespace: BTreeMap::new(),
            // The constant parses; the fallback only keeps this free of panics.
            default: Upstream::parse("", DEFAULT_UPSTREAM).unwrap_or(Upstream {
                namespace: String::new(),
                rest_host: "127.0.0.1".into(),
                rest_port: 8008,
                grpc_host: "127.0.0.1".into(),
                grpc_port: 8033,
            }),
        }
    }
}

/// What the local gateway serves of `plan`, playing the gateway workload in
/// `plugin_namespace`; also the mesh namespaces with routes that it does not play.
pub fn gateway_state(
    plan: &Plan,
    plugin_namespace: &str,
    upstreams: &Upstreams,
) -> (GatewayState, Vec<OtherGateway>) {
    let config = plan
        .gateways
        .iter()
        .find(|g| g.plugin_namespace == plugin_namespace)
        .map_or_else(
            || FilterConfig::with_groups(Vec::new()),
            |g| g.config.clone(),
        );
    let mut isvcs = Vec::new();
    let mut namespaces = Vec::new();
    let mut others = Vec::new();
    for routes in &plan.routes {
        if routes.plugin_namespace != plugin_namespace {
            others.push(OtherGateway {
                namespace: routes.namespace.clone(),
                plugin_namespace: routes.plugin_namespace.clone(),
            });
            continue;
        }
        namespaces.push(routes.namespace.clone());
        isvcs.extend(routes.models.iter().map(|m| ExposedIsvc {
            namespace: routes.namespace.clone(),
            name: m.name.clone(),
            grpc: m.grpc,
        }));
    }
    let state = GatewayState {
        config,
        isvcs,
        upstreams: namespaces.iter().map(|ns| upstreams.of(ns)).collect(),
    };
    (state, others)
}

/// A mesh namespace served by another gateway workload than the local one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherGateway {
    pub namespace: String,
    pub plugin_namespace: String,
}

impl std::fmt::Display for OtherGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Namespace {}: on the gateway in namespace {}, which this local gateway does not play; run with --gateway-namespace {} to serve it",
            self.namespace, self.plugin_namespace, self.plugin_namespace
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelsplit_core::planner::{plan, Observed, PreviousConfigs};
    use modelsplit_core::settings::Settings;

    fn observed(yaml: &str) -> Observed {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.yaml"), yaml).unwrap();
        modelsplit_core::manifests::load_manifests(&[dir.path().to_path_buf()]).unwrap()
    }

    const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {opendatahub.io/service-mesh: "true"}}
---
apiVersion: v1
kind: Namespace
metadata:
  name: elsewhere
  labels: {opendatahub.io/service-mesh: "true"}
  annotations: {opendatahub.io/service-mesh-gw: other-gw/gw}
---
apiVersion: serving.kserve.io/v1alpha1
kind: ServingRuntime
metadata: {name: rt, namespace: apps, annotations: {enable-route: "true"}}
spec: {supportedModelFormats: [{name: sklearn, autoSelect: true}]}
---
apiVersion: serving.kserve.io/v1alpha1
kind: ServingRuntime
metadata: {name: rt, namespace: elsewhere, annotations: {enable-route: "true"}}
spec: {supportedModelFormats: [{name: sklearn, autoSelect: true}]}
---
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: one
  namespace: apps
  labels: {serving.kserve.io/model-tag: g}
  annotations: {serving.kserve.io/deploymentMode: ModelMesh, serving.kserve.io/canaryTrafficPercent: "80"}
spec: {predictor: {model: {modelFormat: {name: sklearn}, runtime: rt}}}
---
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: two
  namespace: apps
  labels: {serving.kserve.io/model-tag: g}
  annotations: {serving.kserve.io/deploymentMode: ModelMesh, serving.kserve.io/canaryTrafficPercent: "20"}
spec: {predictor: {model: {modelFormat: {name: sklearn}, runtime: rt}}}
---
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: far
  namespace: elsewhere
  annotations: {serving.kserve.io/deploymentMode: ModelMesh}
spec: {predictor: {model: {modelFormat: {name: sklearn}, runtime: rt}}}
"#;

    #[test]
    fn the_local_gateway_plays_one_gateway_workload() {
        let plan = plan(
            &observed(MANIFESTS),
            &PreviousConfigs::new(),
            &Settings::default(),
        );
        let mut upstreams = Upstreams::default();
        upstreams.by_namespace.insert(
            "apps".into(),
            Upstream::parse("apps", "standin:1,standin:2").unwrap(),
        );
        let (state, others) = gateway_state(&plan, "istio-system", &upstreams);
        let names: Vec<_> = state
            .isvcs
            .iter()
            .map(|i| (i.namespace.as_str(), i.name.as_str()))
            .collect();
        assert_eq!(names, [("apps", "one"), ("apps", "two")]);
        assert_eq!(state.upstreams.len(), 1);
        assert_eq!(state.upstreams[0].rest_host, "standin");
        let group = &state.config.groups[0];
        assert_eq!((group.name.as_str(), group.members[0].weight), ("g", 8000));
        assert_eq!(
            others,
            [OtherGateway {
                namespace: "elsewhere".into(),
                plugin_namespace: "other-gw".into()
            }]
        );

        let (state, others) = gateway_state(&plan, "other-gw", &Upstreams::default());
        assert!(state.config.groups.is_empty());
        assert_eq!(state.isvcs, [ExposedIsvc::new("elsewhere", "far")]);
        assert_eq!(state.upstreams, [Upstreams::default().of("elsewhere")]);
        assert_eq!(state.upstreams[0].rest_port, 8008);
        assert_eq!(others.len(), 1);
    }
}
