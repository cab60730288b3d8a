//! The `modelsplit run` binary against a local fake API server: exit codes for a missing
//! CRD and an RBAC denial, and a whole life — ready, leading, applying, reporting
//! metrics, re-planning when a watched object changes — ending with SIGTERM, a clean exit
//! and the Lease released.

mod cluster_mock;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cluster_mock::fake_api::FakeApi;
use cluster_mock::*;
use serde_json::Value;

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The filter module the binary serves in these tests: a wasm header is all it checks.
const MODULE: &[u8] = b"\0asm\x01\0\0\0 modelsplit test module";

fn module_sha256() -> String {
    modelsplit_controller::cluster::filter_module::sha256_hex(MODULE)
}

/// `modelsplit run` serving [`MODULE`].
fn modelsplit_run(fake: &FakeApi, dir: &std::path::Path, metrics: SocketAddr) -> Command {
    let module = dir.join("plugin.wasm");
    std::fs::write(&module, MODULE).unwrap();
    modelsplit_run_with(
        fake,
        dir,
        metrics,
        &format!("--filter-file={}", module.display()),
    )
}

/// `modelsplit run` with `module`: the flag that says which filter module it publishes.
fn modelsplit_run_with(
    fake: &FakeApi,
    dir: &std::path::Path,
    metrics: SocketAddr,
    module: &str,
) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_modelsplit"));
    command
        .args(["run", "--debounce-ms", "50"])
        .arg(format!("--metrics-addr={metrics}"))
        .arg(module)
        .env("KUBECONFIG", fake.kubeconfig(dir))
        .env("POD_NAME", "pod-a")
        .env("POD_NAMESPACE", "modelsplit-system")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("modelsplit-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the binary to its end (it must end by itself within a minute).
async fn run_to_exit(mut command: Command) -> Output {
    let child = command.spawn().expect("start modelsplit");
    let waited = tokio::task::spawn_blocking(move || child.wait_with_output());
    tokio::time::timeout(Duration::from_secs(60), waited)
        .await
        .expect("modelsplit run should have stopped by itself")
        .unwrap()
        .unwrap()
}

/// `GET path` over plain HTTP/1.1: (status, body).
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Polls `check` every 50 ms until it holds, failing after 60 s.
async fn eventually(what: &str, child: &mut Child, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("modelsplit run exited ({status}) while waiting for {what}");
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_crd_exits_3_with_the_fix() {
    let fake = FakeApi::start(&seed_inputs()).await;
    fake.state
        .lock()
        .unwrap()
        .missing
        .insert("wasmplugins".to_string());
    let dir = temp_dir("crd");
    let output = run_to_exit(modelsplit_run(
        &fake,
        &dir,
        ([127, 0, 0, 1], free_port()).into(),
    ))
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("modelsplit run: the API server does not serve wasmplugins.extensions.istio.io (v1alpha1): its CustomResourceDefinition is not installed; install Istio (its extensions.istio.io CRDs; modelsplit is tested with istiod of the 1.31 development line)"),
        "{stderr}"
    );
    // Nothing was written.
    assert!(
        fake.requests().iter().all(|r| r.method == "GET"),
        "{:?}",
        fake.requests()
    );
}

/// No module and no `--url`: the gateway would be given a URL that serves nothing, so the
/// binary stops before it talks to the API server, naming the file and the fixes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_filter_module_and_no_url_exits_at_start_with_the_fix() {
    let fake = FakeApi::start(&seed_inputs()).await;
    let dir = temp_dir("no-module");
    let output = run_to_exit(modelsplit_run_with(
        &fake,
        &dir,
        ([127, 0, 0, 1], free_port()).into(),
        "--filter-file=/nonexistent/modelsplit/plugin.wasm",
    ))
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for needed in [
        "cannot read the filter module /nonexistent/modelsplit/plugin.wasm",
        "scripts/build-wasm.sh",
        "--url",
    ] {
        assert!(stderr.contains(needed), "{needed:?} missing in {stderr}");
    }
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());

    // With --url, no module is needed.
    let without_module = modelsplit_run_with(
        &fake,
        &dir,
        ([127, 0, 0, 1], free_port()).into(),
        "--url=https://example.com/modelsplit.wasm",
    );
    fake.state
        .lock()
        .unwrap()
        .missing
        .insert("wasmplugins".to_string());
    let output = run_to_exit(without_module).await;
    // It got as far as the API server (the CRD check), past the module.
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rbac_denial_exits_4_with_the_fix() {
    let fake = FakeApi::start(&seed_inputs()).await;
    fake.state
        .lock()
        .unwrap()
        .forbidden
        .insert("inferenceservices".to_string());
    let dir = temp_dir("rbac");
    let output = run_to_exit(modelsplit_run(
        &fake,
        &dir,
        ([127, 0, 0, 1], free_port()).into(),
    ))
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains(
            "modelsplit run: RBAC forbids list on inferenceservices.serving.kserve.io (v1beta1)"
        ),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_leads_applies_reports_and_shuts_down_cleanly_on_sigterm() {
    let fake = FakeApi::start(&seed_inputs()).await;
    let dir = temp_dir("life");
    // The metrics port is picked free before the start; if another process takes it
    // first, the binary exits on the bind and is started again on a fresh one.
    let mut attempts = 0;
    let (metrics, mut child) = loop {
        attempts += 1;
        let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut child = modelsplit_run(&fake, &dir, metrics)
            .spawn()
            .expect("start modelsplit");
        let deadline = Instant::now() + Duration::from_secs(60);
        let exited = loop {
            if http_get(metrics, "/readyz").is_some_and(|(status, _)| status == 200) {
                break false;
            }
            if let Ok(Some(_)) = child.try_wait() {
                break true;
            }
            assert!(Instant::now() < deadline, "gave up waiting for /readyz");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if !exited {
            break (metrics, child);
        }
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("metrics server on") && attempts < 5,
            "modelsplit run exited ({}) before it was ready: {stderr}",
            output.status
        );
    };

    eventually("the WasmPlugin and VirtualService", &mut child, || {
        fake.applied().len() >= 2
    })
    .await;
    eventually("two Events", &mut child, || {
        fake.requests()
            .iter()
            .filter(|r| r.uri.contains("/events"))
            .count()
            >= 2
    })
    .await;

    // Every applied WasmPlugin is stamped with when its filter config changed; apart from
    // that, what run applies is what render prints.
    let stamp_of = |plugin: &Value| -> k8s_openapi::jiff::Timestamp {
        let stamp = &plugin["metadata"]["annotations"]["modelsplit.io/config-changed-at"];
        stamp
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an RFC 3339 stamp: {stamp}"))
    };
    let first_stamp = fake
        .applied()
        .iter()
        .find(|o| o["kind"] == "WasmPlugin")
        .map(stamp_of)
        .expect("a WasmPlugin was applied");
    let mut applied: Vec<Value> = fake
        .applied()
        .into_iter()
        .map(|mut o| {
            if o["kind"] == "WasmPlugin" {
                o["metadata"].as_object_mut().unwrap().remove("annotations");
            }
            o
        })
        .collect();
    applied.sort_by_key(|o| o["kind"].as_str().unwrap_or("").to_string());
    // ... but for the module: by default, the one it serves, at its Service in its namespace.
    let sha256 = module_sha256();
    let mut golden = seed_golden();
    for object in &mut golden {
        if object["kind"] == "WasmPlugin" {
            object["spec"]["url"] = format!(
                "http://modelsplit-controller-metrics.modelsplit-system.svc.cluster.local:8080/filter/{sha256}.wasm"
            )
            .into();
            object["spec"]["sha256"] = sha256.clone().into();
        }
    }
    golden.sort_by_key(|o| o["kind"].as_str().unwrap_or("").to_string());
    assert_eq!(
        applied, golden,
        "what run applies is what render prints, with the served module"
    );
    let patch_uris: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.uri)
        .collect();
    assert!(
        patch_uris
            .iter()
            .all(|u| u.contains("fieldManager=modelsplit") && u.contains("force=true")),
        "{patch_uris:?}"
    );

    // Audit logs and API server metrics tell the replicas apart.
    let agent = format!("modelsplit/{} (pod-a)", env!("CARGO_PKG_VERSION"));
    let agents: std::collections::BTreeSet<Option<String>> =
        fake.requests().into_iter().map(|r| r.user_agent).collect();
    assert_eq!(agents, [Some(agent)].into());

    let lease_holder = || -> Option<String> {
        let state = fake.state.lock().unwrap();
        let leases = state.objects.get("/apis/coordination.k8s.io/v1/leases")?;
        leases.first()?["spec"]["holderIdentity"]
            .as_str()
            .map(str::to_string)
    };
    assert_eq!(lease_holder().as_deref(), Some("pod-a"));

    let (status, _) = http_get(metrics, "/healthz").expect("/healthz");
    assert_eq!(status, 200);
    // The module it publishes, at the path it publishes; another digest is not here (503:
    // another replica may have it), anything else is not found.
    let (status, body) = http_get(metrics, &format!("/filter/{sha256}.wasm")).expect("module");
    assert_eq!((status, body.as_bytes()), (200, MODULE));
    let other = format!("/filter/{}.wasm", "0".repeat(64));
    let (status, _) = http_get(metrics, &other).expect("another module");
    assert_eq!(status, 503);
    // ... and it closes the connection, so a retry may reach another replica.
    let mut stream = TcpStream::connect(metrics).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {other} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("the server closes a kept-alive connection after a 503");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let (status, _) = http_get(metrics, "/filter/plugin.wasm").expect("a name");
    assert_eq!(status, 404);
    let mut text = String::new();
    eventually("the first reconcile in /metrics", &mut child, || {
        text = http_get(metrics, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default();
        text.contains("modelsplit_reconciles_total{result=\"ok\"}")
    })
    .await;
    for line in [
        "modelsplit_leader 1",
        "modelsplit_groups{state=\"valid\"} 1",
        "modelsplit_groups{state=\"invalid\"} 0",
        "modelsplit_writes_total{kind=\"WasmPlugin\",action=\"created\"} 1",
        "modelsplit_writes_total{kind=\"VirtualService\",action=\"created\"} 1",
        "modelsplit_apply_duration_seconds_count 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }

    // `kubectl annotate` both members, 70/30: the watch brings the change, the
    // controller re-plans and applies the WasmPlugin again (the routes stay as they are).
    let writes_before = fake.applied().len();
    for (member, percent) in [("ai-model-one", "70"), ("ai-model-two", "30")] {
        let mut isvc = seed_inputs()
            .into_iter()
            .find(|o| o["metadata"]["name"] == member)
            .unwrap();
        isvc["metadata"]["annotations"]["serving.kserve.io/canaryTrafficPercent"] = percent.into();
        fake.update(isvc);
    }
    let weights = |plugin: &Value| -> Vec<Value> {
        plugin["spec"]["pluginConfig"]["groups"][0]["members"]
            .as_array()
            .map(|members| members.iter().map(|m| m["weight"].clone()).collect())
            .unwrap_or_default()
    };
    eventually("the 70/30 split applied", &mut child, || {
        fake.applied()
            .iter()
            .any(|o| o["kind"] == "WasmPlugin" && weights(o) == [7000, 3000])
    })
    .await;
    eventually("the Event for the new split", &mut child, || {
        fake.requests().iter().any(|r| {
            r.uri.contains("/events")
                && r.body["note"]
                    == "modelmesh-apps/ai-model: valid: ai-model-one=70% ai-model-two=30%"
        })
    })
    .await;
    let after_change: Vec<Value> = fake.applied()[writes_before..].to_vec();
    assert!(
        after_change.iter().all(|o| o["kind"] == "WasmPlugin"),
        "only the WasmPlugin changes: {after_change:?}"
    );
    // A new filter config, a new stamp.
    assert!(
        after_change.iter().all(|o| stamp_of(o) > first_stamp),
        "{after_change:?}"
    );
    // Its own writes come back through the watch as no-ops: no write loop.
    let settled = fake.applied().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fake.applied().len(),
        settled,
        "the controller keeps rewriting"
    );

    // SIGTERM, as the kubelet sends it.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let waited = tokio::task::spawn_blocking(move || child.wait_with_output());
    let output = tokio::time::timeout(Duration::from_secs(60), waited)
        .await
        .expect("modelsplit run stops on SIGTERM")
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("released the lease"), "{stderr}");
    assert_eq!(lease_holder(), None, "the standby can take over at once");
    let last: Vec<Value> = fake
        .requests()
        .into_iter()
        .rev()
        .take(1)
        .map(|r| r.body)
        .collect();
    assert_eq!(last[0]["spec"]["leaseDurationSeconds"], 1);
}
