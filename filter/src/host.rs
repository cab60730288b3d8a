//! proxy-wasm glue (wasm32 only): read host values, call the core, write results.
//!
//! One [`Root`] per worker VM (and one per plugin configuration): it compiles the
//! configuration in `on_configure` and hands the plan, its counter ids and the
//! worker's PRNG to each request's [`Request`] context through `Rc`s.

use crate::choose::Rng;
use crate::grpc_body::{self, MessageHost, Outcome};
use crate::grpc_frame::{IdScanner, INVALID_ARGUMENT};
use crate::hold::{HoldWatch, Holding, WATCH_TICK_MILLIS};
use crate::host_body;
use crate::plan::{Plan, CONFIG_REJECTED_COUNTER, OVERRIDE_IGNORED_COUNTER};
use crate::route::{route, Decision, RequestHeaders, Rewrite};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> { Box::new(Root::new(context_id)) });
}}

/// A compiled plan with the host's ids of its per-member counters.
struct Active {
    plan: Plan,
    /// Indexed by `Member::counter_index`; `None` where the host refused the metric.
    request_counters: Box<[Option<u32>]>,
    override_ignored: Option<u32>,
}

struct Root {
    active: Option<Rc<Active>>,
    rng: Rc<Cell<Rng>>,
    /// Whether this worker's Envoy passes the body while headers are held (crate::hold).
    watch: Rc<RefCell<HoldWatch>>,
}

impl Root {
    fn new(context_id: u32) -> Root {
        // The one host call for randomness in this worker's life.
        let nanos = hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64);
        Root {
            active: None,
            rng: Rc::new(Cell::new(Rng::from_host(nanos, context_id))),
            watch: Rc::default(),
        }
    }
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        // Defined up front so that `/stats` shows it, at 0, from the first configuration on.
        let rejected = counter(CONFIG_REJECTED_COUNTER);
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match Plan::from_json(&bytes) {
            Ok(plan) => {
                let request_counters = plan.counter_names().map(|n| counter(&n)).collect();
                log(
                    LogLevel::Info,
                    &format!(
                        "modelsplit: configured {} groups with {} members",
                        plan.groups().len(),
                        plan.member_count()
                    ),
                );
                self.active = Some(Rc::new(Active {
                    plan,
                    request_counters,
                    override_ignored: counter(OVERRIDE_IGNORED_COUNTER),
                }));
                true
            }
            Err(reason) => {
                log(
                    LogLevel::Error,
                    &format!(
                        "modelsplit: rejected configuration: {reason}; keeping the previous one"
                    ),
                );
                increment(rejected);
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let expired = self.watch.borrow_mut().expired(now_nanos());
        if self.watch.borrow_mut().report_broken() {
            log(
                LogLevel::Error,
                "modelsplit: Envoy did not pass a held gRPC call's body to the filter within 1 s: \
                 the Wasm filter needs `allow_on_headers_stop_iteration: true` in its PluginConfig \
                 (Envoy 1.35 and later; Istio's WasmPlugin cannot set it). Until then this worker \
                 routes gRPC calls by the mm-vmodel-id header only, and a group named in \
                 model_name is not split",
            );
        }
        for context in expired {
            if !host_body::set_effective_context(context) {
                continue;
            }
            // Routed by its headers alone, as if it had never been held.
            let mut routed = None;
            if let Some(active) = &self.active {
                let mut rng = self.rng.get();
                let decision = route(&active.plan, &mut rng, &CurrentHeaders);
                self.rng.set(rng);
                if let Some(decision) = decision {
                    if apply_header_decision(active, &decision).is_some() {
                        routed = count(active, &decision);
                    }
                }
            }
            self.watch.borrow_mut().release(context, routed);
            host_body::resume_request();
        }
        if !self.watch.borrow().watching() {
            let _ = hostcalls::set_tick_period(Duration::ZERO);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            id: context_id,
            watch: Rc::clone(&self.watch),
            active: self.active.clone(),
            rng: Rc::clone(&self.rng),
            routed: None,
            message: None,
            buffered: 0,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    id: u32,
    watch: Rc<RefCell<HoldWatch>>,
    /// `None` only before a first valid configuration: then everything passes through.
    active: Option<Rc<Active>>,
    rng: Rc<Cell<Rng>>,
    /// (group, member) chosen for this request, for the response header.
    routed: Option<(usize, usize)>,
    /// Set while a KServe v2 gRPC call waits for its message's id field.
    message: Option<IdScanner>,
    /// Body bytes buffered at the last body callback (the trailers callback has no size).
    buffered: usize,
}

impl Request {
    /// Counts a decision already applied to the request and remembers it for the response.
    fn count(&mut self, active: &Active, decision: &Decision) {
        self.routed = count(active, decision).or(self.routed);
    }

    /// A body callback (or the trailers: `end_of_stream`) of a call waiting for its message.
    fn on_message(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let (Some(active), Some(mut scanner)) = (self.active.clone(), self.message.take()) else {
            return Action::Continue;
        };
        if !self.watch.borrow_mut().body_arrived(self.id) {
            return Action::Continue; // released by the watch: routed by its headers already
        }
        self.buffered = body_size;
        let mut rng = self.rng.get();
        let host = HostMessage {
            request: self,
            body_size,
        };
        let outcome =
            grpc_body::on_body(&active.plan, &mut rng, &mut scanner, &host, end_of_stream);
        self.rng.set(rng);
        match outcome {
            Outcome::Wait => {
                self.message = Some(scanner);
                Action::Pause
            }
            Outcome::Continue(decision) => {
                if let Some(decision) = decision {
                    self.count(&active, &decision);
                }
                Action::Continue
            }
            Outcome::Reject(message) => {
                log(LogLevel::Debug, &message);
                host_body::send_grpc_error(
                    INVALID_ARGUMENT,
                    &message,
                    "modelsplit_invalid_grpc_request",
                );
                Action::Pause
            }
        }
    }
}

/// The body phase's view of the request: headers through the host, the body buffered so far.
struct HostMessage<'a> {
    request: &'a Request,
    body_size: usize,
}

impl RequestHeaders for HostMessage<'_> {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.request.get_http_request_header_bytes(name)
    }
}

