//! The filter's life over a [`Host`]: configuration, ticks and requests.
//!
//! One [`Worker`] per root context (one per worker VM and configuration) holds the
//! compiled plan, the worker's PRNG, its pending counters and its watch over held
//! requests ([`crate::hold`]); one [`Stream`] per HTTP request remembers the member
//! chosen, for the response header, and, while a KServe v2 gRPC call waits for its
//! message, what its body phase needs. `host.rs` forwards proxy-wasm's callbacks here;
//! the tests drive the same code with a recording mock host and assert the host calls
//! each kind of request makes.
//!
//! Host calls per request (the cost budget, asserted in the tests below):
//!
//! - request headers: one read of all of them (`proxy_get_header_map_pairs`; the
//!   lookups of `:path`, `content-type`, the gRPC, override and sticky headers are
//!   then made in module memory, each only when the request needs it: see
//!   [`crate::route`]); then, for a group request, one write (`:path` or the gRPC
//!   header);
//! - a KServe v2 gRPC call with a body (`ModelInfer`, `ModelMetadata`, `ModelReady`,
//!   when some group has gRPC) makes no write at its headers: they are held
//!   ([`Flow::Pause`]) and its first message decides ([`crate::grpc_body`]). Its body
//!   callback reads the body once (up to [`crate::grpc_body::READ_AHEAD`] bytes: the
//!   id when it comes first, as encoders write it), then for a group in `model_name`
//!   replaces the message's prefix and sets the gRPC header (2 writes), for a group in
//!   the header only sets the header (1 write); the headers come from the block read
//!   before. While a worker does not know yet whether its host passes the body of a
//!   held request ([`crate::hold`]), a held call also reads the clock and the first one
//!   sets a faster tick;
//! - response headers: one write of the routed header (when configured), only for a
//!   request that was routed;
//! - counters: none. They are added up in module memory and given to the host on the
//!   worker's tick ([`TICK_MILLIS`]), when the configuration changes and when the
//!   root context is done.
//!
//! An unexpected host status never panics: the request passes through unchanged (no
//! write is made after a failed read, and nothing more after a failed write) and is
//! counted in `modelsplit.host_error`.

use crate::choose::Rng;
use crate::counters::{self, Counters, FIXED_SLOTS, HOST_ERROR, OVERRIDE_IGNORED};
use crate::grpc_body::{self, MessageHost, Outcome};
use crate::grpc_frame::{IdScanner, INVALID_ARGUMENT};
use crate::headers::HeaderBlock;
use crate::hold::{HoldWatch, Holding, WATCH_TICK_MILLIS};
use crate::host_api::{Host, HostError, Level};
use crate::plan::{
    GroupId, Plan, CONFIG_REJECTED_COUNTER, HOST_ERROR_COUNTER, OVERRIDE_IGNORED_COUNTER,
};
use crate::route::{route, Decision, RequestHeaders, Rewrite};
use std::rc::Rc;

/// How often each worker gives its pending counts to the host. A request shows in
/// Envoy's `/stats` at most one tick later (plus however late the worker's event
/// loop runs the timer); the README promises at most 1 s.
pub const TICK_MILLIS: u32 = 500;
const _: () = assert!(
    TICK_MILLIS <= 1000,
    "the README promises at most 1 s of lag"
);

/// Envoy's response code detail of a call the filter answers with `INVALID_ARGUMENT`.
pub const INVALID_GRPC_REQUEST: &str = "modelsplit_invalid_grpc_request";

/// Logged once per worker when a held call's body did not come within 1 s.
pub const HOLD_BROKEN_MESSAGE: &str = "modelsplit: Envoy did not pass a held gRPC call's body \
    to the filter within 1 s: the Wasm filter needs `allow_on_headers_stop_iteration: true` in \
    its PluginConfig (Envoy 1.35 and later; Istio's WasmPlugin cannot set it). Until then this \
    worker routes gRPC calls by the mm-vmodel-id header only, and a group named in model_name \
    is not split";

/// What one root context keeps.
#[derive(Debug)]
pub struct Worker {
    /// `None` until a configuration was accepted: everything then passes through
    /// without a host call.
    plan: Option<Rc<Plan>>,
    counters: Counters,
    rng: Rng,
    /// Whether the tick timer is set (set on the first `configure`).
    ticking: bool,
    /// Whether a request-path host error was logged already (logged once per worker).
    host_error_logged: bool,
    /// The root context's id (a tick that acted on a request makes the root current again).
    context_id: u32,
    /// Does the host pass the body of a held request? Requests released by the watch
    /// keep what their response header needs here.
    hold: HoldWatch<Option<Routed>>,
    /// Whether the tick runs at [`WATCH_TICK_MILLIS`] while held requests are watched.
    watch_ticking: bool,
}

/// What the host should do with the request after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on.
    Continue,
    /// Stop here: at the headers, hold them (`StopIteration`); at the body, buffer it
    /// and wait for more (`StopIterationAndBuffer`); after a local reply, stop.
    Pause,
}

/// One HTTP request's state between its request and response headers.
#[derive(Debug, Default)]
pub struct Stream {
    /// The HTTP context's id (the hold watch knows held requests by it).
    id: u32,
    routed: Option<Routed>,
    /// Set while a KServe v2 gRPC call's headers are held for its first message.
    held: Option<Box<Held>>,
}

impl Stream {
    /// The state of the HTTP context `context_id`.
    pub fn new(context_id: u32) -> Stream {
        Stream {
            id: context_id,
            ..Stream::default()
        }
    }
}

/// A call waiting for its first message: the plan that held it, its headers (read
/// once, at the headers callback), where the reading stands.
#[derive(Debug)]
struct Held {
    plan: Rc<Plan>,
    headers: HeaderBlock,
    scanner: IdScanner,
    /// Body bytes buffered at the last body callback (the trailers callback has no size).
    buffered: usize,
}

/// The member chosen for a request, for the response header.
#[derive(Debug)]
struct Routed {
    plan: Rc<Plan>,
    group: GroupId,
    member: usize,
}

/// What `configure` made of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Configured {
    /// A valid configuration is in force.
    Accepted,
    /// Refused (invalid, or missing: absent or only whitespace); `configure` returns false and Envoy keeps the previous configuration.
    Rejected,
}

/// What one VM remembers across its root contexts (Envoy makes a root context per
/// configuration, and more than one on the main thread).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VmState {
    /// Whether this VM ever accepted a configuration: a refusal then keeps a previous one.
    pub configured_before: bool,
}

impl Configured {
    /// What `on_configure` answers the host.
    pub fn accepted(self) -> bool {
        self != Configured::Rejected
    }
}

impl Worker {
    /// A worker whose PRNG is seeded from the host's clock and the root context id
    /// (requests never ask for the time, except held ones while [`crate::hold`] watches).
    pub fn new(host: &impl Host, context_id: u32) -> Worker {
        let nanos = host.now_nanos().unwrap_or(0);
        Worker {
            plan: None,
            counters: Counters::default(),
            rng: Rng::from_host(nanos, context_id),
            ticking: false,
            host_error_logged: false,
            context_id,
            hold: HoldWatch::default(),
            watch_ticking: false,
        }
    }

    /// What the worker knows about its host's handling of held requests.
    pub fn holding(&self) -> Holding {
        self.hold.state()
    }

    /// The plan in force, if any.
    pub fn plan(&self) -> Option<&Plan> {
        self.plan.as_deref()
    }

