//! proxy-wasm calls for the body phase (wasm32 only), returning failures instead of
//! panicking as the SDK's wrappers do (with `panic = "abort"` a panic would stop the
//! worker's VM): read and replace the buffered request body, answer a gRPC error.

use proxy_wasm::types::{BufferType, Status};
use std::ptr::{null, null_mut};

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_buffer_bytes(
        buffer_type: BufferType,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> Status;
    fn proxy_set_buffer_bytes(
        buffer_type: BufferType,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> Status;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> Status;
}

/// Up to `len` bytes of the buffered request body from `start`; empty on any failure.
pub fn read_request_body(start: usize, len: usize) -> Vec<u8> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer to `size` bytes it allocated in this module's
    // memory with its allocator (proxy_on_memory_allocate), which we then own.
    unsafe {
        match proxy_get_buffer_bytes(
            BufferType::HttpRequestBody,
            start,
            len,
            &mut data,
            &mut size,
        ) {
            Status::Ok if !data.is_null() => Vec::from_raw_parts(data, size, size),
            _ => Vec::new(),
        }
    }
}

/// Replaces the first `len` bytes of the buffered request body with `with`
/// (Envoy: drain `len`, then prepend). False when the host refuses.
pub fn replace_request_body_prefix(len: usize, with: &[u8]) -> bool {
    // SAFETY: `with` is valid for `with.len()` bytes for the duration of the call.
    unsafe {
        matches!(
            proxy_set_buffer_bytes(
                BufferType::HttpRequestBody,
                0,
                len,
                with.as_ptr(),
                with.len()
            ),
            Status::Ok
        )
    }
}

/// Answers the request with a trailers-only gRPC response: `grpc_status` and
/// `message` (Envoy percent-encodes it into `grpc-message`). `details` is Envoy's
/// response code detail (access logs: `%RESPONSE_CODE_DETAILS%`).
pub fn send_grpc_error(grpc_status: u32, message: &str, details: &str) -> bool {
    // SAFETY: the pointers are valid for their lengths for the duration of the call;
    // no headers (null, 0) is an empty map.
    unsafe {
        matches!(
            proxy_send_local_response(
                200,
                details.as_ptr(),
                details.len(),
                message.as_ptr(),
                message.len(),
                null(),
                0,
                grpc_status as i32,
            ),
            Status::Ok
        )
    }
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_continue_stream(stream_type: proxy_wasm::types::StreamType) -> Status;
    fn proxy_set_effective_context(context_id: u32) -> Status;
}

/// Makes `context` the one later calls act on (from a root context's tick); false
/// when it is gone.
pub fn set_effective_context(context: u32) -> bool {
    // SAFETY: a plain call with an integer argument.
    unsafe { matches!(proxy_set_effective_context(context), Status::Ok) }
}

/// Resumes the effective context's held request.
pub fn resume_request() -> bool {
    // SAFETY: a plain call with an enum argument.
    unsafe {
        matches!(
            proxy_continue_stream(proxy_wasm::types::StreamType::HttpRequest),
            Status::Ok
        )
    }
}
