//! Observed groups (`observe: true`): each member's latency histogram and REST error
//! counter, the host calls they cost, and that other groups pay nothing for them.
use super::*;

const OBSERVED: &str = r#"{"groups":[
    {"namespace":"apps","name":"ai-model","observe":true,
     "members":[{"name":"one","weight":80},{"name":"two","weight":20}]},
    {"namespace":"apps","name":"plain","members":[{"name":"p1","weight":1},{"name":"p2","weight":1}]}]}"#;
const PLAIN_PATH: &[u8] = b"/modelmesh/apps/v2/models/plain/infer";
/// What the upstream takes in the tests: 37.4 ms, recorded as 37.
const TAKES: u64 = 37_400_000;

fn latency(member: &str) -> String {
    format!("modelsplit.latency_ms.apps.ai-model.{member}")
}

fn rest_errors(member: &str) -> String {
    format!("modelsplit.rest_errors.apps.ai-model.{member}")
}

fn record(member: &str, millis: u64) -> Call {
    Call::RecordInHistogram(latency(member), millis)
}

/// One REST request to the observed group answered `status` after [`TAKES`], or reset
/// before its response headers (`None`): (member, request calls, response calls).
fn observed_rest(
    host: &MockHost,
    worker: &mut Worker,
    status: Option<&str>,
) -> (String, Vec<Call>, Vec<Call>) {
    host.request(&[(":path", PATH)]);
    let mut stream = Stream::new(STREAM);
    assert_eq!(
        worker.on_request_headers(host, &mut stream, false),
        Flow::Continue
    );
    let request = host.take_calls();
    let path = String::from_utf8(host.request_header_value(":path").unwrap()).unwrap();
    let member = path
        .strip_prefix("/modelmesh/apps/v2/models/")
        .and_then(|p| p.strip_suffix("/infer"))
        .unwrap()
        .to_string();
    host.advance(TAKES);
    if let Some(status) = status {
        host.answer(&[(":status", status)], &[]);
        worker.on_response_headers(host, &mut stream, false);
    }
    worker.on_stream_done(host, &mut stream);
    (member, request, host.take_calls())
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn an_observed_groups_members_get_a_histogram_and_a_rest_error_counter_with_the_configuration() {
    let host = MockHost::with_config(OBSERVED);
    let mut worker = Worker::new(&host, 7);
    assert!(worker.configure(&host, &mut VmState::default()).accepted());
    let calls = host.take_calls();
    let define = |n: &str| Call::DefineCounter(n.to_string());
    let histogram = |n: &str| Call::DefineHistogram(n.to_string());
    assert_eq!(
        calls[6..],
        [
            define("modelsplit.override_ignored"),
            define(ONE),
            define(TWO),
            define("modelsplit.requests.apps.plain.p1"),
            define("modelsplit.requests.apps.plain.p2"),
            define(&rest_errors("one")),
            histogram(&latency("one")),
            define(&rest_errors("two")),
            histogram(&latency("two")),
        ],
        "nothing for the group that is not observed"
    );
    assert_eq!(host.histogram(&latency("one")), Some(vec![]));
    assert!(host.defined(&rest_errors("two")));
    assert!(!host.defined("modelsplit.rest_errors.apps.plain.p1"));
    assert_eq!(host.histogram("modelsplit.latency_ms.apps.plain.p1"), None);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn an_observed_rest_request_reads_the_clock_twice_records_its_latency_and_reads_its_status() {
    let (host, mut worker) = configured(OBSERVED);
    let (member, request, response) = observed_rest(&host, &mut worker, Some("200"));
    assert_eq!(
        request,
        [
            Call::GetRequestHeaders,
            Call::set(
                ":path",
                &format!("/modelmesh/apps/v2/models/{member}/infer")
            ),
            Call::Now,
        ]
    );
    assert_eq!(
        response,
        [
            Call::Now,
            record(&member, 37),
            Call::respond(ROUTED, &member),
            Call::GetResponseHeader(":status".into()),
        ]
    );
    assert_eq!(host.histogram(&latency(&member)), Some(vec![37]));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn rest_errors_are_5xx_answers_and_resets_counted_per_member_and_flushed_on_the_tick() {
    let (host, mut worker) = configured(OBSERVED);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut answered: BTreeMap<String, u64> = BTreeMap::new();
    let statuses = [
        Some("200"),
        Some("503"),
        Some("404"),
        None,
        Some("500"),
        Some("204"),
        Some("429"),
    ];
    for round in 0..30 {
        for status in statuses {
            let (member, _, response) = observed_rest(&host, &mut worker, status);
            match status {
                Some(_) => *answered.entry(member.clone()).or_default() += 1,
                None => assert_eq!(response, [], "a reset: counted in module memory"),
            }
            if status.is_none_or(|s| s.starts_with('5')) {
                *errors.entry(member).or_default() += 1;
            }
        }
        if round % 7 == 0 {
            worker.tick(&host);
        }
    }
    worker.tick(&host);
    assert_eq!(
        errors.values().sum::<u64>(),
        90,
        "503, 500 and a reset, 30 times"
    );
    for member in ["one", "two"] {
        assert_eq!(
            host.counter(&rest_errors(member)),
            errors.get(member).copied().unwrap_or(0),
            "{member}"
        );
        let recorded = host.histogram(&latency(member)).unwrap();
        assert_eq!(
            recorded.len() as u64,
            answered.get(member).copied().unwrap_or(0),
            "one latency per answer, none for a reset: {member}"
        );
        assert!(recorded.iter().all(|&ms| ms == 37));
    }
    // The tick adds each moved counter once: no add per request.
    let members: std::collections::BTreeSet<String> = (0..5)
        .map(|_| observed_rest(&host, &mut worker, Some("502")).0)
        .collect();
    worker.tick(&host);
    let adds: Vec<Call> = host
        .take_calls()
        .into_iter()
        .filter(|c| matches!(c, Call::AddToCounter(..)))
        .collect();
    assert_eq!(
        adds.len(),
        2 * members.len(),
        "requests and errors: {adds:?}"
    );
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn an_observed_grpc_call_records_its_latency_and_keeps_counting_grpc_errors_only() {
    let (host, mut worker) = configured(OBSERVED);
    let headers = [
        (
            ":path",
            &b"/tensorflow.serving.PredictionService/Predict"[..],
        ),
        ("content-type", b"application/grpc"),
        (VMODEL, b"ai-model"),
    ];
    // (response headers, trailers, ends at the headers)
    type Pairs<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Pairs, Pairs, bool); 3] = [
        (&[(":status", "200")], &[("grpc-status", "0")], false),
        (&[(":status", "200"), ("grpc-status", "14")], &[], true),
        (&[(":status", "503")], &[], true),
    ];
    let mut grpc_errors: BTreeMap<String, u64> = BTreeMap::new();
    for (response, trailers, ends) in cases.iter().cycle().take(30) {
        host.request(&headers);
        let mut stream = Stream::new(STREAM);
        worker.on_request_headers(&host, &mut stream, false);
        let member = header_text(&host, VMODEL).unwrap();
        assert_eq!(
            host.take_calls(),
            [
                Call::GetRequestHeaders,
                Call::set(VMODEL, &member),
                Call::Now
            ]
        );
        host.advance(TAKES);
        host.answer(response, trailers);
        worker.on_response_headers(&host, &mut stream, *ends);
        if !ends {
            worker.on_response_trailers(&host, &mut stream);
        }
        worker.on_stream_done(&host, &mut stream);
        let read = if *ends {
            Call::GetResponseHeader("grpc-status".into())
        } else {
            Call::GetResponseTrailer("grpc-status".into())
        };
        let calls = host.take_calls();
        assert_eq!(
            calls[..4],
            [
                Call::Now,
                record(&member, 37),
                Call::respond(ROUTED, &member),
                read
            ],
            "no :status read for gRPC"
        );
        if *ends {
            *grpc_errors.entry(member).or_default() += 1;
        }
    }
    worker.tick(&host);
    for member in ["one", "two"] {
        let expected = grpc_errors.get(member).copied().unwrap_or(0);
        let name = format!("modelsplit.grpc_errors.apps.ai-model.{member}");
        assert_eq!(host.counter(&name), expected, "{member}");
        assert_eq!(host.counter(&rest_errors(member)), 0, "gRPC is not REST");
    }
    let recorded: usize = ["one", "two"]
        .iter()
        .map(|m| host.histogram(&latency(m)).unwrap().len())
        .sum();
    assert_eq!(recorded, 30);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn a_held_call_to_an_observed_group_starts_its_latency_when_its_message_decides() {
    let (host, mut worker) = configured(OBSERVED);
    // The worker learns that its host passes the body.
    held_call(
        &host,
        &mut worker,
        &v2_call(&[]),
        &infer_body(b"plain", &[]),
    );
    worker.tick(&host);
    host.take_calls();

    let body = infer_body(b"ai-model", &tail());
    let mut stream = Stream::new(STREAM);
    let at_headers = hold(&host, &mut worker, &mut stream, &v2_call(&[]), &body);
    assert_eq!(
        at_headers,
        [Call::GetRequestHeaders],
        "the group is not known yet"
    );
    host.advance(5_000_000); // held 5 ms: not the member's time
    worker.on_request_body(&host, &mut stream, body.len(), true);
    let at_body = host.take_calls();
    let member = header_text(&host, VMODEL).unwrap();
    assert_eq!(at_body.len(), 4, "{at_body:?}");
    assert_eq!(at_body[3], Call::Now);
    host.advance(TAKES);
    host.answer(&[(":status", "200")], &[("grpc-status", "0")]);
    worker.on_response_headers(&host, &mut stream, false);
    worker.on_response_trailers(&host, &mut stream);
    worker.on_stream_done(&host, &mut stream);
    assert_eq!(
        host.take_calls(),
        [
            Call::Now,
            record(&member, 37),
            Call::respond(ROUTED, &member),
            Call::GetResponseTrailer("grpc-status".into()),
        ]
    );
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn other_groups_of_a_plan_with_an_observed_group_make_the_calls_they_always_made() {
    let (host, mut worker) = configured(OBSERVED);
    let (request, response) = send(&host, &mut worker, &[(":path", PLAIN_PATH)]);
    let member = routed_to(&host);
    assert_eq!(
        request,
        [
            Call::GetRequestHeaders,
            Call::set(
                ":path",
                &format!("/modelmesh/apps/v2/models/{member}/infer")
            )
        ]
    );
    assert_eq!(response, [Call::respond(ROUTED, &member)]);
    // A reset REST request of a group that is not observed counts nothing.
    host.request(&[(":path", PLAIN_PATH)]);
    let mut stream = Stream::new(STREAM);
    worker.on_request_headers(&host, &mut stream, false);
    assert_eq!(host.take_calls().len(), 2);
    worker.on_stream_done(&host, &mut stream);
    assert_eq!(host.take_calls(), []);
    worker.tick(&host);
    let calls = host.take_calls();
    assert!(
        calls.iter().all(|c| matches!(c, Call::AddToCounter(name, _)
            if name.starts_with("modelsplit.requests.apps.plain."))),
        "{calls:?}"
    );
    assert_eq!(
        calls.len(),
        host.counter("modelsplit.requests.apps.plain.p1").min(1) as usize
            + host.counter("modelsplit.requests.apps.plain.p2").min(1) as usize
    );
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn an_observed_group_is_measured_without_a_routed_header_too() {
    let config = format!(
        r#"{},"routedHeader":""}}"#,
        OBSERVED.strip_suffix('}').unwrap()
    );
    let (host, mut worker) = configured(&config);
    let (member, request, response) = observed_rest(&host, &mut worker, Some("500"));
    assert_eq!(request.len(), 3, "{request:?}");
    assert_eq!(
        response,
        [
            Call::Now,
            record(&member, 37),
            Call::GetResponseHeader(":status".into())
        ]
    );
    worker.tick(&host);
    assert_eq!(host.counter(&rest_errors(&member)), 1);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn a_failing_clock_or_histogram_counts_a_host_error_and_the_request_goes_on() {
    let (host, mut worker) = configured(OBSERVED);
    host.fail_when(|c| matches!(c, Call::Now).then_some(10));
    let (member, request, response) = observed_rest(&host, &mut worker, Some("503"));
    assert_eq!(request[2..3], [Call::Now]);
    assert!(
        matches!(&request[3..], [Call::Log(Level::Warn, m)] if m.contains("reading the clock"))
    );
    assert_eq!(
        response,
        [Call::respond(ROUTED, &member)],
        "no start time: the request is not measured (no latency, no status read)"
    );
    assert_eq!(worker.pending(HOST_ERROR), 1);

    host.fail_when(|c| matches!(c, Call::RecordInHistogram(..)).then_some(2));
    let (member, _, response) = observed_rest(&host, &mut worker, Some("503"));
    assert_eq!(response[..2], [Call::Now, record(&member, 37)]);
    assert_eq!(response.len(), 4, "the status is read all the same");
    assert_eq!(worker.pending(HOST_ERROR), 2);
    worker.tick(&host);
    assert_eq!(host.counter(&rest_errors(&member)), 1);
    assert_eq!(host.histogram(&latency(&member)), Some(vec![]));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn a_clock_that_steps_back_records_0_ms() {
    let (host, mut worker) = configured(OBSERVED);
    host.request(&[(":path", PATH)]);
    let mut stream = Stream::new(STREAM);
    worker.on_request_headers(&host, &mut stream, false);
    host.set_clock(1_000);
    host.answer(&[(":status", "200")], &[]);
    worker.on_response_headers(&host, &mut stream, false);
    let recorded: Vec<u64> = ["one", "two"]
        .iter()
        .flat_map(|m| host.histogram(&latency(m)).unwrap())
        .collect();
    assert_eq!(recorded, [0]);
}

/// The budget of filter/README.md for observed groups: 4 calls more for REST (clock at
/// routing, clock, histogram and `:status` at the response), 3 for gRPC.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn host_calls_per_request_of_an_observed_group() {
    let (host, mut worker) = configured(OBSERVED);
    held_call(
        &host,
        &mut worker,
        &v2_call(&[]),
        &infer_body(b"plain", &[]),
    );
    worker.tick(&host);
    host.take_calls();
    let count = |(request, response): (Vec<Call>, Vec<Call>)| request.len() + response.len();
    let rest = count(send(&host, &mut worker, &[(":path", PATH)]));
    let plain_rest = count(send(&host, &mut worker, &[(":path", PLAIN_PATH)]));
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
    assert_eq!(
        (rest, plain_rest, grpc_other, by_header, by_model_name),
        (7, 3, 7, 8, 9),
        "observed REST; REST of a group not observed; observed gRPC by header (not KServe \
         v2); KServe v2 with the group in mm-vmodel-id; KServe v2 with the group in model_name"
    );
}
