//! Hostile requests through the real Envoy and filter: a request for namespace A's
//! group never reaches namespace B's ModelMesh, whatever the client does to the path
//! (`..`, `%2F`, `//`, case, unicode, backslashes) or the headers (repeated override
//! and `mm-vmodel-id` headers, another namespace's member names).
//!
//! Namespace B is a worst case: its ModelMesh serves *any* model (so a leak would be
//! answered, not hidden by a 404), it has an isvc with the same name as A's member and
//! a group with the same name as A's group.

use modelsplit_e2e::fixture::{group, Fixture};
use modelsplit_e2e::gateway_files::ExposedIsvc;
use modelsplit_e2e::kserve::ModelInferRequest;
use modelsplit_e2e::standin::{Protocol, StandInConfig};
use modelsplit_filter::config::FilterConfig;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const A: &str = "tenant-a";
const B: &str = "tenant-b";
const A_MEMBERS: [&str; 2] = ["a-one", "a-two"];

async fn fixture() -> Fixture {
    // B has its own `ai-model` group (REST only: A owns the gRPC name), an isvc named
    // like A's member (`a-one`, REST only for the same reason) and `b-secret`.
    let mut b_group = group(B, "ai-model", &[("a-one", 1), ("b-secret", 1)]);
    b_group.grpc = false;
    let config = FilterConfig::with_groups(vec![
        group(A, "ai-model", &[("a-one", 50), ("a-two", 50)]),
        b_group,
    ]);
    let isvcs = vec![
        ExposedIsvc::new(A, "a-one"),
        ExposedIsvc::new(A, "a-two"),
        ExposedIsvc {
            grpc: false,
            ..ExposedIsvc::new(B, "a-one")
        },
        ExposedIsvc::new(B, "b-secret"),
    ];
    Fixture::start(
        &config,
        &isvcs,
        vec![StandInConfig::any_model(A), StandInConfig::any_model(B)],
    )
    .await
}

