//! The filter's life over a [`Host`]: configuration, ticks and requests.
//!
//! One [`Worker`] per root context (one per worker VM and configuration) holds the
//! compiled plan, the worker's PRNG and its pending counters; one [`Stream`] per HTTP
//! request remembers the member chosen, for the response header. `host.rs` forwards
//! proxy-wasm's callbacks here; the tests drive the same code with a recording mock
//! host and assert the host calls each kind of request makes.
//!
//! Host calls per request (the cost budget, asserted in the tests below):
//!
//! - request headers: one read of all of them (`proxy_get_header_map_pairs`; the
//!   lookups of `:path`, `content-type`, the gRPC, override and sticky headers are
//!   then made in module memory, each only when the request needs it: see
//!   [`crate::route`]); then, for a group request, one write (`:path` or the gRPC
//!   header);
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
use crate::host_api::{Host, HostError, Level};
use crate::plan::{
    GroupId, Plan, CONFIG_REJECTED_COUNTER, HOST_ERROR_COUNTER, OVERRIDE_IGNORED_COUNTER,
};
use crate::route::{route, Rewrite};
use std::rc::Rc;

/// How often each worker gives its pending counts to the host. A request shows in
/// Envoy's `/stats` at most one tick later (plus however late the worker's event
/// loop runs the timer); the README promises at most 1 s.
pub const TICK_MILLIS: u32 = 500;
const _: () = assert!(
    TICK_MILLIS <= 1000,
    "the README promises at most 1 s of lag"
);

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
}

/// One HTTP request's state between its request and response headers.
#[derive(Debug, Default)]
pub struct Stream {
    routed: Option<Routed>,
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
    /// (the only time a worker asks for the time).
    pub fn new(host: &impl Host, context_id: u32) -> Worker {
        let nanos = host.now_nanos().unwrap_or(0);
        Worker {
            plan: None,
            counters: Counters::default(),
            rng: Rng::from_host(nanos, context_id),
            ticking: false,
            host_error_logged: false,
        }
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

    /// The worker's tick: gives the pending counts to the host.
    pub fn tick(&mut self, host: &impl Host) {
        self.counters.flush(host);
    }

    /// The root context is done (configuration replaced, or the VM stops): flush.
    pub fn done(&mut self, host: &impl Host) {
        self.counters.flush(host);
    }

    /// A request's headers: decide, rewrite, count. Never fails the request: whatever
    /// goes wrong, the request continues (unchanged if nothing was written yet).
    pub fn on_request_headers(&mut self, host: &impl Host, stream: &mut Stream) {
        let Some(plan) = &self.plan else {
            return;
        };
        let headers = match host.request_headers() {
            Ok(headers) => headers,
            Err(error) => {
                report(
                    host,
                    &mut self.counters,
                    &mut self.host_error_logged,
                    error,
                    "reading the request headers",
                );
                return;
            }
        };
        let decision = route(plan, &mut self.rng, &headers);
        let Some(decision) = decision else {
            return;
        };
        if decision.override_ignored {
            self.counters.count(OVERRIDE_IGNORED);
        }
        let Some(member) = decision.member_in(plan) else {
            return;
        };
        let written = match &decision.rewrite {
            Rewrite::Path(path) => host.set_request_header(":path", path),
            Rewrite::ModelHeader | Rewrite::MessageId => {
                host.set_request_header(plan.grpc_header(), member.name.as_bytes())
            }
        };
        if let Err(error) = written {
            report(
                host,
                &mut self.counters,
                &mut self.host_error_logged,
                error,
                "rewriting the request",
            );
            return;
        }
        self.counters
            .count(counters::member_slot(member.counter_index));
        if plan.routed_header().is_some() {
            stream.routed = Some(Routed {
                plan: Rc::clone(plan),
                group: decision.group,
                member: decision.member,
            });
        }
    }

    /// A response's headers: name the member that served a routed request.
    pub fn on_response_headers(&mut self, host: &impl Host, stream: &mut Stream) {
        let Some(routed) = stream.routed.take() else {
            return;
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
            report(
                host,
                &mut self.counters,
                &mut self.host_error_logged,
                error,
                "setting the response header",
            );
        }
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
        let mut stream = Stream::default();
        worker.on_request_headers(host, &mut stream);
        let request = host.take_calls();
        worker.on_response_headers(host, &mut stream);
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
        let (host, mut worker) = configured(CONFIG);
        let (request, response) = send(
            &host,
            &mut worker,
            &[
                (":path", b"/inference.GRPCInferenceService/ModelInfer"),
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

    fn configured_vm() -> VmState {
        VmState {
            configured_before: true,
        }
    }

    use std::collections::BTreeMap;
}
