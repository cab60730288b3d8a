//! modelsplit's Envoy filter: weighted routing of KServe ModelMesh group requests.
//!
//! Built to `wasm32-unknown-unknown` it is a proxy-wasm (ABI 0.2.1) HTTP filter;
//! built natively it is a library: the configuration type for the controller, and
//! the routing core for tests and benchmarks.
//!
//! - [`config`]: the filter configuration (the JSON of DESIGN.md section 3).
//! - [`plan`]: the configuration compiled once into immutable lookup tables.
//! - [`classify`]: is a request a group request (REST path or gRPC header)?
//! - [`choose`]: which member: override, sticky (rendezvous hashing) or weighted random.
//! - [`route`]: the whole per-request decision over a [`route::RequestHeaders`] source.
//! - [`grpc_frame`]: the gRPC frame and protobuf id field (`model_name`) of a KServe v2 request.
//! - [`grpc_body`]: the body phase of a KServe v2 gRPC call: the group named in `model_name`.
//! - [`hold`]: does the host pass the body while the filter holds the headers? (per worker)
//! - `host` (wasm32 only): the proxy-wasm contexts; thin glue around [`route::route`].
//!
//! # Using the core
//!
//! ```
//! use modelsplit_filter::{choose::Rng, plan::Plan, route::{route, RequestHeaders, Rewrite}};
//!
//! struct Path(&'static str);
//! impl RequestHeaders for Path {
//!     fn header(&self, name: &str) -> Option<Vec<u8>> {
//!         (name == ":path").then(|| self.0.as_bytes().to_vec())
//!     }
//! }
//!
//! let plan = Plan::from_json(br#"{"groups":[{"namespace":"apps","name":"ai-model",
//!     "members":[{"name":"one","weight":80},{"name":"two","weight":20}]}]}"#).unwrap();
//! let mut rng = Rng::new(7);
//! let decision = route(&plan, &mut rng, &Path("/modelmesh/apps/v2/models/ai-model/infer")).unwrap();
//! let member = &decision.member_in(&plan).unwrap().name;
//! assert_eq!(
//!     decision.rewrite,
//!     Rewrite::Path(format!("/modelmesh/apps/v2/models/{member}/infer").into_bytes())
//! );
//! assert!(route(&plan, &mut rng, &Path("/healthz")).is_none());
//! ```
//!
//! # Counters in Envoy's `/stats`
//!
//! Envoy puts proxy-wasm metrics under its custom stat namespace `wasmcustom`, so
//! `/stats` shows (see filter/README.md for a verified listing):
//!
//! - `wasmcustom.modelsplit.requests.<namespace>.<group>.<member>` — requests routed to
//!   the member (namespace and member names contain no dots; the group is in between);
//! - `wasmcustom.modelsplit.override_ignored` — override header naming a non-member;
//! - `wasmcustom.modelsplit.config_rejected` — configurations refused, counted once per
//!   VM that refused it (main thread and each worker).

pub mod choose;
pub mod classify;
pub mod config;
pub mod grpc_body;
pub mod grpc_frame;
pub mod hold;
pub mod plan;
pub mod route;

#[cfg(all(target_arch = "wasm32", not(test)))]
mod host;
#[cfg(all(target_arch = "wasm32", not(test)))]
mod host_body;
