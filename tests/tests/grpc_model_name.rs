//! Standard KServe v2 gRPC clients through the real Envoy: the group named in the
//! message's `model_name` (ModelInfer) or `name` (ModelMetadata, ModelReady), as every
//! generated client writes it, with no `mm-vmodel-id` header. The stand-in resolves
//! models like ModelMesh (message first, header only when the field is empty) and
//! knows only the members, so a group name reaching it would be NOT_FOUND.

use modelsplit_e2e::fixture::{add_metadata, group, Fixture};
use modelsplit_e2e::grpc_raw::{self, frame, string_field};
use modelsplit_e2e::kserve::infer_parameter::ParameterChoice;
use modelsplit_e2e::kserve::{
    ModelInferRequest, ModelInferResponse, ModelMetadataRequest, ModelReadyRequest,
};
use modelsplit_e2e::observe::{Observed, Tally, ROUTED_HEADER};
use modelsplit_e2e::split::check_split;
use modelsplit_e2e::standin::{fnv1a, MODEL_HEADER, NAMESPACE_HEADER};
use modelsplit_filter::config::FilterConfig;
use modelsplit_filter::plan::{requests_counter_name, OVERRIDE_IGNORED_COUNTER};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use tonic::Request;

const NS: &str = "modelmesh-apps";
const REQUESTS: usize = 10_000;
const WEIGHTS: [(&str, u32); 3] = [
    ("ai-model-one", 80),
    ("ai-model-two", 20),
    ("ai-model-dark", 0),
];

async fn fixture() -> Fixture {
    let mut ai_model = group(NS, "ai-model", &WEIGHTS);
    ai_model.sticky_header = Some("x-user-id".into());
    let config = FilterConfig::with_groups(vec![ai_model]);
    // The stand-in knows the members and one plain isvc: a group name is NOT_FOUND there.
    Fixture::serving(
        &config,
        NS,
        &["ai-model-one", "ai-model-two", "ai-model-dark", "plain"],
    )
    .await
}