    /// Counts not yet given to the host (slots of [`crate::counters`]).
    pub fn pending(&self, slot: usize) -> u64 {
        self.counters.pending(slot)
    }

    /// Reads, checks and installs the plugin configuration.
    ///
    /// An invalid or missing (absent, empty, only whitespace) configuration is refused
    /// with one log line naming the reason: at error level when the VM accepted a
    /// configuration before (Envoy keeps that one), at warn level at start, when there
    /// is none. Each refusal is counted in `modelsplit.config_rejected`.
    pub fn configure(&mut self, host: &impl Host, vm: &mut VmState) -> Configured {
        if !self.ticking {
            self.ticking = host.set_tick_period(TICK_MILLIS).is_ok();
            if !self.ticking {
                host.log(
                    Level::Warn,
                    "modelsplit: the host refused a tick period; counters reach /stats only when the configuration changes or the worker stops",
                );
            }
        }
        // Defined up front so that `/stats` shows them, at 0, from the first configuration on.
        let rejected = host.define_counter(CONFIG_REJECTED_COUNTER).ok();
        let host_error = host.define_counter(HOST_ERROR_COUNTER).ok();
        let count = |id: Option<u32>| {
            if let Some(id) = id {
                let _ = host.add_to_counter(id, 1);
            }
        };

        let bytes = match host.plugin_configuration() {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(error) => {
                host.log(
                    Level::Error,
                    &format!("modelsplit: rejected configuration: the host did not hand it over ({error})"),
                );
                count(host_error);
                count(rejected);
                return Configured::Rejected;
            }
        };
        let parsed = if bytes.iter().all(u8::is_ascii_whitespace) {
            Err("there is no configuration (the plugin configuration is empty)".to_string())
        } else {
            Plan::from_json(&bytes).map_err(|e| e.to_string())
        };
        match parsed {
            Ok(plan) => {
                host.log(
                    Level::Info,
                    &format!(
                        "modelsplit: configured {} groups with {} members",
                        plan.groups().len(),
                        plan.member_count()
                    ),
                );
                self.install(host, plan, host_error);
                vm.configured_before = true;
                Configured::Accepted
            }
            Err(reason) => {
                if vm.configured_before {
                    host.log(
                        Level::Error,
                        &format!("modelsplit: rejected configuration: {reason}; keeping the previous one"),
                    );
                } else {
                    host.log(
                        Level::Warn,
                        &format!("modelsplit: rejected configuration at start: {reason}; there is no previous one, so Envoy does not run the filter (see the filter README)"),
                    );
                }
                count(rejected);
                Configured::Rejected
            }
        }
    }

    /// Flushes the old plan's counts, then makes `plan` the one in force with its counters.
    fn install(&mut self, host: &impl Host, plan: Plan, host_error: Option<u32>) {
        self.counters.flush(host);
        let mut ids = Vec::with_capacity(FIXED_SLOTS + plan.member_count());
        ids.push(host_error);
        ids.push(host.define_counter(OVERRIDE_IGNORED_COUNTER).ok());
        ids.extend(
            plan.counter_names()
                .map(|name| host.define_counter(&name).ok()),
        );
        self.counters = Counters::new(ids.into_boxed_slice());
        self.plan = Some(Rc::new(plan));
    }

    /// The worker's tick: releases held requests that waited too long for their body
    /// (while watched), then gives the pending counts to the host.
    pub fn tick(&mut self, host: &impl Host) {
        if self.hold.watching() {
            self.release_late(host);
        }
        if self.watch_ticking && !self.hold.watching() {
            // Nothing watched any more: back to the counters' period.
            self.watch_ticking = false;
            let _ = host.set_tick_period(TICK_MILLIS);
        }
        self.counters.flush(host);
    }

    /// Held requests without a body callback after [`crate::hold::HOLD_LIMIT_NANOS`]:
    /// the host does not pass the body to a filter that holds the headers. Each is
    /// routed by its headers alone and resumed; the worker holds nothing from then on
    /// (logged once).
    fn release_late(&mut self, host: &impl Host) {
        let now = match host.now_nanos() {
            Ok(now) => now,
            Err(error) => {
                self.report(host, error, "watching held gRPC calls");
                return;
            }
        };
        let late = self.hold.expired(now);
        if self.hold.report_broken() {
            host.log(Level::Error, HOLD_BROKEN_MESSAGE);
        }
        if late.is_empty() {
            return;
        }
        for context in late {
            // Fails when the request is gone: nothing to release.
            if host.set_effective_context(context).is_err() {
                continue;
            }
            let routed = match (self.plan.clone(), host.request_headers()) {
                (Some(plan), Ok(headers)) => self.route_by_headers(host, &plan, &headers),
                (None, _) => None,
                (Some(_), Err(error)) => {
                    self.report(host, error, "reading a held request's headers");
                    None
                }
            };
            self.hold.release(context, routed);
            if let Err(error) = host.resume_request() {
                self.report(host, error, "resuming a held request");
            }
        }
        let _ = host.set_effective_context(self.context_id);
    }

    /// The root context is done (configuration replaced, or the VM stops): flush.
    pub fn done(&mut self, host: &impl Host) {
        self.counters.flush(host);
    }

    /// A request's headers: decide, rewrite, count. Never fails the request: whatever
    /// goes wrong, the request continues (unchanged if nothing was written yet).
    /// A KServe v2 gRPC call with a body is held instead ([`Flow::Pause`]) until its
    /// first message is read ([`Worker::on_request_body`]), unless the worker found
    /// out that its host does not pass the body of held requests.
    pub fn on_request_headers(
        &mut self,
        host: &impl Host,
        stream: &mut Stream,
        end_of_stream: bool,
    ) -> Flow {
        let Some(plan) = self.plan.clone() else {
            return Flow::Continue;
        };
        let headers = match host.request_headers() {
            Ok(headers) => headers,
            Err(error) => {
                self.report(host, error, "reading the request headers");
                return Flow::Continue;
            }
        };
        if grpc_body::waits_for_message(&plan, &headers, end_of_stream)
            && self.may_hold(host, stream)
        {
            stream.held = Some(Box::new(Held {
                plan,
                headers,
                scanner: IdScanner::new(),
                buffered: 0,
            }));
            return Flow::Pause;
        }
        stream.routed = self.route_by_headers(host, &plan, &headers);
        Flow::Continue
    }

    /// May this request be held? Registers it with the watch while the worker does not
    /// know yet whether its host passes the body of held requests (then the clock is
    /// read, and the first one sets the faster tick that releases late ones).
    fn may_hold(&mut self, host: &impl Host, stream: &Stream) -> bool {
        let now = match self.hold.state() {
            Holding::Unknown => match host.now_nanos() {
                Ok(now) => now,
                Err(error) => {
                    self.report(host, error, "reading the clock to hold a gRPC call");
                    return false;
                }
            },
            Holding::Works | Holding::Broken => 0,
        };
        match self.hold.hold(stream.id, now) {
            None => false,
            Some(false) => true,
            Some(true) => {
                if !self.watch_ticking {
                    self.watch_ticking = host.set_tick_period(WATCH_TICK_MILLIS).is_ok();
                }
                if !self.watch_ticking && !self.ticking {
                    // No tick at all: a held request could never be released.
                    self.hold.gone(stream.id);
                    return false;
                }
                true
            }
        }
    }

