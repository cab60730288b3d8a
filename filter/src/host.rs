//! proxy-wasm glue (wasm32 only): the [`Host`] over proxy-wasm's ABI, and the SDK's
//! root and HTTP contexts forwarding to [`crate::filter`].
//!
//! The host is called through the raw ABI, not through the SDK's `hostcalls`: those
//! return `Result` but panic on any status they do not expect, and with
//! `panic = "abort"` a panic kills the worker's VM. Here every status other than the
//! documented ones becomes a [`HostError`]. Statuses are read as `u32`, never as an
//! enum, so a status number unknown to this build is an error too, not undefined
//! behaviour.
//!
//! One [`Root`] per worker VM and configuration (Envoy makes a new root context for
//! each configuration it pushes); its [`Worker`] is shared with the root's HTTP
//! contexts through an `Rc<RefCell<_>>` (borrowed with `try_borrow_mut`: a busy
//! borrow, impossible on the single-threaded VM, would pass the request through).

use crate::filter::{Flow, Stream, VmState, Worker};
use crate::headers::HeaderBlock;
use crate::host_api::{Host, HostError, Level};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::cell::{Cell, RefCell};
use std::ptr::{null, null_mut};
use std::rc::Rc;

proxy_wasm::main! {{
    // No `proxy_wasm::set_log_level`: its logger and panic hook unwrap host statuses.
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> { Box::new(Root::new(context_id)) });
}}

thread_local! {
    /// What this VM remembers across its root contexts.
    static VM: Cell<VmState> = const {
        Cell::new(VmState { configured_before: false })
    };
}

// proxy-wasm ABI 0.2.1 status codes and enum values.
const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const MAP_REQUEST_HEADERS: u32 = 0;
const MAP_RESPONSE_HEADERS: u32 = 2;
const MAP_RESPONSE_TRAILERS: u32 = 3;
const BUFFER_HTTP_REQUEST_BODY: u32 = 0;
const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;
const STREAM_HTTP_REQUEST: u32 = 0;
const METRIC_COUNTER: u32 = 0;
const METRIC_HISTOGRAM: u32 = 2;
const LOG_INFO: u32 = 2;
const LOG_WARN: u32 = 3;
const LOG_ERROR: u32 = 4;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
}

fn status(code: u32) -> Result<(), HostError> {
    match code {
        OK => Ok(()),
        other => Err(HostError(other)),
    }
}

/// Takes ownership of bytes the host wrote into module memory. The host allocates
/// them through the SDK's `proxy_on_memory_allocate` (a boxed `[u8]` of exactly
/// `size` bytes), which is why they are reclaimed as a `Vec` of that capacity.
fn host_bytes(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        return Vec::new();
    }
    // SAFETY: `data` was allocated by `proxy_on_memory_allocate(size)` for this call
    // and handed to us; nothing else holds it.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

/// proxy-wasm's host: the calls apply to the context the host is currently calling.
struct ProxyWasm;

impl ProxyWasm {
    fn get_header(&self, map: u32, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        // SAFETY: pointers to a live `str` and to two locals, as the ABI asks.
        let code = unsafe {
            proxy_get_header_map_value(map, name.as_ptr(), name.len(), &mut data, &mut size)
        };
        match code {
            OK => Ok(Some(host_bytes(data, size))),
            NOT_FOUND => Ok(None),
            other => Err(HostError(other)),
        }
    }

    fn get_buffer(
        &self,
        buffer: u32,
        start: usize,
        len: usize,
    ) -> Result<Option<Vec<u8>>, HostError> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        // SAFETY: pointers to two locals, as the ABI asks.
        let code = unsafe { proxy_get_buffer_bytes(buffer, start, len, &mut data, &mut size) };
        match code {
            OK if data.is_null() => Ok(None),
            OK => Ok(Some(host_bytes(data, size))),
            NOT_FOUND => Ok(None),
            other => Err(HostError(other)),
        }
    }

    fn set_header(&self, map: u32, name: &str, value: &[u8]) -> Result<(), HostError> {
        // SAFETY: pointers to a live `str` and slice with their lengths.
        status(unsafe {
            proxy_replace_header_map_value(
                map,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        })
    }
}