fn header(metadata: &tonic::metadata::MetadataMap, name: &str) -> Option<String> {
    metadata
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Checks answers, split, the stand-in's journal and Envoy's counters; prints the figures.
async fn check_by_weight(fx: &Fixture, label: &str, observed: &[Observed]) {
    let tally = Tally::of(observed, NS);
    assert_eq!(
        tally.problem_count, 0,
        "{label}: {} answers were not a consistent member answer, e.g. {:?}",
        tally.problem_count, tally.problems
    );
    let split = check_split(&tally.by_member, &WEIGHTS);
    eprintln!("{label}: {} requests\n{split}", observed.len());
    assert!(split.passes(), "{label}: split does not match\n{split}");
    let received = fx.standin(NS).received();
    assert_eq!(received.len(), observed.len(), "{label}: each request once");
    for r in &received {
        assert!(r.served, "{label}: {r:?}");
        // Routing (by the header) and ModelMesh (by the message) agree on the member.
        assert_eq!(
            r.vmodel_header.as_deref(),
            Some(r.model.as_str()),
            "{label}"
        );
    }
    // The filter's counters reach Envoy on its workers' ticks: wait for the client's counts.
    let expected = |member: &str| tally.by_member.get(member).copied().unwrap_or(0);
    let stats = fx
        .gateway
        .stats_when("modelsplit", |stats| {
            WEIGHTS.iter().all(|(member, _)| {
                stats.get(&requests_counter_name(NS, "ai-model", member)) == expected(member)
            })
        })
        .await
        .expect("stats");
    for (member, _) in WEIGHTS {
        let counter = requests_counter_name(NS, "ai-model", member);
        let seen = tally.by_member.get(member).copied().unwrap_or(0);
        assert_eq!(stats.get(&counter), seen, "{label}: {counter}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_name_naming_the_group_splits_by_weight_without_any_header() {
    let fx = fixture().await;
    let observed = fx
        .grpc_many_by_model_name(REQUESTS, "ai-model", |_| vec![])
        .await;
    check_by_weight(&fx, "gRPC model_name 80/20/0", &observed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_in_both_the_message_and_the_header_gets_one_member() {
    let fx = fixture().await;
    let observed = fx
        .grpc_many_by_model_name(2_000, "ai-model", |_| {
            vec![("mm-vmodel-id".into(), "ai-model".into())]
        })
        .await;
    check_by_weight(&fx, "gRPC model_name + header", &observed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_or_plain_model_named_directly_is_left_alone() {
    let fx = fixture().await;
    let mut client = fx.grpc().await;
    for model in ["ai-model-two", "plain"] {
        for _ in 0..20 {
            let mut request = Request::new(ModelInferRequest {
                model_name: model.into(),
                ..Default::default()
            });
            add_metadata(&mut request, vec![("mm-vmodel-id".into(), model.into())]);
            let reply = client.model_infer(request).await.unwrap();
            assert_eq!(reply.get_ref().model_name, model);
            assert_eq!(header(reply.metadata(), ROUTED_HEADER), None, "{model}");
        }
    }
    // Without a header nothing names a route: no route, as before (Envoy 404 = UNIMPLEMENTED).
    let status = client
        .model_infer(ModelInferRequest {
            model_name: "plain".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    let stats = fx.gateway.stats_settled("modelsplit").await.unwrap();
    for (member, _) in WEIGHTS {
        assert_eq!(stats.get(&requests_counter_name(NS, "ai-model", member)), 0);
    }
    assert!(fx
        .standin(NS)
        .received()
        .iter()
        .all(|r| r.vmodel_header.as_deref() == Some(r.model.as_str())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_keys_and_the_override_apply_to_model_name() {
    let fx = fixture().await;
    const KEYS: usize = 300;
    let observed = fx
        .grpc_many_by_model_name(KEYS * 3, "ai-model", |i| {
            vec![("x-user-id".into(), format!("user-{}", i % KEYS))]
        })
        .await;
    let mut per_key: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for (i, o) in observed.iter().enumerate() {
        assert_eq!(o.problem(NS), None);
        per_key
            .entry(i % KEYS)
            .or_default()
            .insert(o.model.clone().unwrap());
    }
    assert!(per_key.values().all(|members| members.len() == 1));
    let used: BTreeSet<_> = per_key.values().flatten().collect();
    assert!(
        used.len() == 2,
        "keys spread over the weighted members: {used:?}"
    );

    // The override picks any member, weight 0 included; a non-member is ignored and counted.
    let forced = fx
        .grpc_many_by_model_name(50, "ai-model", |_| {
            vec![("x-modelsplit-member".into(), "ai-model-dark".into())]
        })
        .await;
    assert!(forced
        .iter()
        .all(|o| o.problem(NS).is_none() && o.model.as_deref() == Some("ai-model-dark")));
    let ignored = fx
        .grpc_many_by_model_name(30, "ai-model", |_| {
            vec![("x-modelsplit-member".into(), "plain".into())]
        })
        .await;
    assert!(ignored
        .iter()
        .all(|o| o.problem(NS).is_none() && o.model.as_deref() != Some("plain")));
    let dark = requests_counter_name(NS, "ai-model", "ai-model-dark");
    let stats = fx
        .gateway
        .stats_when("modelsplit", |stats| {
            stats.get(OVERRIDE_IGNORED_COUNTER) >= 30 && stats.get(&dark) >= 50
        })
        .await
        .unwrap();
    assert_eq!(stats.get(OVERRIDE_IGNORED_COUNTER), 30);
    assert_eq!(
        stats.get(&requests_counter_name(NS, "ai-model", "ai-model-dark")),
        50
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_and_ready_by_name_are_answered_by_a_member() {
    let fx = fixture().await;
    let mut client = fx.grpc().await;
    let mut members = BTreeSet::new();
    for _ in 0..40 {
        let ready = client
            .model_ready(ModelReadyRequest {
                name: "ai-model".into(),
                version: String::new(),
            })
            .await
            .unwrap();
        let member = header(ready.metadata(), MODEL_HEADER).unwrap();
        assert!(ready.get_ref().ready);
        assert_eq!(
            header(ready.metadata(), ROUTED_HEADER),
            Some(member.clone())
        );
        members.insert(member);

        let metadata = client
            .model_metadata(ModelMetadataRequest {
                name: "ai-model".into(),
                version: "3".into(),
            })
            .await
            .unwrap();
        assert_eq!(
            header(metadata.metadata(), ROUTED_HEADER).as_deref(),
            Some(metadata.get_ref().name.as_str())
        );
        assert_eq!(
            metadata.get_ref().versions,
            ["3"],
            "the rest of the message is intact"
        );
        assert_eq!(
            header(metadata.metadata(), NAMESPACE_HEADER).as_deref(),
            Some(NS)
        );
    }
    assert!(members.is_subset(&BTreeSet::from([
        "ai-model-one".into(),
        "ai-model-two".into()
    ])));
    assert!(fx.standin(NS).received().iter().all(|r| r.served));
}

fn parameter(reply: &ModelInferResponse, name: &str) -> String {
    match reply
        .parameters
        .get(name)
        .and_then(|p| p.parameter_choice.clone())
    {
        Some(ParameterChoice::StringParam(value)) => value,
        other => panic!("parameter {name}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_mib_request_is_split_and_arrives_intact() {
    let fx = fixture().await;
    let mut client = fx.grpc().await;
    let tensor: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let expected_hash = format!("{:016x}", fnv1a(&tensor));
    let mut members = BTreeSet::new();
    for i in 0..20 {
        let reply = client
            .model_infer(ModelInferRequest {
                model_name: "ai-model".into(),
                id: format!("big-{i}"),
                raw_input_contents: vec![tensor.clone()],
                ..Default::default()
            })
            .await
            .unwrap();
        let reply_ref = reply.get_ref();
        assert_eq!(
            parameter(reply_ref, "raw_input_bytes"),
            (1 << 20).to_string()
        );
        assert_eq!(parameter(reply_ref, "raw_input_fnv1a"), expected_hash);
        assert_eq!(reply_ref.id, format!("big-{i}"));
        assert_eq!(
            header(reply.metadata(), ROUTED_HEADER).as_deref(),
            Some(reply_ref.model_name.as_str())
        );
        members.insert(reply_ref.model_name.clone());
    }
    assert!(!members.contains("ai-model"), "{members:?}");
}

/// A ModelInfer message with `model_name` written *after* a raw tensor of `len` bytes
/// (valid protobuf: fields may come in any order).
fn model_name_last(len: usize) -> (Vec<u8>, Vec<u8>) {
    let tensor: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
    let mut message = ModelInferRequest {
        id: "late".into(),
        raw_input_contents: vec![tensor.clone()],
        ..Default::default()
    }
    .encode_to_vec();
    message.extend(string_field(1, b"ai-model"));
    (message, tensor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_name_after_a_large_field_is_found_and_rewritten() {
    let fx = fixture().await;
    let base = fx.gateway.url("");
    let (message, tensor) = model_name_last(512 * 1024);
    let reply = grpc_raw::call(&base, "ModelInfer", &[], frame(false, &message)).await;
    assert_eq!(reply.grpc_status, Some(0), "{reply:?}");
    let answer: ModelInferResponse = reply.decode();
    assert!(answer.model_name.starts_with("ai-model-"), "{answer:?}");
    assert_eq!(
        reply.header(ROUTED_HEADER),
        Some(answer.model_name.as_str())
    );
    assert_eq!(
        parameter(&answer, "raw_input_fnv1a"),
        format!("{:016x}", fnv1a(&tensor))
    );
    assert_eq!(answer.id, "late");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_too_large_to_hold_fails_clearly_and_does_not_hang() {
    let fx = fixture().await;
    let base = fx.gateway.url("");
    // Field 1 after 40 MiB: the filter must hold all of it to read the model name,
    // more than Envoy buffers for one request. (With field 1 first, as clients write
    // it, only the first chunk is held: see the 1 MiB test.)
    let (message, _) = model_name_last(40 << 20);
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        grpc_raw::call(&base, "ModelInfer", &[], frame(false, &message)),
    )
    .await
    .expect("an answer, not a hang");
    // Envoy's own answer to a request over its buffer limit (HTTP 413, as gRPC UNKNOWN).
    assert_eq!(reply.grpc_status, Some(2), "{reply:?}");
    assert_eq!(reply.grpc_message, "Payload Too Large", "{reply:?}");
    assert_eq!(reply.header(ROUTED_HEADER), None);
    assert_eq!(
        fx.standin(NS).received(),
        vec![],
        "nothing reached ModelMesh"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_and_malformed_messages_get_invalid_argument() {
    let fx = fixture().await;
    let base = fx.gateway.url("");
    let valid = string_field(1, b"ai-model");

    let compressed = grpc_raw::call(
        &base,
        "ModelInfer",
        &[("grpc-encoding", "gzip")],
        frame(true, &valid),
    )
    .await;
    assert_eq!(compressed.grpc_status, Some(3), "{compressed:?}");
    assert!(
        compressed
            .grpc_message
            .contains("compressed (grpc-encoding gzip)")
            && compressed.grpc_message.contains("send it uncompressed"),
        "{compressed:?}"
    );

    let malformed: [(&str, Vec<u8>, &str); 4] = [
        (
            "id as a varint",
            frame(false, &[0x08, 0x01]),
            "not a string",
        ),
        (
            "length past the end",
            frame(false, &[0x0a, 0x40, b'a']),
            "past the end",
        ),
        (
            "reserved flags",
            {
                let mut f = frame(false, &valid);
                f[0] = 0x80;
                f
            },
            "reserved flag",
        ),
        (
            "truncated frame",
            frame(false, &valid)[..8].to_vec(),
            "ended inside",
        ),
    ];
    for (what, body, says) in malformed {
        for method in ["ModelInfer", "ModelReady"] {
            let reply = grpc_raw::call(&base, method, &[], body.clone()).await;
            assert_eq!(reply.grpc_status, Some(3), "{what} {method}: {reply:?}");
            assert!(
                reply
                    .grpc_message
                    .starts_with("modelsplit: malformed gRPC request")
                    && reply.grpc_message.contains(says),
                "{what} {method}: {reply:?}"
            );
        }
    }
    assert_eq!(
        fx.standin(NS).received(),
        vec![],
        "nothing reached ModelMesh"
    );

    // Other calls of the service never wait for their body, and are never inspected.
    let live = grpc_raw::call(
        &base,
        "ServerLive",
        &[("mm-vmodel-id", "plain")],
        frame(false, &[0x08, 0x01]),
    )
    .await;
    assert_eq!(live.grpc_status, Some(0), "{live:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_allow_on_headers_stop_iteration_calls_are_released_and_routed_by_header() {
    let fx = fixture().await;
    // Istio's WasmPlugin cannot set the flag: Envoy then turns the filter's
    // StopIteration into StopAll and never passes it the body.
    let mut ai_model = group(NS, "ai-model", &WEIGHTS);
    ai_model.sticky_header = Some("x-user-id".into());
    let ecds = fx
        .gateway
        .ecds_for(&FilterConfig::with_groups(vec![ai_model]));
    let without = ecds.replace(
        "\"allow_on_headers_stop_iteration\": true",
        "\"allow_on_headers_stop_iteration\": false",
    );
    assert_ne!(without, ecds, "the local gateway sets the flag");
    assert_eq!(
        fx.gateway.push_ecds(&without).await.unwrap(),
        modelsplit_e2e::gateway::ConfigOutcome::Applied
    );
    fx.standin(NS).clear();

    // Header clients keep working: the first held calls of each worker are released
    // (after about a second) and routed by their header; later ones are not held.
    let mut client = fx.grpc().await;
    for _ in 0..12 {
        let reply = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            client.model_infer(modelsplit_e2e::infer::vmodel_request("ai-model")),
        )
        .await
        .expect("released, not held forever")
        .unwrap();
        let model = reply.get_ref().model_name.clone();
        assert!(
            model == "ai-model-one" || model == "ai-model-two",
            "{model}"
        );
        assert_eq!(header(reply.metadata(), ROUTED_HEADER), Some(model));
    }
    // A group in model_name alone is not split on such a host (as before): no route.
    let status = client
        .model_infer(ModelInferRequest {
            model_name: "ai-model".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    assert!(
        fx.gateway
            .log()
            .contains("needs `allow_on_headers_stop_iteration: true`"),
        "the reason is logged"
    );
    let counted = |stats: &modelsplit_e2e::gateway::Stats| -> u64 {
        WEIGHTS
            .iter()
            .map(|(m, _)| stats.get(&requests_counter_name(NS, "ai-model", m)))
            .sum()
    };
    let stats = fx
        .gateway
        .stats_when("modelsplit", |stats| counted(stats) >= 12)
        .await
        .unwrap();
    assert_eq!(counted(&stats), 12);
}
