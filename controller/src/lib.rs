//! modelsplit's controller: from labelled KServe InferenceServices to the Istio
//! `WasmPlugin` (the filter and its configuration) and `VirtualService`s (routes to
//! ModelMesh) that split a group's traffic by weight.
//!
//! - [`planner`]: the pure core — observed objects in, desired resources and a report out.
//! - [`rules`]: weight parsing, validation reasons, gRPC name ownership.
//! - [`resources`]: the Kubernetes object types read and written.
//! - [`render`]: manifests from files in, YAML out (`modelsplit render`).
//! - [`settings`]: gateway defaults and WasmPlugin settings.
//! - [`cluster`]: `modelsplit run`, the planner as an in-cluster controller.
//! - [`local`]: `modelsplit local`, the planner feeding a local Envoy through files.
//! - [`report`]: per-group states and per-object notices.
//!
//! What users write on their objects (docs/design.md sections 1 and 4):
//!
//! | object | key | meaning |
//! | --- | --- | --- |
//! | Namespace | label or annotation `opendatahub.io/service-mesh: "true"` | takes part |
//! | Namespace | `maistra.io/gateway-namespace` + `maistra.io/gateway-name`, or `opendatahub.io/service-mesh-gw: ns/name` | its gateway (else `--default-gateway`) |
//! | ServingRuntime | annotation `enable-route: "true"` | its InferenceServices get routes |
//! | InferenceService | annotation `serving.kserve.io/deploymentMode: ModelMesh` | runs on ModelMesh (set by KServe) |
//! | InferenceService | label `serving.kserve.io/model-tag: <group>` | member of `<group>` |
//! | InferenceService | annotation `serving.kserve.io/canaryTrafficPercent: "80"` | its share, 0–100, two decimals |
//! | InferenceService | annotation `modelsplit.io/sticky-header: x-user-id` | the group's sticky header (members must agree) |

pub mod cluster;
pub mod local;
pub mod planner;
pub mod render;
pub mod report;
pub mod resources;
pub mod rules;
pub mod settings;

pub use planner::{plan, Observed, Plan, PreviousConfigs};
pub use settings::Settings;
