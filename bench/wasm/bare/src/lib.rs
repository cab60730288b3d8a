//! The floor of any wasm REST split: read `:path` (one host call) and, for a path
//! under `/modelmesh/`, write a fixed `:path` (one host call, which also makes
//! Envoy clear the route cache and route again). No parsing, no choice, no
//! counters, no response header.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

/// Where every rewritten request goes: the first member's route in the bench routes.
const FIXED_PATH: &[u8] = b"/modelmesh/apps/v2/models/ai-model-one/infer";

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
        let is_candidate = self
            .get_http_request_header_bytes(":path")
            .is_some_and(|path| path.starts_with(b"/modelmesh/"));
        if is_candidate {
            self.set_http_request_header_bytes(":path", Some(FIXED_PATH));
        }
        Action::Continue
    }
}
