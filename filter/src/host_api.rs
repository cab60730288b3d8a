//! Everything the filter asks of its host, behind one small trait.
//!
//! [`crate::filter`] (the per-worker and per-request logic) talks to the host only
//! through [`Host`]; `host.rs` implements it with proxy-wasm's ABI (wasm32 only) and
//! the tests with a recording mock, which asserts the exact sequence of host calls
//! per request. Every method returns the host's unexpected status as a
//! [`HostError`] instead of panicking: with `panic = "abort"` a panic would kill the
//! worker's VM, and with it every request on that worker.

use crate::headers::HeaderBlock;
use std::fmt;

/// The host answered with a status the filter did not expect (the raw proxy-wasm
/// status code: 2 bad argument, 10 internal failure, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError(pub u32);

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unexpected host status {}", self.0)
    }
}

/// Log levels the filter uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// The host: one request's headers and body (the host knows which request is current,
/// and a root context can make another current), counters and histograms, the clock,
/// the worker's tick and logging.
///
/// Methods take `&self`: the proxy-wasm host has no state on the module's side, and
/// the mock records through interior mutability.
pub trait Host {
    /// All request headers, in one call (what the request path uses).
    fn request_headers(&self) -> Result<HeaderBlock, HostError>;
    /// A request header's value as bytes; `Ok(None)` when the request has no such header.
    fn request_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError>;
    /// Sets (replaces) a request header. Changing a request header makes Envoy clear
    /// the route cache, so the request is routed again.
    fn set_request_header(&self, name: &str, value: &[u8]) -> Result<(), HostError>;
    /// Removes a request header (no error when it is absent).
    fn remove_request_header(&self, name: &str) -> Result<(), HostError>;
    /// Up to `len` bytes of the request body buffered so far, from `start` (fewer at
    /// the end of what is buffered).
    fn request_body(&self, start: usize, len: usize) -> Result<Vec<u8>, HostError>;
    /// Replaces the first `len` bytes of the buffered request body with `with` (Envoy:
    /// drain `len`, prepend `with`; the rest of the body is not copied).
    fn replace_request_body_prefix(&self, len: usize, with: &[u8]) -> Result<(), HostError>;
    /// Answers the request with a trailers-only gRPC response (HTTP 200, `grpc-status`
    /// and `message` as `grpc-message`) instead of sending it upstream. `details` is
    /// Envoy's response code detail (`%RESPONSE_CODE_DETAILS%` in access logs).
    fn send_grpc_error(
        &self,
        grpc_status: u32,
        message: &str,
        details: &str,
    ) -> Result<(), HostError>;
    /// Makes `context_id` the context later calls act on (a root context's tick acting
    /// on one of its requests); fails when that context is gone.
    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError>;
    /// Resumes the current request, held since its headers.
    fn resume_request(&self) -> Result<(), HostError>;
    /// Sets (replaces) a response header.
    fn set_response_header(&self, name: &str, value: &[u8]) -> Result<(), HostError>;
    /// A response header's value; `Ok(None)` when the response has no such header.
    fn response_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError>;
    /// A response trailer's value; `Ok(None)` when there is no such trailer.
    fn response_trailer(&self, name: &str) -> Result<Option<Vec<u8>>, HostError>;
    /// Defines a counter (or finds it: the host keeps one per name) and returns its id.
    fn define_counter(&self, name: &str) -> Result<u32, HostError>;
    /// Adds `delta` to a counter.
    fn add_to_counter(&self, id: u32, delta: u64) -> Result<(), HostError>;
    /// Defines a histogram (or finds it: the host keeps one per name) and returns its id.
    fn define_histogram(&self, name: &str) -> Result<u32, HostError>;
    /// Records one value in a histogram.
    fn record_in_histogram(&self, id: u32, value: u64) -> Result<(), HostError>;
    /// The host's wall clock, in nanoseconds since the Unix epoch.
    fn now_nanos(&self) -> Result<u64, HostError>;
    /// Asks for a tick on this root context every `millis` milliseconds.
    fn set_tick_period(&self, millis: u32) -> Result<(), HostError>;
    /// The plugin configuration; `Ok(None)` when there is none.
    fn plugin_configuration(&self) -> Result<Option<Vec<u8>>, HostError>;
    /// Writes one log line (best effort: a failing log cannot be reported anywhere).
    fn log(&self, level: Level, message: &str);
}