impl MessageHost for HostMessage<'_> {
    fn set_request_header(&self, name: &str, value: &[u8]) {
        // Envoy clears the route cache on any request header change, also in the body
        // phase: the request, whose headers wait, is then routed as the member.
        self.request
            .set_http_request_header_bytes(name, Some(value));
    }
    fn remove_request_header(&self, name: &str) {
        self.request.set_http_request_header_bytes(name, None);
    }
    fn buffered(&self) -> usize {
        self.body_size
    }
    fn read_body(&self, start: usize, len: usize) -> Vec<u8> {
        host_body::read_request_body(start, len)
    }
    fn replace_body_prefix(&self, len: usize, with: &[u8]) -> bool {
        host_body::replace_request_body_prefix(len, with)
    }
}

/// Header reads through the host, as bytes so that non-UTF-8 values never fail.
struct HostHeaders<'a>(&'a Request);

impl RequestHeaders for HostHeaders<'_> {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.0.get_http_request_header_bytes(name)
    }
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(active) = self.active.clone() else {
            return Action::Continue;
        };
        // KServe v2 gRPC calls name their model in the message: wait for it (this needs
        // `allow_on_headers_stop_iteration` in the Wasm plugin configuration).
        if grpc_body::waits_for_message(&active.plan, &HostHeaders(self), end_of_stream) {
            // The clock is read only while this worker still has to find out (crate::hold).
            let now = match self.watch.borrow().state() {
                Holding::Unknown => now_nanos(),
                Holding::Works | Holding::Broken => 0,
            };
            let hold = self.watch.borrow_mut().hold(self.id, now);
            if let Some(watched) = hold {
                if watched {
                    let _ = hostcalls::set_tick_period(Duration::from_millis(WATCH_TICK_MILLIS));
                }
                self.message = Some(IdScanner::new());
                return Action::Pause;
            }
        }
        let mut rng = self.rng.get();
        let decision = route(&active.plan, &mut rng, &HostHeaders(self));
        self.rng.set(rng);
        let Some(decision) = decision else {
            return Action::Continue;
        };
        if apply_header_decision(&active, &decision).is_some() {
            self.count(&active, &decision);
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.on_message(body_size, end_of_stream)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // Trailers end the request: a message still incomplete is truncated.
        self.on_message(self.buffered, true)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.routed.is_none() {
            self.routed = self.watch.borrow_mut().take_released(self.id).flatten();
        }
        let (Some(active), Some((group, member))) = (&self.active, self.routed) else {
            return Action::Continue;
        };
        let Some(header) = active.plan.routed_header() else {
            return Action::Continue;
        };
        if let Some(member) = active.plan.group(group).and_then(|g| g.members.get(member)) {
            // Set, not add: exactly one value, which an upstream cannot forge.
            self.set_http_response_header_bytes(header, Some(member.name.as_bytes()));
        }
        Action::Continue
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        self.watch.borrow_mut().gone(self.id);
    }
}

/// Header reads of the effective context (from the root's tick).
struct CurrentHeaders;

impl RequestHeaders for CurrentHeaders {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
    }
}

/// Applies a header-route decision to the current request (changing a request header
/// makes Envoy clear the route cache: the request is then routed as the member) and
/// counts it; returns where it went.
fn apply_header_decision(active: &Active, decision: &Decision) -> Option<(usize, usize)> {
    let member = decision.member_in(&active.plan)?;
    let (name, value): (&str, &[u8]) = match &decision.rewrite {
        Rewrite::Path(path) => (":path", path),
        Rewrite::ModelHeader | Rewrite::MessageId => {
            (active.plan.grpc_header(), member.name.as_bytes())
        }
    };
    let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, Some(value));
    Some((decision.group, decision.member))
}

/// Counts a decision applied to a request; returns where it went.
fn count(active: &Active, decision: &Decision) -> Option<(usize, usize)> {
    if decision.override_ignored {
        increment(active.override_ignored);
    }
    let member = decision.member_in(&active.plan)?;
    increment(
        active
            .request_counters
            .get(member.counter_index)
            .copied()
            .flatten(),
    );
    Some((decision.group, decision.member))
}

fn now_nanos() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Defines (or finds: Envoy keeps one counter per name) a counter.
fn counter(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Counter, name).ok()
}

fn increment(counter: Option<u32>) {
    if let Some(id) = counter {
        let _ = hostcalls::increment_metric(id, 1);
    }
}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}
