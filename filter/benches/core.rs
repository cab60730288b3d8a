//! The filter's core natively: the per-request decision (classify + choose, the
//! rewritten path included) for random, sticky, override and gRPC requests, and
//! compiling a 10,000-group configuration (time, and the plan's heap memory).
//!
//! Run: `cargo bench -p modelsplit-filter --bench core` (scripts/bench.sh runs it and
//! puts the figures in BENCHMARKS.md). Host calls are not part of this: see
//! bench/dataplane.py for the cost inside Envoy.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use modelsplit_filter::choose::{How, Rng};
use modelsplit_filter::plan::Plan;
use modelsplit_filter::route::{route, RequestHeaders};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts live heap bytes, to measure what a compiled plan holds.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A configuration as the controller writes it: `groups` groups of 3 members over 100
/// namespaces, plus the measured group `apps/ai-model` (80/20, sticky on `x-user-id`).
fn config_json(groups: usize) -> String {
    let mut out = String::from(
        r#"{"groups":[{"namespace":"apps","name":"ai-model","stickyHeader":"x-user-id","members":[{"name":"ai-model-one","weight":8000},{"name":"ai-model-two","weight":2000}]}"#,
    );
    for i in 0..groups.saturating_sub(1) {
        let (ns, name) = (format!("ns-{:03}", i % 100), format!("model-{i:05}"));
        out.push_str(&format!(
            r#",{{"namespace":"{ns}","name":"{name}","members":[{{"name":"{name}-a","weight":5000}},{{"name":"{name}-b","weight":3000}},{{"name":"{name}-c","weight":2000}}]}}"#
        ));
    }
    out.push_str("]}");
    out
}

/// Request headers as a small list; values are copied out, as the host's are.
struct Headers(Vec<(&'static str, &'static [u8])>);

impl RequestHeaders for Headers {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_vec())
    }
}

const PATH: &[u8] = b"/modelmesh/apps/v2/models/ai-model/infer";

fn decisions(c: &mut Criterion) {
    let cases: [(&str, Headers, Option<How>); 5] = [
        (
            "random",
            Headers(vec![(":path", PATH)]),
            Some(How::Weighted),
        ),
        (
            "sticky",
            Headers(vec![(":path", PATH), ("x-user-id", b"user-4711")]),
            Some(How::Sticky),
        ),
        (
            "override",
            Headers(vec![
                (":path", PATH),
                ("x-modelsplit-member", b"ai-model-two"),
            ]),
            Some(How::Override),
        ),
        (
            "grpc",
            Headers(vec![
                (":path", b"/inference.GRPCInferenceService/ModelInfer"),
                ("content-type", b"application/grpc"),
                ("mm-vmodel-id", b"ai-model"),
            ]),
            Some(How::Weighted),
        ),
        (
            "not-a-group",
            Headers(vec![(":path", b"/api/v1/other")]),
            None,
        ),
    ];
    for groups in [10, 10_000] {
        let plan = Plan::from_json(config_json(groups).as_bytes()).expect("valid config");
        let mut group = c.benchmark_group(format!("decide/{groups}-groups"));
        for (name, headers, how) in &cases {
            let mut rng = Rng::new(42);
            // A benchmark of the wrong path would be worthless: check it first.
            assert_eq!(
                route(&plan, &mut rng, headers).map(|d| d.how),
                *how,
                "{name}"
            );
            group.bench_function(*name, |b| {
                b.iter(|| route(black_box(&plan), &mut rng, black_box(headers)))
            });
        }
        group.finish();
    }
}

fn compile(c: &mut Criterion) {
    let json = config_json(10_000);
    let before = LIVE.load(Ordering::Relaxed);
    let plan = Plan::from_json(json.as_bytes()).expect("valid config");
    let held = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "plan memory, 10,000 groups / {} members: {held} bytes on the heap ({} bytes per member); configuration JSON {} bytes",
        plan.member_count(),
        held / plan.member_count(),
        json.len()
    );
    drop(plan);
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    let base = LIVE.load(Ordering::Relaxed);
    drop(Plan::from_json(json.as_bytes()).expect("valid config"));
    println!(
        "compile peak heap above the JSON text: {} bytes",
        PEAK.load(Ordering::Relaxed) - base
    );

    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    group.bench_function("10000-groups", |b| {
        b.iter_batched(
            || json.clone(),
            |json| Plan::from_json(json.as_bytes()),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, decisions, compile);
criterion_main!(benches);
