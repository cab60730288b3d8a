//! modelsplit's core: from labelled KServe InferenceServices to what the gateway needs
//! (a filter configuration per gateway workload and routes per mesh namespace), with
//! no async runtime and no Kubernetes client. `modelsplit render`, `run` and `local`
//! (crate `modelsplit-controller`) are shells around [`planner::plan`].
//!
//! - [`resources`]: the Kubernetes object types read and written.
//! - [`manifests`]: objects from manifest files or text (and earlier output).
//! - [`rules`]: weight parsing, validation reasons, gRPC name ownership.
//! - [`planner`]: observed objects in, desired resources and a report out.
//! - [`routing`]: the gateway's routing model; [`encode`] turns it into VirtualServices
//!   (cluster) or Envoy routes (local gateway).
//! - [`report`]: per-group states and per-object notices.
//! - [`settings`]: gateway defaults and WasmPlugin settings.
//! - [`rollout`]: automated rollouts (declaration, state machine, weights per step);
//!   [`histogram`]: the arithmetic of Envoy's bucketed histograms they and `status` use.
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
//! | InferenceService | annotation `modelsplit.io/rollout: "steps=5,25,100 interval=30s ..."` | this member is a canary the controller rolls out ([`rollout`]; `modelsplit local`) |

pub mod encode;
pub mod histogram;
pub mod manifests;
pub mod planner;
pub mod report;
pub mod resources;
pub mod rollout;
pub mod routing;
pub mod rules;
pub mod settings;

pub use planner::{plan, Observed, Plan, PreviousConfigs};
pub use settings::Settings;