    /// Routes the current request by its headers: decide, rewrite, count. Returns what
    /// the response header needs (`None`: not routed, or no routed header configured).
    fn route_by_headers(
        &mut self,
        host: &impl Host,
        plan: &Rc<Plan>,
        headers: &HeaderBlock,
    ) -> Option<Routed> {
        let decision = route(plan, &mut self.rng, headers)?;
        if decision.override_ignored {
            self.counters.count(OVERRIDE_IGNORED);
        }
        let member = decision.member_in(plan)?;
        let written = match &decision.rewrite {
            Rewrite::Path(path) => host.set_request_header(":path", path),
            Rewrite::ModelHeader | Rewrite::MessageId => {
                host.set_request_header(plan.grpc_header(), member.name.as_bytes())
            }
        };
        if let Err(error) = written {
            self.report(host, error, "rewriting the request");
            return None;
        }
        self.counters
            .count(counters::member_slot(member.counter_index));
        Routed::for_response(plan, &decision)
    }

    /// A body callback. Only a held call does anything: its first message is read as
    /// it arrives ([`grpc_body::on_body`]) and decides; [`Flow::Pause`] buffers more,
    /// or stops a call answered with `INVALID_ARGUMENT`. Host calls are made only for a
    /// held call, so other requests' bodies cost nothing.
    pub fn on_request_body(
        &mut self,
        host: &impl Host,
        stream: &mut Stream,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        let Some(held) = stream.held.as_deref_mut() else {
            return Flow::Continue;
        };
        if !self.hold.body_arrived(stream.id) {
            // Released by the watch: routed by its headers already; the body is not ours.
            stream.held = None;
            return Flow::Continue;
        }
        held.buffered = body_size;
        let message = Message {
            host,
            headers: &held.headers,
            buffered: body_size,
        };
        let outcome = grpc_body::on_body(
            &held.plan,
            &mut self.rng,
            &mut held.scanner,
            &message,
            end_of_stream,
        );
        if outcome == Ok(Outcome::Wait) {
            return Flow::Pause;
        }
        let Some(held) = stream.held.take() else {
            return Flow::Continue;
        };
        match outcome {
            Ok(Outcome::Wait | Outcome::Continue(None)) => Flow::Continue,
            Ok(Outcome::Continue(Some(decision))) => {
                if decision.override_ignored {
                    self.counters.count(OVERRIDE_IGNORED);
                }
                if let Some(member) = decision.member_in(&held.plan) {
                    self.counters
                        .count(counters::member_slot(member.counter_index));
                }
                stream.routed = Routed::for_response(&held.plan, &decision);
                Flow::Continue
            }
            Ok(Outcome::Reject(message)) => {
                match host.send_grpc_error(INVALID_ARGUMENT, &message, INVALID_GRPC_REQUEST) {
                    Ok(()) => Flow::Pause,
                    Err(error) => {
                        self.report(host, error, "answering a malformed gRPC call");
                        Flow::Continue
                    }
                }
            }
            Err(error) => {
                self.report(host, error, "reading or rewriting a gRPC request message");
                Flow::Continue
            }
        }
    }

    /// The request's trailers: the body is complete (a message still incomplete is
    /// truncated).
    pub fn on_request_trailers(&mut self, host: &impl Host, stream: &mut Stream) -> Flow {
        let Some(buffered) = stream.held.as_ref().map(|held| held.buffered) else {
            return Flow::Continue;
        };
        self.on_request_body(host, stream, buffered, true)
    }

    /// A response's headers: name the member that served a routed request.
    pub fn on_response_headers(&mut self, host: &impl Host, stream: &mut Stream) {
        let routed = match stream.routed.take() {
            Some(routed) => routed,
            // A request the watch released was routed in the worker's tick.
            None => match self.hold.take_released(stream.id) {
                Some(Some(routed)) => routed,
                _ => return,
            },
        };
        let (Some(header), Some(member)) = (
            routed.plan.routed_header(),
            routed
                .plan
                .group(routed.group)
                .and_then(|g| g.members.get(routed.member)),
        ) else {
            return;
        };
        // Set, not add: exactly one value, which an upstream cannot forge.
        if let Err(error) = host.set_response_header(header, member.name.as_bytes()) {
            self.report(host, error, "setting the response header");
        }
    }

    /// The request is finished: the watch forgets it.
    pub fn on_stream_done(&mut self, stream: &Stream) {
        self.hold.gone(stream.id);
    }

    /// Counts a request-path host error; logs the first one of the worker.
    fn report(&mut self, host: &impl Host, error: HostError, doing: &str) {
        report(
            host,
            &mut self.counters,
            &mut self.host_error_logged,
            error,
            doing,
        );
    }
}

impl Routed {
    /// What the response header needs for a decision applied to a request; `None` when
    /// the plan sets no routed header.
    fn for_response(plan: &Rc<Plan>, decision: &Decision) -> Option<Routed> {
        plan.routed_header()?;
        Some(Routed {
            plan: Rc::clone(plan),
            group: decision.group,
            member: decision.member,
        })
    }
}

/// The body phase's view of a held call: its headers as read at the headers callback
/// (module memory), its body and header writes through the host.
struct Message<'a, H: Host> {
    host: &'a H,
    headers: &'a HeaderBlock,
    buffered: usize,
}

impl<H: Host> RequestHeaders for Message<'_, H> {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.headers.header(name)
    }
}

impl<H: Host> MessageHost for Message<'_, H> {
    fn set_request_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        // Envoy clears the route cache on a request header change in the body phase
        // too: the held request is then routed as the member when it resumes.
        self.host.set_request_header(name, value)
    }
    fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
        self.host.remove_request_header(name)
    }
    fn buffered(&self) -> usize {
        self.buffered
    }
    fn read_body(&self, start: usize, len: usize) -> Result<Vec<u8>, HostError> {
        self.host.request_body(start, len)
    }
    fn replace_body_prefix(&self, len: usize, with: &[u8]) -> Result<(), HostError> {
        self.host.replace_request_body_prefix(len, with)
    }
}

