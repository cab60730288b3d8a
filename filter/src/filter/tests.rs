//! The mock-host tests of the filter: each kind of request, the host calls it makes
//! (the cost budget of the module doc), counters, configuration and host failures.
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
fn send(host: &MockHost, worker: &mut Worker, headers: &[(&str, &[u8])]) -> (Vec<Call>, Vec<Call>) {
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
    // The upstream answers OK: headers, then (gRPC) trailers.
    host.answer(&[(":status", "200")], &[("grpc-status", "0")]);
    worker.on_response_headers(host, &mut stream, false);
    worker.on_response_trailers(host, &mut stream);
    worker.on_stream_done(host, &mut stream);
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
    assert_eq!(
        response,
        [
            Call::respond(ROUTED, &member),
            Call::GetResponseTrailer("grpc-status".into())
        ]
    );
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
        warnings[0]
            .contains("rejected configuration at start: group a/g: the member weights sum to 0"),
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
    host.answer(&[(":status", "200")], &[("grpc-status", "0")]);
    worker.on_response_headers(host, &mut stream, false);
    worker.on_response_trailers(host, &mut stream);
    worker.on_stream_done(host, &mut stream);
    (at_headers, at_body, host.take_calls(), flow)
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn a_group_in_model_name_is_held_read_rewritten_in_field_and_header_and_resumed() {
    let (host, mut worker) = configured(CONFIG);
    let body = infer_body(b"ai-model", &tail());
    let (at_headers, at_body, response, flow) = held_call(&host, &mut worker, &v2_call(&[]), &body);
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
    assert_eq!(
        response,
        [
            Call::respond(ROUTED, &member),
            Call::GetResponseTrailer("grpc-status".into())
        ]
    );
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
        assert_eq!(
            response,
            [
                Call::respond(ROUTED, &member),
                Call::GetResponseTrailer("grpc-status".into())
            ]
        );
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
        assert_eq!(
            response,
            [
                Call::respond(ROUTED, &member),
                Call::GetResponseTrailer("grpc-status".into())
            ]
        );
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
    host.answer(&[(":status", "200"), ("grpc-status", "0")], &[]);
    worker.on_response_headers(&host, &mut stream, true);
    assert_eq!(
        host.take_calls(),
        [
            Call::respond(ROUTED, &member),
            Call::GetResponseHeader("grpc-status".into())
        ]
    );
    worker.on_stream_done(&host, &mut stream);

    // Later calls on this worker are routed at their headers, as before model names.
    let (request, response) = send(&host, &mut worker, &headers);
    let member = routed_to(&host);
    assert_eq!(
        request,
        [Call::GetRequestHeaders, Call::set(VMODEL, &member)]
    );
    assert_eq!(
        response,
        [
            Call::respond(ROUTED, &member),
            Call::GetResponseTrailer("grpc-status".into())
        ]
    );
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
    worker.on_stream_done(&host, &mut third);
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
    worker.on_response_headers(&host, &mut first, true);
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
    let total = |(a, b, c, _): (Vec<Call>, Vec<Call>, Vec<Call>, Flow)| a.len() + b.len() + c.len();
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
        (3, 4, 5, 6, 2),
        "REST group; gRPC group in the header (not KServe v2); KServe v2 with the group \
         in mm-vmodel-id; KServe v2 with the group in model_name; KServe v2 naming a plain isvc \
         (a routed gRPC call's one more: its grpc-status)"
    );
}

fn configured_vm() -> VmState {
    VmState {
        configured_before: true,
    }
}

use std::collections::BTreeMap;

/// A routed gRPC call's outcome: `grpc-status` from the trailers, or from the headers of a
/// trailers-only response; not OK, missing, or no trailers at all count as an error of the
/// member (a counter defined at its first error). REST responses read nothing.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn grpc_errors_are_counted_per_member_from_the_status() {
    let (host, mut worker) = configured(CONFIG);
    let headers = [
        (
            ":path",
            &b"/tensorflow.serving.PredictionService/Predict"[..],
        ),
        ("content-type", b"application/grpc"),
        (VMODEL, b"ai-model"),
    ];
    let error_counter = |member: &str| format!("modelsplit.grpc_errors.apps.ai-model.{member}");
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    // (response headers, trailers, ends at the headers, error?)
    type Pairs<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Pairs, Pairs, bool, bool); 5] = [
        (&[(":status", "200")], &[("grpc-status", "0")], false, false),
        (&[(":status", "200")], &[("grpc-status", "14")], false, true),
        (&[(":status", "200"), ("grpc-status", "5")], &[], true, true),
        (
            &[(":status", "200"), ("grpc-status", "0")],
            &[],
            true,
            false,
        ),
        (&[(":status", "503")], &[], true, true),
    ];
    for round in 0..20 {
        for (response, trailers, ends, error) in cases {
            host.request(&headers);
            let mut stream = Stream::new(STREAM);
            worker.on_request_headers(&host, &mut stream, false);
            let member = header_text(&host, VMODEL).unwrap();
            host.take_calls();
            host.answer(response, trailers);
            worker.on_response_headers(&host, &mut stream, ends);
            if !ends {
                worker.on_response_trailers(&host, &mut stream);
            }
            worker.on_stream_done(&host, &mut stream);
            let calls = host.take_calls();
            let read = if ends {
                Call::GetResponseHeader("grpc-status".into())
            } else {
                Call::GetResponseTrailer("grpc-status".into())
            };
            assert_eq!(calls[..2], [Call::respond(ROUTED, &member), read]);
            let first_error = error && !expected.contains_key(&member);
            assert_eq!(
                calls[2..],
                if first_error {
                    vec![Call::DefineCounter(error_counter(&member))]
                } else {
                    vec![]
                },
                "round {round}: the counter is defined once, at the member's first error"
            );
            if error {
                *expected.entry(member).or_default() += 1;
            }
        }
    }
    // A call reset after its response headers never got trailers: an error too.
    host.request(&headers);
    let mut stream = Stream::new(STREAM);
    worker.on_request_headers(&host, &mut stream, false);
    let member = header_text(&host, VMODEL).unwrap();
    host.answer(&[(":status", "200")], &[]);
    worker.on_response_headers(&host, &mut stream, false);
    worker.on_stream_done(&host, &mut stream);
    *expected.entry(member).or_default() += 1;

    worker.tick(&host);
    for (member, n) in &expected {
        assert_eq!(host.counter(&error_counter(member)), *n, "{member}");
    }
    assert_eq!(expected.values().sum::<u64>(), 61);

    // REST: nothing read on the response.
    let (_, response) = send(&host, &mut worker, &[(":path", PATH)]);
    assert_eq!(response.len(), 1, "{response:?}");
}

mod observe;
