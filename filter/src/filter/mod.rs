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
//!   request that was routed; for a routed gRPC call, one read of `grpc-status` — in the
//!   response headers when the response ends there (trailers-only), else in the
//!   trailers — counted per member when not OK (`modelsplit.grpc_errors.…`, a counter
//!   defined at the member's first error);
//! - a request routed to a member of an *observed* group (`observe: true`, groups with a
//!   declared rollout), and only such a request: one read of the clock when it is routed
//!   (at its headers; a call held for its message when the message has decided), and at
//!   its response headers one more read of the clock and one record in the member's
//!   latency histogram (`modelsplit.latency_ms.…`, milliseconds), and for REST one read
//!   of `:status` (5xx counted in `modelsplit.rest_errors.…`; a REST request that ends
//!   without response headers, reset, is counted there too): 3 calls more for gRPC, 4
//!   for REST. The histograms and REST error counters of observed members are defined
//!   with the configuration;
//! - counters: none. They are added up in module memory and given to the host on the
//!   worker's tick ([`TICK_MILLIS`]), when the configuration changes and when the
//!   root context is done.
//!
//! An unexpected host status never panics: the request passes through unchanged (no
//! write is made after a failed read, and nothing more after a failed write) and is
//! counted in `modelsplit.host_error`.

use crate::choose::Rng;
use crate::counters::{
    self, grpc_error_slot, rest_error_slot, Counters, FIXED_SLOTS, HOST_ERROR, OVERRIDE_IGNORED,
};
use crate::grpc_body::{self, MessageHost, Outcome};
use crate::grpc_frame::{IdScanner, INVALID_ARGUMENT};
use crate::headers::HeaderBlock;
use crate::hold::{HoldWatch, Holding, WATCH_TICK_MILLIS};
use crate::host_api::{Host, HostError, Level};
use crate::plan::{
    grpc_errors_counter_name, latency_histogram_name, rest_errors_counter_name, GroupId, Plan,
    CONFIG_REJECTED_COUNTER, HOST_ERROR_COUNTER, OVERRIDE_IGNORED_COUNTER,
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
    /// The host's latency histogram per member (by `counter_index`), for members of
    /// observed groups.
    latency: Box<[Option<u32>]>,
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
    /// A routed gRPC call whose response did not end with its headers: its status comes
    /// in the trailers.
    awaiting_trailers: Option<Routed>,
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

/// The member chosen for a request, for the response header and the outcome.
#[derive(Debug)]
struct Routed {
    plan: Rc<Plan>,
    group: GroupId,
    member: usize,
    /// Routed by its gRPC header or message: its `grpc-status` is counted.
    grpc: bool,
    /// A member of an observed group: when the request was routed (host clock, ns);
    /// `None` for other groups (and when the clock could not be read).
    since: Option<u64>,
}

/// The gRPC status header (or trailer); `0` is OK.
const GRPC_STATUS: &str = "grpc-status";
/// The HTTP status pseudo-header of a response.
const STATUS: &str = ":status";
const NANOS_PER_MILLI: u64 = 1_000_000;

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
            latency: Box::default(),
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
        // The gRPC error counters: defined at each member's first error.
        ids.extend(std::iter::repeat_n(None, plan.member_count()));
        // The REST error counters and latency histograms: observed groups' members only,
        // defined now (`/stats` shows an observed member at 0 from the start).
        ids.extend(std::iter::repeat_n(None, plan.member_count()));
        let mut latency = vec![None; plan.member_count()];
        for (group, member) in plan.observed_members() {
            let (namespace, name) = (&*group.namespace, &*group.name);
            let slot = rest_error_slot(plan.member_count(), member.counter_index);
            if let Some(id) = ids.get_mut(slot) {
                *id = host
                    .define_counter(&rest_errors_counter_name(namespace, name, &member.name))
                    .ok();
            }
            if let Some(id) = latency.get_mut(member.counter_index) {
                *id = host
                    .define_histogram(&latency_histogram_name(namespace, name, &member.name))
                    .ok();
            }
        }
        self.counters = Counters::new(ids.into_boxed_slice());
        self.latency = latency.into_boxed_slice();
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
        self.routed(host, plan, &decision)
    }

    /// What the response path needs for a decision applied to a request; `None` for a
    /// REST request of a group that is not observed when the plan sets no routed header.
    /// A request to an observed group reads the clock here: its latency starts.
    fn routed(&mut self, host: &impl Host, plan: &Rc<Plan>, decision: &Decision) -> Option<Routed> {
        let grpc = !matches!(decision.rewrite, Rewrite::Path(_));
        let observe = plan.group(decision.group).is_some_and(|g| g.observe);
        if plan.routed_header().is_none() && !grpc && !observe {
            return None;
        }
        let since = if observe {
            match host.now_nanos() {
                Ok(now) => Some(now),
                Err(error) => {
                    self.report(host, error, "reading the clock for a request's latency");
                    None
                }
            }
        } else {
            None
        };
        Some(Routed {
            plan: Rc::clone(plan),
            group: decision.group,
            member: decision.member,
            grpc,
            since,
        })
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
                stream.routed = self.routed(host, &held.plan, &decision);
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

    /// A response's headers: name the member that served a routed request; a routed gRPC
    /// call that ends here (trailers-only) has its status here.
    pub fn on_response_headers(
        &mut self,
        host: &impl Host,
        stream: &mut Stream,
        end_of_stream: bool,
    ) {
        let routed = match stream.routed.take() {
            Some(routed) => routed,
            // A request the watch released was routed in the worker's tick.
            None => match self.hold.take_released(stream.id) {
                Some(Some(routed)) => routed,
                _ => return,
            },
        };
        if let Some(since) = routed.since {
            self.record_latency(host, &routed, since);
        }
        if let (Some(header), Some(member)) = (
            routed.plan.routed_header(),
            routed
                .plan
                .group(routed.group)
                .and_then(|g| g.members.get(routed.member)),
        ) {
            // Set, not add: exactly one value, which an upstream cannot forge.
            if let Err(error) = host.set_response_header(header, member.name.as_bytes()) {
                self.report(host, error, "setting the response header");
                return;
            }
        }
        if !routed.grpc {
            if routed.since.is_some() {
                match host.response_header(STATUS) {
                    Ok(Some(status)) if status.starts_with(b"5") => self.count_rest_error(&routed),
                    Ok(_) => {}
                    Err(error) => self.report(host, error, "reading the response status"),
                }
            }
            return;
        }
        if end_of_stream {
            let status = host.response_header(GRPC_STATUS);
            self.grpc_outcome(host, &routed, status);
        } else {
            stream.awaiting_trailers = Some(routed);
        }
    }

    /// A response's trailers: the status of a routed gRPC call.
    pub fn on_response_trailers(&mut self, host: &impl Host, stream: &mut Stream) {
        if let Some(routed) = stream.awaiting_trailers.take() {
            let status = host.response_trailer(GRPC_STATUS);
            self.grpc_outcome(host, &routed, status);
        }
    }

    /// The request is finished: the watch forgets it. A routed gRPC call whose response
    /// had headers but never trailers (the stream was reset) failed; so did a REST request
    /// of an observed group that never had response headers.
    pub fn on_stream_done(&mut self, host: &impl Host, stream: &mut Stream) {
        self.hold.gone(stream.id);
        if let Some(routed) = stream.awaiting_trailers.take() {
            self.count_grpc_error(host, &routed);
        }
        if let Some(routed) = stream.routed.take() {
            if !routed.grpc && routed.since.is_some() {
                self.count_rest_error(&routed);
            }
        }
    }

    /// The member's `counter_index`, when `routed` was routed by the plan in force (what
    /// a plan no longer in force counted is dropped: its counters are gone).
    fn current_member(&self, routed: &Routed) -> Option<usize> {
        let plan = self.plan.as_ref().filter(|p| Rc::ptr_eq(p, &routed.plan))?;
        let group = plan.group(routed.group)?;
        Some(group.members.get(routed.member)?.counter_index)
    }

    /// Records an observed request's latency, routing to response headers, in ms.
    fn record_latency(&mut self, host: &impl Host, routed: &Routed, since: u64) {
        let Some(Some(id)) = self
            .current_member(routed)
            .and_then(|index| self.latency.get(index).copied())
        else {
            return;
        };
        let now = match host.now_nanos() {
            Ok(now) => now,
            Err(error) => {
                self.report(host, error, "reading the clock for a response's latency");
                return;
            }
        };
        // A wall clock may step back: 0 ms then.
        let millis = now.saturating_sub(since) / NANOS_PER_MILLI;
        if let Err(error) = host.record_in_histogram(id, millis) {
            self.report(host, error, "recording a latency");
        }
    }

    /// Counts an observed REST request answered 5xx or reset before its response headers.
    fn count_rest_error(&mut self, routed: &Routed) {
        let Some(plan) = self.plan.as_ref() else {
            return;
        };
        if let Some(index) = self.current_member(routed) {
            let slot = rest_error_slot(plan.member_count(), index);
            self.counters.count(slot);
        }
    }

    /// Counts a routed gRPC call whose status is not OK (or missing).
    fn grpc_outcome(
        &mut self,
        host: &impl Host,
        routed: &Routed,
        status: Result<Option<Vec<u8>>, HostError>,
    ) {
        match status {
            Ok(Some(value)) if value == b"0" => {}
            Ok(_) => self.count_grpc_error(host, routed),
            Err(error) => self.report(host, error, "reading the gRPC status"),
        }
    }

    fn count_grpc_error(&mut self, host: &impl Host, routed: &Routed) {
        // Counts of a plan no longer in force are dropped (its counters are gone).
        let Some(plan) = self.plan.as_ref().filter(|p| Rc::ptr_eq(p, &routed.plan)) else {
            return;
        };
        let Some((group, member)) = plan
            .group(routed.group)
            .and_then(|g| Some((g, g.members.get(routed.member)?)))
        else {
            return;
        };
        let slot = grpc_error_slot(plan.member_count(), member.counter_index);
        if !self.counters.has_id(slot) {
            let name = grpc_errors_counter_name(&group.namespace, &group.name, &member.name);
            match host.define_counter(&name) {
                Ok(id) => self.counters.set_id(slot, id),
                Err(error) => {
                    self.report(host, error, "defining a gRPC error counter");
                    return;
                }
            }
        }
        self.counters.count(slot);
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
mod tests;
