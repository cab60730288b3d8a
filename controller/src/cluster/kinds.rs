//! The Kubernetes resources `modelsplit run` touches, and the access it needs to each:
//! one table for the startup checks, the watchers and the RBAC test of controller/deploy/.

use std::fmt;

use kube::core::ApiResource;

use super::error::ResourceName;

/// An API verb, as RBAC rules and access reviews name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
}

impl Verb {
    pub const fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub static NAMESPACES: ResourceName = ResourceName {
    group: "",
    version: "v1",
    plural: "namespaces",
    provided_by: "Kubernetes",
};
pub static INFERENCE_SERVICES: ResourceName = ResourceName {
    group: "serving.kserve.io",
    version: "v1beta1",
    plural: "inferenceservices",
    provided_by:
        "KServe ModelMesh (the serving.kserve.io CRDs, e.g. from the ODH model serving component)",
};
pub static SERVING_RUNTIMES: ResourceName = ResourceName {
    group: "serving.kserve.io",
    version: "v1alpha1",
    plural: "servingruntimes",
    provided_by:
        "KServe ModelMesh (the serving.kserve.io CRDs, e.g. from the ODH model serving component)",
};
pub static WASM_PLUGINS: ResourceName = ResourceName {
    group: "extensions.istio.io",
    version: "v1alpha1",
    plural: "wasmplugins",
    provided_by: "Istio (its extensions.istio.io CRDs; modelsplit is tested with istiod of the 1.31 development line)",
};
pub static ENVOY_FILTERS: ResourceName = ResourceName {
    group: "networking.istio.io",
    version: "v1alpha3",
    plural: "envoyfilters",
    provided_by: "Istio (its networking.istio.io CRDs)",
};
pub static VIRTUAL_SERVICES: ResourceName = ResourceName {
    group: "networking.istio.io",
    version: "v1beta1",
    plural: "virtualservices",
    provided_by: "Istio (its networking.istio.io CRDs)",
};
pub static EVENTS: ResourceName = ResourceName {
    group: "events.k8s.io",
    version: "v1",
    plural: "events",
    provided_by: "Kubernetes (events.k8s.io/v1; modelsplit is tested with v1.34.4)",
};
pub static PODS: ResourceName = ResourceName {
    group: "",
    version: "v1",
    plural: "pods",
    provided_by: "Kubernetes",
};
pub static CONFIG_MAPS: ResourceName = ResourceName {
    group: "",
    version: "v1",
    plural: "configmaps",
    provided_by: "Kubernetes",
};
pub static LEASES: ResourceName = ResourceName {
    group: "coordination.k8s.io",
    version: "v1",
    plural: "leases",
    provided_by: "Kubernetes (coordination.k8s.io/v1; modelsplit is tested with v1.34.4)",
};

/// Verbs needed cluster-wide (ClusterRole), in the order the startup checks try them.
pub const CLUSTER_ACCESS: &[(&ResourceName, &[Verb])] = &[
    (&NAMESPACES, &[Verb::List, Verb::Watch]),
    (&SERVING_RUNTIMES, &[Verb::List, Verb::Watch]),
    (&INFERENCE_SERVICES, &[Verb::List, Verb::Watch]),
    (
        &WASM_PLUGINS,
        &[
            Verb::List,
            Verb::Watch,
            Verb::Create,
            Verb::Patch,
            Verb::Delete,
        ],
    ),
    // Watched and pruned whatever --delivery says, so that switching it removes the
    // other kind's object.
    (
        &ENVOY_FILTERS,
        &[
            Verb::List,
            Verb::Watch,
            Verb::Create,
            Verb::Patch,
            Verb::Delete,
        ],
    ),
    (
        &VIRTUAL_SERVICES,
        &[
            Verb::List,
            Verb::Watch,
            Verb::Create,
            Verb::Patch,
            Verb::Delete,
        ],
    ),
    (&EVENTS, &[Verb::Create]),
];

/// Verbs automated rollouts need: cluster-wide, to find the gateway pods (ClusterRole),
/// and in the controller's own namespace, to keep their state (Role). Not checked at
/// startup: without them only rollouts wait (a `RolloutWaiting` Event says what is missing).
pub const ROLLOUT_CLUSTER_ACCESS: (&ResourceName, &[Verb]) = (&PODS, &[Verb::List]);
pub const ROLLOUT_STATE_ACCESS: (&ResourceName, &[Verb]) =
    (&CONFIG_MAPS, &[Verb::Get, Verb::Create, Verb::Patch]);

/// Verbs needed on the Lease in the controller's own namespace (Role).
pub const LEASE_ACCESS: (&ResourceName, &[Verb]) =
    (&LEASES, &[Verb::Get, Verb::Create, Verb::Update]);

/// The objects the controller publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ManagedKind {
    WasmPlugin,
    EnvoyFilter,
    VirtualService,
}

impl ManagedKind {
    pub const ALL: [ManagedKind; 3] = [
        ManagedKind::WasmPlugin,
        ManagedKind::EnvoyFilter,
        ManagedKind::VirtualService,
    ];

    pub fn kind(self) -> &'static str {
        match self {
            ManagedKind::WasmPlugin => "WasmPlugin",
            ManagedKind::EnvoyFilter => "EnvoyFilter",
            ManagedKind::VirtualService => "VirtualService",
        }
    }

    pub fn resource(self) -> &'static ResourceName {
        match self {
            ManagedKind::WasmPlugin => &WASM_PLUGINS,
            ManagedKind::EnvoyFilter => &ENVOY_FILTERS,
            ManagedKind::VirtualService => &VIRTUAL_SERVICES,
        }
    }

    /// Whether objects of this kind carry the filter (and its configuration) to a gateway.
    pub fn carries_filter(self) -> bool {
        matches!(self, ManagedKind::WasmPlugin | ManagedKind::EnvoyFilter)
    }

    pub fn from_kind(kind: &str) -> Option<Self> {
        ManagedKind::ALL.into_iter().find(|k| k.kind() == kind)
    }

    pub fn api_resource(self) -> ApiResource {
        api_resource(self.resource(), self.kind())
    }
}

/// The dynamic-API description of a resource.
pub fn api_resource(resource: &ResourceName, kind: &str) -> ApiResource {
    let api_version = if resource.group.is_empty() {
        resource.version.to_string()
    } else {
        format!("{}/{}", resource.group, resource.version)
    };
    ApiResource {
        group: resource.group.to_string(),
        version: resource.version.to_string(),
        api_version,
        kind: kind.to_string(),
        plural: resource.plural.to_string(),
    }
}
