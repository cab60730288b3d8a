//! Bytes the filter copies between Envoy and the Wasm VM for one gRPC ModelInfer call,
//! per case: the same body-phase code the filter runs (`grpc_body::on_body`), over a
//! host that counts what it hands out and takes in, and its host calls (header
//! lookups are not host calls: the filter reads all headers once, at the headers
//! callback). Printed as a Markdown table (BENCHMARKS.md, "gRPC by model_name").
//!
//! `cargo run -q -p modelsplit-filter --example grpc_copies`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use modelsplit_filter::choose::Rng;
use modelsplit_filter::grpc_body::{on_body, MessageHost, Outcome};
use modelsplit_filter::grpc_frame::IdScanner;
use modelsplit_filter::host_api::HostError;
use modelsplit_filter::plan::Plan;
use modelsplit_filter::route::RequestHeaders;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

struct Counting {
    headers: RefCell<HashMap<String, Vec<u8>>>,
    body: RefCell<Vec<u8>>,
    buffered: Cell<usize>,
    read: Cell<usize>,
    written: Cell<usize>,
    calls: Cell<usize>,
}

impl RequestHeaders for Counting {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        // Module memory in the filter (headers::HeaderBlock), not a host call.
        self.headers.borrow().get(name).cloned()
    }
}

impl MessageHost for Counting {
    fn set_request_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.calls.set(self.calls.get() + 1);
        self.written.set(self.written.get() + value.len());
        self.headers
            .borrow_mut()
            .insert(name.to_string(), value.to_vec());
        Ok(())
    }
    fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
        self.calls.set(self.calls.get() + 1);
        self.headers.borrow_mut().remove(name);
        Ok(())
    }
    fn buffered(&self) -> usize {
        self.buffered.get()
    }
    fn read_body(&self, start: usize, len: usize) -> Result<Vec<u8>, HostError> {
        self.calls.set(self.calls.get() + 1);
        let body = self.body.borrow();
        let end = (start + len).min(self.buffered.get());
        let out = body.get(start..end).unwrap_or_default().to_vec();
        self.read.set(self.read.get() + out.len());
        Ok(out)
    }
    fn replace_body_prefix(&self, len: usize, with: &[u8]) -> Result<(), HostError> {
        self.calls.set(self.calls.get() + 1);
        self.written.set(self.written.get() + with.len());
        self.body.borrow_mut().splice(..len, with.iter().copied());
        Ok(())
    }
}

fn field(number: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![number << 3 | 2];
    let mut n = value.len();
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(value);
    out
}

fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

fn main() {
    let plan = Plan::from_json(
        br#"{"groups":[{"namespace":"apps","name":"ai-model",
            "members":[{"name":"ai-model-one","weight":80},{"name":"ai-model-two","weight":20}]}]}"#,
    )
    .expect("plan");
    let tensor = |n: usize| field(7, &vec![0x5a; n]);
    let first = |n: usize| frame(&[field(1, b"ai-model"), field(3, b"id"), tensor(n)].concat());
    let none = |n: usize| frame(&[field(3, b"id"), tensor(n)].concat());
    let last = |n: usize| frame(&[field(3, b"id"), tensor(n), field(1, b"ai-model")].concat());
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "group in model_name (field 1 first), 1 KiB",
            first(1024),
            false,
        ),
        (
            "group in model_name (field 1 first), 1 MiB",
            first(1 << 20),
            false,
        ),
        (
            "group in mm-vmodel-id, model_name empty, 1 KiB",
            none(1024),
            true,
        ),
        (
            "group in mm-vmodel-id, model_name empty, 1 MiB",
            none(1 << 20),
            true,
        ),
        (
            "group in model_name after a 512 KiB tensor",
            last(512 << 10),
            false,
        ),
    ];
    println!(
        "| case | body | bytes read into the VM | bytes written back | host calls (body phase) |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (label, body, header) in cases {
        let mut headers = HashMap::new();
        headers.insert(
            ":path".to_string(),
            b"/inference.GRPCInferenceService/ModelInfer".to_vec(),
        );
        headers.insert("content-type".to_string(), b"application/grpc".to_vec());
        if header {
            headers.insert("mm-vmodel-id".to_string(), b"ai-model".to_vec());
        }
        let len = body.len();
        let host = Counting {
            headers: RefCell::new(headers),
            body: RefCell::new(body),
            buffered: Cell::new(0),
            read: Cell::new(0),
            written: Cell::new(0),
            calls: Cell::new(0),
        };
        let mut scanner = IdScanner::new();
        let mut rng = Rng::new(1);
        // Envoy hands the body over in chunks (HTTP/2 DATA frames of up to 16 KiB).
        loop {
            host.buffered.set((host.buffered.get() + 16_384).min(len));
            let end = host.buffered.get() == len;
            match on_body(&plan, &mut rng, &mut scanner, &host, end) {
                Ok(Outcome::Wait) if !end => continue,
                Ok(Outcome::Continue(Some(_))) => break,
                other => panic!("{label}: {other:?}"),
            }
        }
        println!(
            "| {label} | {len} | {} | {} | {} |",
            host.read.get(),
            host.written.get(),
            host.calls.get()
        );
    }
}