impl Host for ProxyWasm {
    fn request_headers(&self) -> Result<HeaderBlock, HostError> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        // SAFETY: pointers to two locals, as the ABI asks.
        let code = unsafe { proxy_get_header_map_pairs(MAP_REQUEST_HEADERS, &mut data, &mut size) };
        match code {
            OK => Ok(HeaderBlock::new(host_bytes(data, size))),
            NOT_FOUND => Ok(HeaderBlock::default()),
            other => Err(HostError(other)),
        }
    }

    fn request_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        self.get_header(MAP_REQUEST_HEADERS, name)
    }

    fn set_request_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.set_header(MAP_REQUEST_HEADERS, name, value)
    }

    fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
        // SAFETY: pointer to a live `str` with its length.
        let code = unsafe {
            proxy_remove_header_map_value(MAP_REQUEST_HEADERS, name.as_ptr(), name.len())
        };
        match code {
            OK | NOT_FOUND => Ok(()),
            other => Err(HostError(other)),
        }
    }

    fn request_body(&self, start: usize, len: usize) -> Result<Vec<u8>, HostError> {
        Ok(self
            .get_buffer(BUFFER_HTTP_REQUEST_BODY, start, len)?
            .unwrap_or_default())
    }

    fn replace_request_body_prefix(&self, len: usize, with: &[u8]) -> Result<(), HostError> {
        // SAFETY: pointer to a live slice with its length. Envoy, at offset 0: drain
        // `len` bytes, then prepend `with`.
        status(unsafe {
            proxy_set_buffer_bytes(BUFFER_HTTP_REQUEST_BODY, 0, len, with.as_ptr(), with.len())
        })
    }

    fn send_grpc_error(
        &self,
        grpc_status: u32,
        message: &str,
        details: &str,
    ) -> Result<(), HostError> {
        let grpc_status = i32::try_from(grpc_status).unwrap_or(2); // 2: UNKNOWN
                                                                   // SAFETY: pointers to live `str`s with their lengths; no headers (null, 0) is
                                                                   // an empty map. Envoy sends `message` as `grpc-message` of a trailers-only
                                                                   // response when `grpc_status` is set.
        status(unsafe {
            proxy_send_local_response(
                200,
                details.as_ptr(),
                details.len(),
                message.as_ptr(),
                message.len(),
                null(),
                0,
                grpc_status,
            )
        })
    }

    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError> {
        // SAFETY: no pointers.
        status(unsafe { proxy_set_effective_context(context_id) })
    }

    fn resume_request(&self) -> Result<(), HostError> {
        // SAFETY: no pointers.
        status(unsafe { proxy_continue_stream(STREAM_HTTP_REQUEST) })
    }

    fn set_response_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.set_header(MAP_RESPONSE_HEADERS, name, value)
    }

    fn response_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        self.get_header(MAP_RESPONSE_HEADERS, name)
    }

    fn response_trailer(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        self.get_header(MAP_RESPONSE_TRAILERS, name)
    }

    fn define_counter(&self, name: &str) -> Result<u32, HostError> {
        let mut id = 0u32;
        // SAFETY: pointer to a live `str` and to a local.
        status(unsafe { proxy_define_metric(METRIC_COUNTER, name.as_ptr(), name.len(), &mut id) })?;
        Ok(id)
    }

    fn add_to_counter(&self, id: u32, delta: u64) -> Result<(), HostError> {
        let delta = i64::try_from(delta).unwrap_or(i64::MAX);
        // SAFETY: no pointers.
        status(unsafe { proxy_increment_metric(id, delta) })
    }

    fn define_histogram(&self, name: &str) -> Result<u32, HostError> {
        let mut id = 0u32;
        // SAFETY: pointer to a live `str` and to a local.
        status(unsafe {
            proxy_define_metric(METRIC_HISTOGRAM, name.as_ptr(), name.len(), &mut id)
        })?;
        Ok(id)
    }

    fn record_in_histogram(&self, id: u32, value: u64) -> Result<(), HostError> {
        // SAFETY: no pointers.
        status(unsafe { proxy_record_metric(id, value) })
    }

    fn now_nanos(&self) -> Result<u64, HostError> {
        let mut nanos = 0u64;
        // SAFETY: pointer to a local.
        status(unsafe { proxy_get_current_time_nanoseconds(&mut nanos) })?;
        Ok(nanos)
    }

    fn set_tick_period(&self, millis: u32) -> Result<(), HostError> {
        // SAFETY: no pointers.
        status(unsafe { proxy_set_tick_period_milliseconds(millis) })
    }

    fn plugin_configuration(&self) -> Result<Option<Vec<u8>>, HostError> {
        self.get_buffer(BUFFER_PLUGIN_CONFIGURATION, 0, usize::MAX)
    }

    fn log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Info => LOG_INFO,
            Level::Warn => LOG_WARN,
            Level::Error => LOG_ERROR,
        };
        // SAFETY: pointer to a live `str` with its length. A failing log has nowhere to go.
        let _ = unsafe { proxy_log(level, message.as_ptr(), message.len()) };
    }
}

struct Root {
    worker: Rc<RefCell<Worker>>,
}

impl Root {
    fn new(context_id: u32) -> Root {
        Root {
            worker: Rc::new(RefCell::new(Worker::new(&ProxyWasm, context_id))),
        }
    }
}

impl Context for Root {
    fn on_done(&mut self) -> bool {
        if let Ok(mut worker) = self.worker.try_borrow_mut() {
            worker.done(&ProxyWasm);
        }
        true
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let Ok(mut worker) = self.worker.try_borrow_mut() else {
            return false;
        };
        let mut vm = VM.with(Cell::get);
        let accepted = worker.configure(&ProxyWasm, &mut vm).accepted();
        VM.with(|cell| cell.set(vm));
        accepted
    }

    fn on_tick(&mut self) {
        if let Ok(mut worker) = self.worker.try_borrow_mut() {
            worker.tick(&ProxyWasm);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            worker: Rc::clone(&self.worker),
            stream: Stream::new(context_id),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    worker: Rc<RefCell<Worker>>,
    stream: Stream,
}

impl Context for Request {}

impl Drop for Request {
    fn drop(&mut self) {
        if let Ok(mut worker) = self.worker.try_borrow_mut() {
            worker.on_stream_done(&ProxyWasm, &mut self.stream);
        }
    }
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        match self.worker.try_borrow_mut() {
            Ok(mut worker) => {
                action(worker.on_request_headers(&ProxyWasm, &mut self.stream, end_of_stream))
            }
            Err(_) => Action::Continue,
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match self.worker.try_borrow_mut() {
            Ok(mut worker) => action(worker.on_request_body(
                &ProxyWasm,
                &mut self.stream,
                body_size,
                end_of_stream,
            )),
            Err(_) => Action::Continue,
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        match self.worker.try_borrow_mut() {
            Ok(mut worker) => action(worker.on_request_trailers(&ProxyWasm, &mut self.stream)),
            Err(_) => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if let Ok(mut worker) = self.worker.try_borrow_mut() {
            worker.on_response_headers(&ProxyWasm, &mut self.stream, end_of_stream);
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        if let Ok(mut worker) = self.worker.try_borrow_mut() {
            worker.on_response_trailers(&ProxyWasm, &mut self.stream);
        }
        Action::Continue
    }
}