/// One HTTP/1.1 exchange with the exact bytes given (no client-side URI checks or
/// normalisation); returns the status code (0 when Envoy closed without answering).
async fn raw_request(addr: SocketAddr, target: &[u8], headers: &[(&str, &[u8])]) -> u16 {
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(target);
    request.extend_from_slice(b" HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.extend_from_slice(name.as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to the gateway");
    stream.write_all(&request).await.expect("send the request");
    let mut response = Vec::new();
    // Envoy may reset a connection it refused; what was read so far is enough. The
    // status line is all we need, so stop at the end of the headers, when Envoy closes or
    // resets, or (a generous deadline: Envoy not answering at all) after a minute.
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => response.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let status_line = response.split(|&b| b == b'\r').next().unwrap_or_default();
    std::str::from_utf8(status_line)
        .ok()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// `/v2/models/<model>` exactly, or followed by `/` or `?`.
fn under_model(path: &str, model: &str) -> bool {
    path.strip_prefix("/v2/models/")
        .and_then(|rest| rest.strip_prefix(model))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?']))
}

/// Paths a client could use to try to reach B through A's group (and its members).
fn hostile_paths() -> Vec<Vec<u8>> {
    let base = "/modelmesh/tenant-a/v2/models/ai-model";
    let mut paths: Vec<Vec<u8>> = [
        format!("{base}/../../../tenant-b/v2/models/b-secret/infer"),
        format!("{base}/../../../../modelmesh/tenant-b/v2/models/ai-model/infer"),
        format!("{base}/..%2F..%2F..%2Ftenant-b%2Fv2%2Fmodels%2Fb-secret/infer"),
        format!("{base}%2F..%2F..%2F..%2Ftenant-b%2Fv2%2Fmodels%2Fb-secret"),
        format!("{base}%2f..%2f..%2f..%2ftenant-b/v2/models/b-secret"),
        format!("{base}/%2e%2e/%2e%2e/%2e%2e/tenant-b/v2/models/b-secret/infer"),
        format!("{base}/%252e%252e/%252e%252e/%252e%252e/tenant-b/v2/models/b-secret"),
        format!("{base}\\..\\..\\..\\tenant-b\\v2\\models\\b-secret"),
        format!("{base}/..\\..\\..\\tenant-b/v2/models/b-secret"),
        format!("{base};/../../../tenant-b/v2/models/b-secret"),
        format!("{base}/./infer"),
        format!("{base}//infer"),
        format!("{base}/infer?next=/modelmesh/tenant-b/v2/models/b-secret/infer"),
        format!("{base}/infer#/../../../tenant-b/v2/models/b-secret"),
        "//modelmesh/tenant-a/v2/models/ai-model/infer".into(),
        "/modelmesh//tenant-a/v2/models/ai-model/infer".into(),
        "/modelmesh/tenant-a//v2/models/ai-model/infer".into(),
        "/modelmesh/tenant-a/v2/models//ai-model/infer".into(),
        "/modelmesh/tenant-a/../tenant-b/v2/models/ai-model/infer".into(),
        "/modelmesh/tenant-a/v2/models/../../../tenant-b/v2/models/ai-model".into(),
        "/modelmesh/tenant-a%2F..%2Ftenant-b/v2/models/ai-model/infer".into(),
        "/modelmesh/Tenant-A/v2/models/ai-model/infer".into(),
        "/modelmesh/tenant-a/v2/models/AI-MODEL/infer".into(),
        "/MODELMESH/tenant-a/v2/models/ai-model/infer".into(),
        "/modelmesh/tenant-a/V2/Models/ai-model/infer".into(),
        "/modelmesh/tenant-a/v2/models/ai-model%00/infer".into(),
        "/modelmesh/tenant-a/v2/models/ai-mod%65l/infer".into(),
        "/modelmesh/tenant-a/v2/models/ai-model%C0%AF..%C0%AF..%C0%AFtenant-b".into(),
        "/modelmesh/tenant-a/v2/models/ai-model%EF%BC%8F..%EF%BC%8Ftenant-b".into(),
        format!("http://gateway{base}/../../../tenant-b/v2/models/b-secret"),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    // Raw non-ASCII bytes: unicode look-alikes of '/' and '.', and invalid UTF-8.
    paths.push(format!("{base}\u{FF0F}..\u{FF0F}..\u{FF0F}tenant-b").into_bytes());
    paths.push(
        format!("{base}/\u{2025}/\u{2025}/\u{2025}/tenant-b/v2/models/b-secret").into_bytes(),
    );
    paths.push(
        "/modelmesh/tenant-a/v2/models/ai-modél/infer"
            .as_bytes()
            .to_vec(),
    );
    paths.push([base.as_bytes(), b"/\xc0\xae\xc0\xae/\xff/infer"].concat());
    paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_paths_and_headers_never_reach_another_namespace() {
    let fx = fixture().await;
    let gateway = fx.gateway.listener;

    let header_sets: [&[(&str, &[u8])]; 5] = [
        &[],
        &[("x-modelsplit-member", b"b-secret")],
        &[
            ("x-modelsplit-member", b"a-two"),
            ("x-modelsplit-member", b"b-secret"),
        ],
        &[("x-modelsplit-member", b"../../tenant-b/v2/models/b-secret")],
        &[("x-modelsplit-member", b"a-one\r\nx-injected: 1")],
    ];
    let mut statuses = Vec::new();
    for path in hostile_paths() {
        for headers in header_sets {
            let status = raw_request(gateway, &path, headers).await;
            statuses.push((String::from_utf8_lossy(&path).into_owned(), status));
        }
    }
    let b_seen = fx.standin(B).received();
    assert!(
        b_seen.is_empty(),
        "requests for {A}'s group reached {B}: {b_seen:#?}\nstatuses: {statuses:#?}"
    );
    // Whatever reached A went through a member's route: its path is under the member.
    for received in fx.standin(A).received() {
        assert!(
            A_MEMBERS.iter().any(|m| under_model(&received.path, m)),
            "{A}'s ModelMesh got a path outside its members: {received:?}"
        );
    }
    // Not every hostile-looking path is refused: a plain one with a query is a proper
    // group request and still reaches a member (GET on `infer`: the stand-in says 405).
    assert!(
        !fx.standin(A).received().is_empty(),
        "no request reached {A}: {statuses:#?}"
    );

    // The same override tricks on a proper request stay within A's group.
    for headers in header_sets {
        let status = raw_request(gateway, b"/modelmesh/tenant-a/v2/models/ai-model", headers).await;
        // 400: Envoy refuses the header value with CR/LF before any routing.
        assert!(matches!(status, 200 | 400), "{headers:?}: status {status}");
    }
    assert!(
        fx.standin(B).received().is_empty(),
        "an override left the group"
    );

    // Control: B is reachable by its own paths, so the emptiness above means something.
    let status = raw_request(gateway, b"/modelmesh/tenant-b/v2/models/b-secret", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(fx.standin(B).received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_grpc_model_headers_never_reach_another_namespace() {
    let fx = fixture().await;
    let client = fx.grpc().await;
    // Each case names A's group (or a spelling of it); two also name B's model.
    let cases: [&[&str]; 10] = [
        &["ai-model", "b-secret"],
        &["b-secret", "ai-model"],
        &["ai-model", "ai-model"],
        &["ai-model", "a-one"],
        &["a-one", "ai-model"],
        &["ai-model", "tenant-b"],
        &["ai-model", ""],
        &["AI-MODEL"],
        &["ai-model,a-one"],
        &["ai-model", "a-two", "ai-model"],
    ];
    let mut outcomes = Vec::new();
    for values in cases {
        for override_value in [None, Some("b-secret")] {
            let mut request = tonic::Request::new(ModelInferRequest::default());
            for value in values {
                request
                    .metadata_mut()
                    .append("mm-vmodel-id", value.parse().expect("header value"));
            }
            if let Some(v) = override_value {
                request
                    .metadata_mut()
                    .append("x-modelsplit-member", v.parse().expect("header value"));
            }
            let result = client.clone().model_infer(request).await;
            outcomes.push((
                values.to_vec(),
                override_value,
                result
                    .as_ref()
                    .map(|r| r.get_ref().model_name.clone())
                    .map_err(|s| s.code()),
            ));
        }
    }
    // Envoy, the filter and ModelMesh all read the first value of a repeated header:
    // a call whose first value is B's own model (B owns that gRPC name) is B's call;
    // every other call names A's group first and must stay in A.
    let b_seen = fx.standin(B).received();
    let b_first = cases.iter().filter(|c| c[0] == "b-secret").count() * 2;
    assert!(
        b_seen.len() == b_first
            && b_seen
                .iter()
                .all(|r| r.model == "b-secret" && r.vmodel_header.as_deref() == Some("b-secret")),
        "gRPC calls naming {A}'s group first reached {B}: {b_seen:#?}\noutcomes: {outcomes:#?}"
    );
    for received in fx.standin(A).received() {
        assert_eq!(received.protocol, Protocol::Grpc);
        assert!(
            A_MEMBERS.contains(&received.model.as_str()),
            "{A}'s ModelMesh was asked for a non-member: {received:?}\noutcomes: {outcomes:#?}"
        );
    }
    // A single proper header is still routed, with B's member name ignored as override.
    let served = outcomes
        .iter()
        .filter(|(_, _, r)| matches!(r, Ok(m) if A_MEMBERS.contains(&m.as_str())))
        .count();
    assert!(served > 0, "no call was served: {outcomes:#?}");
}
