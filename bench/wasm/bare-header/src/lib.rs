//! The floor of any wasm gRPC split: read the model header `mm-vmodel-id` (one host
//! call) and, when present, write a fixed member into it (one host call, which also
//! makes Envoy clear the route cache and route again). No content-type check, no
//! choice, no counters, no response header.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

/// Where every rewritten request goes: the first member's gRPC route in the bench routes.
const FIXED_MEMBER: &[u8] = b"ai-model-one";

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request;

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.get_http_request_header_bytes("mm-vmodel-id").is_some() {
            self.set_http_request_header_bytes("mm-vmodel-id", Some(FIXED_MEMBER));
        }
        Action::Continue
    }
}
