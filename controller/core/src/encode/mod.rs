//! Encoders of the routing model ([`crate::routing`]): one per gateway kind, each a small
//! pure function. A new route kind is added in `routing` and encoded here.

pub mod envoy_filter;
pub mod envoy_routes;
pub mod virtual_service;