/// Counts a request-path host error; logs the first one of the worker.
fn report(
    host: &impl Host,
    counters: &mut Counters,
    logged: &mut bool,
    error: HostError,
    doing: &str,
) {
    counters.count(HOST_ERROR);
    if !*logged {
        *logged = true;
        host.log(
            Level::Warn,
            &format!("modelsplit: {error} while {doing}; the request passed through unchanged (counted in modelsplit.host_error; logged once per worker)"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::member_slot;
    use crate::hold::WATCH_TICK_MILLIS;
    use crate::mock_host::{Call, MockHost};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test;

    const CONFIG: &str = r#"{"groups":[
        {"namespace":"apps","name":"ai-model","stickyHeader":"x-user-id",
         "members":[{"name":"one","weight":80},{"name":"two","weight":20},{"name":"dark","weight":0}]},
        {"namespace":"apps","name":"plain","members":[{"name":"p1","weight":1},{"name":"p2","weight":1}]}]}"#;
    const PATH: &[u8] = b"/modelmesh/apps/v2/models/ai-model/infer";
    const ONE: &str = "modelsplit.requests.apps.ai-model.one";
    const TWO: &str = "modelsplit.requests.apps.ai-model.two";
    const DARK: &str = "modelsplit.requests.apps.ai-model.dark";
    const ROUTED: &str = "x-modelsplit-routed-to";
    /// The HTTP context id of the requests the tests send.
    const STREAM: u32 = 42;

    fn configured(config: &str) -> (MockHost, Worker) {
        let host = MockHost::with_config(config);
        let mut worker = Worker::new(&host, 7);
        let mut vm = VmState::default();
        assert_eq!(worker.configure(&host, &mut vm), Configured::Accepted);
        assert!(vm.configured_before);
        host.take_calls();
        (host, worker)
    }

    /// One request through the worker; returns (request calls, response calls).
    fn send(
        host: &MockHost,
        worker: &mut Worker,
        headers: &[(&str, &[u8])],
    ) -> (Vec<Call>, Vec<Call>) {
        host.request(headers);
        let mut stream = Stream::new(STREAM);
        assert_eq!(
            worker.on_request_headers(host, &mut stream, false),
            Flow::Continue
        );
        // Not held: its body callback makes no host call (the calls returned include it).
        assert_eq!(
            worker.on_request_body(host, &mut stream, 100, true),
            Flow::Continue
        );
        let request = host.take_calls();
        worker.on_response_headers(host, &mut stream);
        worker.on_stream_done(&stream);
        (request, host.take_calls())
    }

    fn routed_to(host: &MockHost) -> String {
        String::from_utf8(host.response_header_value(ROUTED).unwrap()).unwrap()
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn configure_sets_the_tick_defines_every_counter_and_reads_the_configuration_once() {
        let host = MockHost::with_config(CONFIG);
        let mut worker = Worker::new(&host, 7);
        assert_eq!(host.take_calls(), [Call::Now]);
        assert!(worker.configure(&host, &mut VmState::default()).accepted());
        let define = |n: &str| Call::DefineCounter(n.to_string());
        let calls = host.take_calls();
        assert_eq!(
            calls[..7],
            [
                Call::SetTickPeriod(TICK_MILLIS),
                define("modelsplit.config_rejected"),
                define("modelsplit.host_error"),
                Call::PluginConfiguration,
                Call::Log(
                    Level::Info,
                    "modelsplit: configured 2 groups with 5 members".into()
                ),
                define("modelsplit.override_ignored"),
                define(ONE),
            ]
        );
        assert_eq!(
            calls[7..],
            [
                define(TWO),
                define(DARK),
                define("modelsplit.requests.apps.plain.p1"),
                define("modelsplit.requests.apps.plain.p2")
            ]
        );
        // A second configuration of the same root: no second tick period.
        worker.configure(&host, &mut configured_vm());
        assert!(!host
            .take_calls()
            .contains(&Call::SetTickPeriod(TICK_MILLIS)));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn rest_group_request_makes_four_calls_and_one_response_write() {
        let (host, mut worker) = configured(CONFIG);
        let (request, response) = send(&host, &mut worker, &[(":path", PATH)]);
        let member = routed_to(&host);
        let rewritten = format!("/modelmesh/apps/v2/models/{member}/infer");
        assert_eq!(
            request,
            [Call::GetRequestHeaders, Call::set(":path", &rewritten)]
        );
        assert_eq!(response, [Call::respond(ROUTED, &member)]);
        assert!(["one", "two"].contains(&member.as_str()));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn a_group_without_sticky_header_and_overrides_off_reads_only_the_path() {
        let config = r#"{"groups":[{"namespace":"apps","name":"ai-model",
            "members":[{"name":"one","weight":1},{"name":"dark","weight":0}]}],
            "overrideHeader":"","routedHeader":""}"#;
        let (host, mut worker) = configured(config);
        let (request, response) = send(
            &host,
            &mut worker,
            &[(":path", PATH), ("x-modelsplit-member", b"dark")],
        );
        assert_eq!(
            request,
            [
                Call::GetRequestHeaders,
                Call::set(":path", "/modelmesh/apps/v2/models/one/infer")
            ],
            "overrides are off: the override header names nobody"
        );
        assert_eq!(response, [], "no response header configured");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn sticky_request_reads_the_key_and_pins_the_member() {
        let (host, mut worker) = configured(CONFIG);
        let headers: &[(&str, &[u8])] = &[(":path", PATH), ("x-user-id", b"alice")];
        let (request, response) = send(&host, &mut worker, headers);
        let member = routed_to(&host);
        assert_eq!(
            request,
            [
                Call::GetRequestHeaders,
                Call::set(
                    ":path",
                    &format!("/modelmesh/apps/v2/models/{member}/infer")
                ),
            ]
        );
        assert_eq!(response, [Call::respond(ROUTED, &member)]);
        for _ in 0..50 {
            send(&host, &mut worker, headers);
            assert_eq!(routed_to(&host), member);
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn override_naming_a_member_skips_the_sticky_read() {
        let (host, mut worker) = configured(CONFIG);
        let (request, response) = send(
            &host,
            &mut worker,
            &[
                (":path", PATH),
                ("x-modelsplit-member", b"dark"),
                ("x-user-id", b"alice"),
            ],
        );
        assert_eq!(
            request,
            [
                Call::GetRequestHeaders,
                Call::set(":path", "/modelmesh/apps/v2/models/dark/infer"),
            ]
        );
        assert_eq!(response, [Call::respond(ROUTED, "dark")]);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn override_naming_a_non_member_is_counted_and_then_sticky_decides() {
        let (host, mut worker) = configured(CONFIG);
        let (request, _) = send(
            &host,
            &mut worker,
            &[(":path", PATH), ("x-modelsplit-member", b"p1")],
        );
        assert_eq!(request.len(), 2, "{request:?}");
        assert_eq!(worker.pending(OVERRIDE_IGNORED), 1);
        worker.tick(&host);
        assert!(host
            .take_calls()
            .contains(&Call::add("modelsplit.override_ignored", 1)));
        assert_eq!(host.counter("modelsplit.override_ignored"), 1);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn grpc_request_reads_content_type_and_model_header_then_sets_the_model() {
        // A gRPC service other than KServe v2 (ModelMesh serves any by mm-vmodel-id):
        // routed at its headers, never held.
        let (host, mut worker) = configured(CONFIG);
        let (request, response) = send(
            &host,
            &mut worker,
            &[
                (":path", b"/tensorflow.serving.PredictionService/Predict"),
                ("content-type", b"application/grpc"),
                ("mm-vmodel-id", b"ai-model"),
            ],
        );
        let member = routed_to(&host);
        assert_eq!(
            request,
            [Call::GetRequestHeaders, Call::set("mm-vmodel-id", &member)]
        );
        assert_eq!(response, [Call::respond(ROUTED, &member)]);
        assert_eq!(
            host.request_header_value("mm-vmodel-id").unwrap(),
            member.as_bytes()
        );
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn not_a_group_makes_one_read_and_nothing_else() {
        let (host, mut worker) = configured(CONFIG);
        let (request, response) = send(
            &host,
            &mut worker,
            &[
                (":path", b"/api/things"),
                ("content-type", b"application/json"),
                ("mm-vmodel-id", b"ai-model"),
            ],
        );
        assert_eq!(request, [Call::GetRequestHeaders]);
        assert_eq!(response, []);
        let (request, _) = send(
            &host,
            &mut worker,
            &[(":path", b"/modelmesh/apps/v2/models/unknown/infer")],
        );
        assert_eq!(request, [Call::GetRequestHeaders]);
        assert!(worker.counters.is_clean(), "nothing counted");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn counters_are_exact_after_a_flush_and_a_flush_makes_one_call_per_touched_counter() {
        let (host, mut worker) = configured(CONFIG);
        let mut routed = BTreeMap::new();
        for i in 0..1000u32 {
            let mut headers: Vec<(&str, &[u8])> = vec![(":path", PATH)];
            if i % 10 == 0 {
                headers.push(("x-modelsplit-member", b"dark"));
            }
            send(&host, &mut worker, &headers);
            *routed.entry(routed_to(&host)).or_insert(0u64) += 1;
        }
        assert_eq!(
            host.counter(ONE),
            0,
            "nothing reaches the host before the tick"
        );
        worker.tick(&host);
        let mut flush = host.take_calls();
        flush.sort_by_key(|c| format!("{c:?}"));
        let mut expected: Vec<Call> = routed
            .iter()
            .map(|(m, n)| Call::add(&format!("modelsplit.requests.apps.ai-model.{m}"), *n))
            .collect();
        expected.sort_by_key(|c| format!("{c:?}"));
        assert_eq!(flush, expected);
        assert_eq!(routed["dark"], 100);
        assert_eq!(
            host.counter(ONE) + host.counter(TWO) + host.counter(DARK),
            1000
        );
        for (member, n) in &routed {
            assert_eq!(
                host.counter(&format!("modelsplit.requests.apps.ai-model.{member}")),
                *n
            );
        }
        worker.tick(&host);
        assert_eq!(host.take_calls(), [], "an idle tick makes no host call");
        send(
            &host,
            &mut worker,
            &[(":path", PATH), ("x-modelsplit-member", b"two")],
        );
        worker.done(&host);
        assert_eq!(
            host.take_calls(),
            [Call::add(TWO, 1)],
            "flushed when the root is done"
        );
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn a_new_configuration_flushes_the_old_counts_first() {
        let (mut host, mut worker) = configured(CONFIG);
        send(
            &host,
            &mut worker,
            &[(":path", PATH), ("x-modelsplit-member", b"one")],
        );
        send(
            &host,
            &mut worker,
            &[(":path", PATH), ("x-modelsplit-member", b"one")],
        );
        host.config = Some(CONFIG.replace("\"one\"", "\"uno\"").into_bytes());
        assert!(worker.configure(&host, &mut configured_vm()).accepted());
        let calls = host.take_calls();
        let flushed = calls.iter().position(|c| *c == Call::add(ONE, 2)).unwrap();
        let defined = calls
            .iter()
            .position(|c| *c == Call::DefineCounter("modelsplit.requests.apps.ai-model.uno".into()))
            .unwrap();
        assert!(flushed < defined, "{calls:?}");
        send(
            &host,
            &mut worker,
            &[(":path", PATH), ("x-modelsplit-member", b"uno")],
        );
        worker.tick(&host);
        assert_eq!(
            host.take_calls(),
            [Call::add("modelsplit.requests.apps.ai-model.uno", 1)]
        );
        assert_eq!(host.counter(ONE), 2);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn a_failing_header_read_passes_the_request_through_and_counts_it() {
        let (host, mut worker) = configured(CONFIG);
        host.fail_when(|c| (*c == Call::GetRequestHeaders).then_some(2));
        let (request, response) = send(
            &host,
            &mut worker,
            &[(":path", PATH), ("x-user-id", b"alice")],
        );
        assert_eq!(request.len(), 2, "{request:?}");
        assert!(
            matches!(&request[1], Call::Log(Level::Warn, m) if m.contains("unexpected host status 2"))
        );
        assert_eq!(
            host.request_header_value(":path").unwrap(),
            PATH,
            "unchanged"
        );
        assert_eq!(response, []);
        // Logged once per worker, counted every time.
        let (request, _) = send(
            &host,
            &mut worker,
            &[(":path", PATH), ("x-user-id", b"alice")],
        );
        assert_eq!(request, [Call::GetRequestHeaders]);
        assert_eq!(worker.pending(HOST_ERROR), 2);
        worker.tick(&host);
        assert_eq!(host.counter("modelsplit.host_error"), 2);
        assert_eq!(host.counter(ONE) + host.counter(TWO), 0);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn a_failing_rewrite_or_response_write_counts_a_host_error_and_no_member() {
        let (host, mut worker) = configured(CONFIG);
        host.fail_when(|c| matches!(c, Call::SetRequestHeader(..)).then_some(10));
        let (_, response) = send(&host, &mut worker, &[(":path", PATH)]);
        assert_eq!(
            response,
            [],
            "no response header for a request that was not routed"
        );
        assert_eq!(worker.pending(HOST_ERROR), 1);

        host.fail_when(|c| matches!(c, Call::SetResponseHeader(..)).then_some(10));
        send(
            &host,
            &mut worker,
            &[(":path", PATH), ("x-modelsplit-member", b"two")],
        );
        assert_eq!(worker.pending(HOST_ERROR), 2);
        assert_eq!(
            worker.pending(member_slot(1)),
            1,
            "routed: the member counts"
        );
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn a_host_failing_every_call_never_panics() {
        for status in [1, 2, 3, 10, 12, 999] {
            let host = MockHost::with_config(CONFIG);
            host.fail_when(move |_| Some(status));
            let mut worker = Worker::new(&host, 1);
            assert_eq!(
                worker.configure(&host, &mut VmState::default()),
                Configured::Rejected
            );
            let host = MockHost::with_config(CONFIG);
            let mut worker = Worker::new(&host, 1);
            worker.configure(&host, &mut VmState::default());
            host.fail_when(move |_| Some(status));
            send(&host, &mut worker, &[(":path", PATH)]);
            worker.tick(&host);
            worker.tick(&host);
            worker.done(&host);
            assert_eq!(host.request_header_value(":path").unwrap(), PATH);
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn a_refused_counter_add_counts_a_host_error() {
        let (host, mut worker) = configured(CONFIG);
        send(
            &host,
            &mut worker,
            &[(":path", PATH), ("x-modelsplit-member", b"one")],
        );
        host.fail_when(|c| (*c == Call::add(ONE, 1)).then_some(2));
        worker.tick(&host);
        assert_eq!(host.counter("modelsplit.host_error"), 1);
        assert_eq!(host.counter(ONE), 0);
        assert!(worker.counters.is_clean());
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn a_missing_configuration_is_refused_like_an_invalid_one() {
        for config in [None, Some(""), Some(" \n")] {
            let host = MockHost::with_raw_config(config.map(str::as_bytes));
            let mut worker = Worker::new(&host, 1);
            let mut vm = VmState::default();
            assert_eq!(worker.configure(&host, &mut vm), Configured::Rejected);
            let warnings = host.logs(Level::Warn);
            assert_eq!(warnings.len(), 1);
            assert!(
                warnings[0].contains("rejected configuration at start: there is no configuration"),
                "{warnings:?}"
            );
            assert_eq!(host.counter("modelsplit.config_rejected"), 1);
            assert!(host.defined("modelsplit.host_error"));
            assert!(!vm.configured_before);
            let (request, response) = send(&host, &mut worker, &[(":path", PATH)]);
            assert_eq!((request, response), (vec![], vec![]), "no host call at all");
        }
        // Later (a previous configuration in force): at error level, and it keeps routing.
        let (mut host, mut worker) = configured(CONFIG);
        host.config = Some(Vec::new());
        assert_eq!(
            worker.configure(&host, &mut configured_vm()),
            Configured::Rejected
        );
        assert_eq!(host.logs(Level::Error).len(), 1);
        let (request, _) = send(&host, &mut worker, &[(":path", PATH)]);
        assert_eq!(request.len(), 2, "{request:?}");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn an_invalid_configuration_is_rejected_at_warn_at_start_and_at_error_later() {
        let invalid =
            r#"{"groups":[{"namespace":"a","name":"g","members":[{"name":"m","weight":0}]}]}"#;
        let host = MockHost::with_config(invalid);
        let mut worker = Worker::new(&host, 1);
        assert_eq!(
            worker.configure(&host, &mut VmState::default()),
            Configured::Rejected
        );
        let warnings = host.logs(Level::Warn);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains(
                "rejected configuration at start: group a/g: the member weights sum to 0"
            ),
            "{warnings:?}"
        );
        assert_eq!(host.counter("modelsplit.config_rejected"), 1);
        let (request, _) = send(
            &host,
            &mut worker,
            &[(":path", b"/modelmesh/a/v2/models/g")],
        );
        assert_eq!(request, []);

        let (mut host, mut worker) = configured(CONFIG);
        host.config = Some(invalid.as_bytes().to_vec());
        assert_eq!(
            worker.configure(&host, &mut configured_vm()),
            Configured::Rejected
        );
        let errors = host.logs(Level::Error);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].contains("rejected configuration: group a/g")
                && errors[0].ends_with("keeping the previous one")
        );
        assert_eq!(host.logs(Level::Warn), Vec::<String>::new());
        let (request, _) = send(&host, &mut worker, &[(":path", PATH)]);
        assert_eq!(
            request.len(),
            2,
            "the previous plan still routes: {request:?}"
        );
    }

    // --- KServe v2 gRPC calls: held for their first message (crate::grpc_body) ---

    const INFER: &[u8] = b"/inference.GRPCInferenceService/ModelInfer";
    const VMODEL: &str = "mm-vmodel-id";

    /// A length-delimited protobuf field (lengths under 128).
    fn field(number: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![number << 3 | 2, value.len() as u8];
        out.extend_from_slice(value);
        out
    }

    /// One uncompressed gRPC frame.
    fn frame(message: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    /// A ModelInferRequest body: `model_name`, then `tail` (other fields).
    fn infer_body(model_name: &[u8], tail: &[u8]) -> Vec<u8> {
        let mut message = field(1, model_name);
        message.extend_from_slice(tail);
        frame(&message)
    }

    /// A request's tail: `id` and a raw tensor.
    fn tail() -> Vec<u8> {
        let mut tail = field(3, b"req-1");
        tail.extend(field(7, &[9; 100]));
        tail
    }

    fn v2_call<'a>(extra: &[(&'a str, &'a [u8])]) -> Vec<(&'a str, &'a [u8])> {
        let mut headers = vec![(":path", INFER), ("content-type", &b"application/grpc"[..])];
        headers.extend_from_slice(extra);
        headers
    }

    fn header_text(host: &MockHost, name: &str) -> Option<String> {
        host.request_header_value(name)
            .map(|v| String::from_utf8(v).unwrap())
    }

    /// Starts a held call: its headers, expected to be held. Returns the headers' calls.
    fn hold(
        host: &MockHost,
        worker: &mut Worker,
        stream: &mut Stream,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) -> Vec<Call> {
        host.request(headers);
        *host.body.borrow_mut() = body.to_vec();
        assert_eq!(
            worker.on_request_headers(host, stream, false),
            Flow::Pause,
            "held"
        );
        host.take_calls()
    }

    /// One held call's whole life, the body in one callback: (headers, body, response)
    /// calls and what the body callback answered.
    fn held_call(
        host: &MockHost,
        worker: &mut Worker,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) -> (Vec<Call>, Vec<Call>, Vec<Call>, Flow) {
        let mut stream = Stream::new(STREAM);
        let at_headers = hold(host, worker, &mut stream, headers, body);
        let flow = worker.on_request_body(host, &mut stream, body.len(), true);
        let at_body = host.take_calls();
        worker.on_response_headers(host, &mut stream);
        worker.on_stream_done(&stream);
        (at_headers, at_body, host.take_calls(), flow)
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn a_group_in_model_name_is_held_read_rewritten_in_field_and_header_and_resumed() {
        let (host, mut worker) = configured(CONFIG);
        let body = infer_body(b"ai-model", &tail());
        let (at_headers, at_body, response, flow) =
            held_call(&host, &mut worker, &v2_call(&[]), &body);
        // The worker's first held call: the clock is read and the watch tick set.
        assert_eq!(
            at_headers,
            [
                Call::GetRequestHeaders,
                Call::Now,
                Call::SetTickPeriod(WATCH_TICK_MILLIS)
            ]
        );
        let member = header_text(&host, VMODEL).unwrap();
        assert!(["one", "two"].contains(&member.as_str()), "{member}");
        let old_prefix_len = 5 + 2 + b"ai-model".len();
        let mut new_prefix = frame(&field(1, member.as_bytes()));
        let message_len = (field(1, member.as_bytes()).len() + tail().len()) as u32;
        new_prefix[1..5].copy_from_slice(&message_len.to_be_bytes());
        assert_eq!(
            at_body,
            [
                Call::GetRequestBody(0, body.len().min(grpc_body::READ_AHEAD)),
                Call::ReplaceRequestBodyPrefix(old_prefix_len, new_prefix),
                Call::set(VMODEL, &member),
            ],
            "one body read, the field rewritten, the header set"
        );
        assert_eq!(flow, Flow::Continue, "resumed");
        assert_eq!(
            *host.body.borrow(),
            infer_body(member.as_bytes(), &tail()),
            "the message names the member; the rest is unchanged"
        );
        assert_eq!(response, [Call::respond(ROUTED, &member)]);
        assert_eq!(worker.holding(), Holding::Works);
        // The next tick: the member counted, and back to the counters' tick.
        worker.tick(&host);
        assert_eq!(
            host.take_calls(),
            [
                Call::SetTickPeriod(TICK_MILLIS),
                Call::add(&format!("modelsplit.requests.apps.ai-model.{member}"), 1)
            ]
        );

        // From then on: no clock, no tick change; split by weight, never to weight 0.
        let mut seen = BTreeMap::new();
        for _ in 0..400 {
            let (at_headers, at_body, response, flow) =
                held_call(&host, &mut worker, &v2_call(&[]), &body);
            let member = header_text(&host, VMODEL).unwrap();
            assert_eq!(at_headers, [Call::GetRequestHeaders]);
            assert_eq!(at_body.len(), 3, "{at_body:?}");
            assert_eq!(at_body[2], Call::set(VMODEL, &member));
            assert_eq!(response, [Call::respond(ROUTED, &member)]);
            assert_eq!(flow, Flow::Continue);
            *seen.entry(member).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen["one"] > seen["two"] * 2, "{seen:?}");
        worker.tick(&host);
        assert_eq!(host.counter(ONE) + host.counter(TWO), 401);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn override_and_sticky_choose_for_a_group_in_model_name() {
        let (host, mut worker) = configured(CONFIG);
        let body = infer_body(b"ai-model", &[]);
        let forced = v2_call(&[("x-modelsplit-member", b"dark")]);
        held_call(&host, &mut worker, &forced, &body);
        assert_eq!(header_text(&host, VMODEL).unwrap(), "dark");
        assert_eq!(*host.body.borrow(), infer_body(b"dark", &[]));
        let sticky = v2_call(&[("x-user-id", b"alice")]);
        held_call(&host, &mut worker, &sticky, &body);
        let first = header_text(&host, VMODEL).unwrap();
        for _ in 0..30 {
            held_call(&host, &mut worker, &sticky, &body);
            assert_eq!(header_text(&host, VMODEL).unwrap(), first);
        }
        // An override naming a non-member is counted, as at the headers.
        held_call(
            &host,
            &mut worker,
            &v2_call(&[("x-modelsplit-member", b"p1")]),
            &body,
        );
        assert_eq!(worker.pending(OVERRIDE_IGNORED), 1);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn a_model_name_that_names_no_group_is_left_alone() {
        let (host, mut worker) = configured(CONFIG);
        held_call(
            &host,
            &mut worker,
            &v2_call(&[]),
            &infer_body(b"ai-model", &[]),
        );
        host.take_calls();
        for name in [&b"some-isvc"[..], b"one", b"AI-MODEL", b""] {
            let body = infer_body(name, &tail());
            // No header: nothing written, nothing counted, no response header.
            let (at_headers, at_body, response, flow) =
                held_call(&host, &mut worker, &v2_call(&[]), &body);
            assert_eq!(at_headers, [Call::GetRequestHeaders]);
            assert_eq!(at_body, [Call::GetRequestBody(0, body.len())]);
            assert_eq!((response, flow), (vec![], Flow::Continue));
            assert_eq!(*host.body.borrow(), body, "unchanged");
            assert_eq!(header_text(&host, VMODEL), None);
            // The group in the header: the header is routed as before, the body untouched.
            let (_, at_body, response, _) = held_call(
                &host,
                &mut worker,
                &v2_call(&[(VMODEL, b"ai-model")]),
                &body,
            );
            let member = header_text(&host, VMODEL).unwrap();
            assert_eq!(
                at_body,
                [
                    Call::GetRequestBody(0, body.len()),
                    Call::set(VMODEL, &member)
                ]
            );
            assert_eq!(response, [Call::respond(ROUTED, &member)]);
            assert_eq!(*host.body.borrow(), body, "unchanged");
        }
        worker.tick(&host);
        assert_eq!(host.counter(ONE) + host.counter(TWO), 1 + 4);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn without_allow_on_headers_stop_iteration_a_held_call_is_released_after_1_s() {
        use crate::hold::HOLD_LIMIT_NANOS;
        let (host, mut worker) = configured(CONFIG);
        let headers = v2_call(&[(VMODEL, b"ai-model")]);
        let body = infer_body(b"ai-model", &[]);
        let mut stream = Stream::new(STREAM);
        hold(&host, &mut worker, &mut stream, &headers, &body);
        // Envoy without the setting never calls on_request_body for a held request.
        host.advance(HOLD_LIMIT_NANOS / 2);
        worker.tick(&host);
        assert_eq!(host.take_calls(), [Call::Now], "watched, not late yet");
        host.advance(HOLD_LIMIT_NANOS / 2);
        worker.tick(&host);
        let calls = host.take_calls();
        let member = header_text(&host, VMODEL).unwrap();
        assert_eq!(
            calls,
            [
                Call::Now,
                Call::Log(Level::Error, HOLD_BROKEN_MESSAGE.into()),
                Call::SetEffectiveContext(STREAM),
                Call::GetRequestHeaders,
                Call::set(VMODEL, &member),
                Call::ResumeRequest,
                Call::SetEffectiveContext(7),
                Call::SetTickPeriod(TICK_MILLIS),
                Call::add(&format!("modelsplit.requests.apps.ai-model.{member}"), 1),
            ],
            "released: routed by its header alone, resumed; the worker stops holding"
        );
        assert_eq!(worker.holding(), Holding::Broken);
        // If its body reaches the filter after all, it is left alone.
        assert_eq!(
            worker.on_request_body(&host, &mut stream, body.len(), true),
            Flow::Continue
        );
        assert_eq!(host.take_calls(), []);
        assert_eq!(*host.body.borrow(), body);
        worker.on_response_headers(&host, &mut stream);
        assert_eq!(host.take_calls(), [Call::respond(ROUTED, &member)]);
        worker.on_stream_done(&stream);

        // Later calls on this worker are routed at their headers, as before model names.
        let (request, response) = send(&host, &mut worker, &headers);
        let member = routed_to(&host);
        assert_eq!(
            request,
            [Call::GetRequestHeaders, Call::set(VMODEL, &member)]
        );
        assert_eq!(response, [Call::respond(ROUTED, &member)]);
        host.advance(10 * HOLD_LIMIT_NANOS);
        worker.tick(&host);
        assert_eq!(
            host.take_calls(),
            [Call::add(
                &format!("modelsplit.requests.apps.ai-model.{member}"),
                1
            )],
            "logged once; no more watching"
        );
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn late_calls_released_together_and_a_gone_one_is_skipped() {
        use crate::hold::HOLD_LIMIT_NANOS;
        let (host, mut worker) = configured(CONFIG);
        let body = infer_body(b"ai-model", &[]);
        let mut first = Stream::new(1);
        let mut second = Stream::new(2);
        let mut third = Stream::new(3);
        let calls = hold(&host, &mut worker, &mut first, &v2_call(&[]), &body);
        assert!(calls.contains(&Call::SetTickPeriod(WATCH_TICK_MILLIS)));
        let calls = hold(&host, &mut worker, &mut second, &v2_call(&[]), &body);
        assert_eq!(
            calls,
            [Call::GetRequestHeaders, Call::Now],
            "the watch tick is set once"
        );
        hold(&host, &mut worker, &mut third, &v2_call(&[]), &body);
        // The third is reset by its client: forgotten.
        worker.on_stream_done(&third);
        host.gone.borrow_mut().push(2);
        host.advance(HOLD_LIMIT_NANOS);
        worker.tick(&host);
        assert_eq!(
            host.take_calls()[1..],
            [
                Call::Log(Level::Error, HOLD_BROKEN_MESSAGE.into()),
                Call::SetEffectiveContext(1),
                Call::GetRequestHeaders,
                Call::ResumeRequest,
                Call::SetEffectiveContext(2),
                Call::SetEffectiveContext(7),
                Call::SetTickPeriod(TICK_MILLIS),
            ],
            "no group in its header: resumed unchanged; the gone one skipped"
        );
        worker.on_response_headers(&host, &mut first);
        assert_eq!(host.take_calls(), [], "not routed");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn a_message_in_chunks_waits_until_its_id_is_read_and_trailers_end_it() {
        let (host, mut worker) = configured(CONFIG);
        let body = infer_body(b"ai-model", &tail());
        let mut stream = Stream::new(STREAM);
        hold(&host, &mut worker, &mut stream, &v2_call(&[]), &body);
        assert_eq!(
            worker.on_request_body(&host, &mut stream, 3, false),
            Flow::Pause,
            "the frame header is not complete: buffer more"
        );
        assert_eq!(host.take_calls(), [Call::GetRequestBody(0, 3)]);
        assert_eq!(
            worker.on_request_body(&host, &mut stream, 12, false),
            Flow::Pause,
            "the id is not complete"
        );
        host.take_calls();
        assert_eq!(
            worker.on_request_body(&host, &mut stream, body.len(), false),
            Flow::Continue
        );
        assert_eq!(host.take_calls().len(), 3);

        // A request that ends (trailers) inside its message is answered INVALID_ARGUMENT.
        let mut stream = Stream::new(STREAM);
        hold(&host, &mut worker, &mut stream, &v2_call(&[]), &body);
        assert_eq!(
            worker.on_request_body(&host, &mut stream, 12, false),
            Flow::Pause
        );
        host.take_calls();
        assert_eq!(worker.on_request_trailers(&host, &mut stream), Flow::Pause);
        let calls = host.take_calls();
        // Read on from the field after the frame header, read at the first callback.
        assert!(
            matches!(&calls[..], [Call::GetRequestBody(5, 7), Call::SendGrpcError(3, m)]
                if m.contains("ended inside its first message")),
            "{calls:?}"
        );
        // Trailers of a request that is not held do nothing.
        assert_eq!(
            worker.on_request_trailers(&host, &mut stream),
            Flow::Continue
        );
        assert_eq!(host.take_calls(), []);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn malformed_and_compressed_messages_are_answered_invalid_argument() {
        let (host, mut worker) = configured(CONFIG);
        let mut malformed = infer_body(b"ai-model", &[]);
        malformed[5] = 0x08; // field 1 as a varint
        let (_, at_body, response, flow) = held_call(&host, &mut worker, &v2_call(&[]), &malformed);
        assert_eq!(flow, Flow::Pause, "answered: stop");
        assert!(
            matches!(&at_body[..], [Call::GetRequestBody(..), Call::SendGrpcError(3, m)]
                if m.contains("malformed gRPC request: field 1 (the model name) is not a string")),
            "{at_body:?}"
        );
        assert_eq!(response, []);
        let mut compressed = infer_body(b"ai-model", &[]);
        compressed[0] = 1;
        let (_, at_body, _, flow) = held_call(
            &host,
            &mut worker,
            &v2_call(&[("grpc-encoding", b"gzip")]),
            &compressed,
        );
        assert_eq!(flow, Flow::Pause);
        assert!(
            matches!(&at_body[..], [Call::GetRequestBody(..), Call::SendGrpcError(3, m)]
                if m.contains("compressed (grpc-encoding gzip)")),
            "{at_body:?}"
        );
        // Compressed with the group in the header: routed by the header alone.
        let (_, at_body, _, flow) = held_call(
            &host,
            &mut worker,
            &v2_call(&[("grpc-encoding", b"gzip"), (VMODEL, b"ai-model")]),
            &compressed,
        );
        assert_eq!(flow, Flow::Continue);
        assert_eq!(at_body.len(), 2, "{at_body:?}");
        assert_eq!(*host.body.borrow(), compressed);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn a_host_error_in_the_body_phase_lets_the_call_go_on_and_is_counted() {
        let (host, mut worker) = configured(CONFIG);
        let body = infer_body(b"ai-model", &tail());
        host.fail_when(|c| matches!(c, Call::GetRequestBody(..)).then_some(10));
        let (_, at_body, response, flow) = held_call(&host, &mut worker, &v2_call(&[]), &body);
        assert_eq!(flow, Flow::Continue);
        assert!(
            matches!(&at_body[..], [Call::GetRequestBody(..), Call::Log(Level::Warn, m)]
                if m.contains("unexpected host status 10 while reading or rewriting a gRPC request message")),
            "{at_body:?}"
        );
        assert_eq!(response, []);
        assert_eq!(worker.pending(HOST_ERROR), 1);
        host.fail_when(|c| matches!(c, Call::ReplaceRequestBodyPrefix(..)).then_some(10));
        let (_, at_body, _, flow) = held_call(&host, &mut worker, &v2_call(&[]), &body);
        assert_eq!(flow, Flow::Continue);
        assert_eq!(
            at_body.len(),
            2,
            "nothing more after the failed write: {at_body:?}"
        );
        assert_eq!(header_text(&host, VMODEL), None);
        assert_eq!(*host.body.borrow(), body);
        assert_eq!(worker.pending(HOST_ERROR), 2);
        host.fail_when(|c| matches!(c, Call::SendGrpcError(..)).then_some(10));
        let mut malformed = body.clone();
        malformed[5] = 0x08;
        let (_, _, _, flow) = held_call(&host, &mut worker, &v2_call(&[]), &malformed);
        assert_eq!(flow, Flow::Continue, "the answer failed: the call goes on");
        assert_eq!(worker.pending(HOST_ERROR), 3);
        assert!(worker.pending(member_slot(0)) + worker.pending(member_slot(1)) == 0);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn which_calls_are_held() {
        let (host, mut worker) = configured(CONFIG);
        // A v2 call without a body (end of stream at the headers): routed at once.
        host.request(&v2_call(&[(VMODEL, b"ai-model")]));
        let mut stream = Stream::new(STREAM);
        assert_eq!(
            worker.on_request_headers(&host, &mut stream, true),
            Flow::Continue
        );
        assert_eq!(host.take_calls().len(), 2);
        // ServerLive, gRPC-Web, REST: never held (send asserts Flow::Continue).
        for headers in [
            vec![
                (":path", &b"/inference.GRPCInferenceService/ServerLive"[..]),
                ("content-type", b"application/grpc"),
            ],
            vec![(":path", INFER), ("content-type", b"application/grpc-web")],
            vec![(":path", PATH), ("content-type", b"application/json")],
        ] {
            send(&host, &mut worker, &headers);
        }
        // No group with gRPC: never held.
        let config = r#"{"groups":[{"namespace":"apps","name":"ai-model","grpc":false,
            "members":[{"name":"one","weight":1}]}]}"#;
        let (host, mut worker) = configured(config);
        let (request, _) = send(&host, &mut worker, &v2_call(&[(VMODEL, b"ai-model")]));
        assert_eq!(request, [Call::GetRequestHeaders]);
        // No configuration: no host call at all.
        let host = MockHost::with_raw_config(None);
        let mut worker = Worker::new(&host, 1);
        host.take_calls();
        host.request(&v2_call(&[]));
        let mut stream = Stream::new(STREAM);
        assert_eq!(
            worker.on_request_headers(&host, &mut stream, false),
            Flow::Continue
        );
        assert_eq!(host.take_calls(), []);
    }

    /// The host-call budget per request, in a worker's steady state (filter/README.md).
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn host_calls_per_request_by_path() {
        let (host, mut worker) = configured(CONFIG);
        held_call(
            &host,
            &mut worker,
            &v2_call(&[]),
            &infer_body(b"ai-model", &[]),
        );
        worker.tick(&host);
        host.take_calls();
        let count = |(request, response): (Vec<Call>, Vec<Call>)| request.len() + response.len();
        let rest = count(send(&host, &mut worker, &[(":path", PATH)]));
        let grpc_other = count(send(
            &host,
            &mut worker,
            &[
                (":path", b"/tensorflow.serving.PredictionService/Predict"),
                ("content-type", b"application/grpc"),
                (VMODEL, b"ai-model"),
            ],
        ));
        let total =
            |(a, b, c, _): (Vec<Call>, Vec<Call>, Vec<Call>, Flow)| a.len() + b.len() + c.len();
        let by_header = total(held_call(
            &host,
            &mut worker,
            &v2_call(&[(VMODEL, b"ai-model")]),
            &infer_body(b"", &tail()),
        ));
        let by_model_name = total(held_call(
            &host,
            &mut worker,
            &v2_call(&[]),
            &infer_body(b"ai-model", &tail()),
        ));
        let plain = total(held_call(
            &host,
            &mut worker,
            &v2_call(&[]),
            &infer_body(b"some-isvc", &tail()),
        ));
        assert_eq!(
            (rest, grpc_other, by_header, by_model_name, plain),
            (3, 3, 4, 5, 2),
            "REST group; gRPC group in the header (not KServe v2); KServe v2 with the group \
             in mm-vmodel-id; KServe v2 with the group in model_name; KServe v2 naming a plain isvc"
        );
    }

    fn configured_vm() -> VmState {
        VmState {
            configured_before: true,
        }
    }

    use std::collections::BTreeMap;
}
