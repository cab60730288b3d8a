//! modelsplit's Envoy filter: weighted routing of KServe ModelMesh group requests.
//!
//! Built to `wasm32-unknown-unknown` it is a proxy-wasm (ABI 0.2.1) HTTP filter;
//! built natively it is a library: the configuration type for the controller, and
//! the routing core for tests and benchmarks.
//!
//! - [`config`]: the filter configuration (the JSON of docs/design.md section 3).
//! - [`plan`]: the configuration compiled once into immutable lookup tables.
//! - [`classify`]: is a request a group request (REST path or gRPC header)?
//! - [`choose`]: which member: override, sticky (rendezvous hashing) or weighted random.
//! - [`route`]: the whole per-request decision over a [`route::RequestHeaders`] source.
//! - [`grpc_frame`]: the gRPC frame and protobuf id field (`model_name`) of a KServe v2 request.
//! - [`grpc_body`]: the body phase of a KServe v2 gRPC call: the group named in `model_name`.
//! - [`hold`]: does the host pass the body while the filter holds the headers? (per worker)
//! - [`headers`]: all request headers from one host call, looked up in module memory.
//! - [`counters`]: request counters added up per worker, flushed to the host on a tick.
//! - [`host_api`]: the [`host_api::Host`] trait, everything the filter asks of its host.
//! - [`filter`]: the filter's life over a `Host`: configuration, ticks, requests.
//! - `host` (wasm32 only): `Host` over proxy-wasm's raw ABI and the SDK's contexts,
//!   forwarding to [`filter`].
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
//!   VM that refused it (main thread and each worker), a missing one included;
//! - `wasmcustom.modelsplit.host_error` — requests passed through because a host call
//!   answered an unexpected status.
//!
//! Request counters are flushed per worker every 500 ms: `/stats` lags by at most 1 s.

#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod choose;
pub mod classify;
pub mod config;
pub mod counters;
pub mod filter;
pub mod grpc_body;
pub mod grpc_frame;
pub mod headers;
pub mod hold;
pub mod host_api;
pub mod plan;
pub mod route;

#[cfg(all(target_arch = "wasm32", not(test)))]
mod host;
#[cfg(test)]
mod mock_host;
