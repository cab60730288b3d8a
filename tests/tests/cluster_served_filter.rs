//! The install's default filter module on a real control plane: `modelsplit run` without
//! `--url` serves the module it ships with at `/filter/<sha256>.wasm` on every replica,
//! publishes that URL (at its Service) and the digest in the WasmPlugin, and istiod's gateway
//! loads it from there and splits with it. After an upgrade (a new module: a new digest and
//! path) the WasmPlugin names the new module, the gateway is given it, and a gateway started
//! afresh loads it.
//!
//! What stands in for the cluster: istio-agent fetches a remote module in a real gateway pod
//! and hands Envoy a local file; here istiod's remote data source reaches Envoy itself, whose
//! cluster `_` (istiod's name for that fetch) leads to a stand-in of the controller's Service
//! forwarding to the replicas' metrics ports (tests/src/cluster/service.rs). Envoy then
//! fetches the module and checks its `sha256`. Plain Envoy fetches a remote module only while
//! a listener is being set up, not for a filter configuration (ECDS) that changes on a
//! running listener (seen here: one fetch through `_`, the filter then skipped), so the
//! upgraded module is loaded by a restarted gateway; istio-agent fetches on every change.
//!
//! Run alone with `scripts/test-cluster.sh cluster_served_filter`.

use std::path::Path;
use std::time::Duration;

use modelsplit_controller::cluster::filter_module::sha256_hex;
use modelsplit_e2e::cluster::controller::Controller;
use modelsplit_e2e::cluster::{group_yaml, Cluster};
use modelsplit_e2e::gateway::require_filter_wasm;
use modelsplit_e2e::http::HttpClient;
use serde_json::Value;

const NS: &str = "modelmesh-apps";
const MODELS: &[&str] = &["ai-model-one", "ai-model-two"];
const IN_FORCE: Duration = Duration::from_secs(60);

/// The URL the controller publishes for a module with digest `sha` (the defaults).
fn served_url(sha: &str) -> String {
    format!("http://modelsplit-controller-metrics.modelsplit-system.svc.cluster.local:8080/filter/{sha}.wasm")
}

/// `module` as a replica serves it: 200, `application/wasm`, exactly its bytes; another
/// digest is 503 (another replica may have it), another name 404.
async fn assert_serves(replica: &Controller, module: &[u8]) {
    let http = HttpClient::default();
    let base = format!("http://127.0.0.1:{}", replica.metrics_port);
    let sha = sha256_hex(module);
    let reply = http
        .get(&format!("{base}/filter/{sha}.wasm"), &[])
        .await
        .unwrap_or_else(|e| panic!("{}: GET the module: {e}", replica.identity));
    assert_eq!(reply.status, 200, "{}: {}", replica.identity, reply.text());
    assert_eq!(reply.header("content-type"), Some("application/wasm"));
    assert_eq!(sha256_hex(&reply.body), sha, "{}", replica.identity);
    assert_eq!(&reply.body[..], module);
    let other = format!("{base}/filter/{}.wasm", "0".repeat(64));
    let reply = http.get(&other, &[]).await.expect("GET another digest");
    assert_eq!(reply.status, 503, "{}", replica.identity);
    let reply = http
        .get(&format!("{base}/filter/plugin.wasm"), &[])
        .await
        .expect("GET a name");
    assert_eq!(reply.status, 404, "{}", replica.identity);
}

/// The WasmPlugin's `url` and `sha256` once they name the module with digest `sha`.
async fn wait_published(cluster: &Cluster, sha: &str) -> Value {
    let deadline = std::time::Instant::now() + IN_FORCE;
    loop {
        let plugin = cluster
            .admin
            .output(
                &[
                    "get",
                    "wasmplugin",
                    "-n",
                    "istio-system",
                    "modelsplit",
                    "-o",
                    "json",
                ],
                None,
            )
            .stdout;
        let plugin: Value = serde_json::from_slice(&plugin).unwrap_or(Value::Null);
        if plugin["spec"]["sha256"] == sha {
            return plugin;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the WasmPlugin never named the module {sha}: {plugin}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the gateway's filter runs the module from `url` (ECDS, as istiod sent it) and
/// `ai-model` at 80/20 on every worker.
async fn wait_gateway_runs(cluster: &Cluster, url: &str, sha: &str) {
    let deadline = std::time::Instant::now() + IN_FORCE;
    loop {
        let dump = cluster
            .gateway
            .admin("/config_dump?resource=ecds_filters")
            .await;
        let dump: Value = serde_json::from_str(&dump).unwrap_or(Value::Null);
        let remote = dump["configs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| &c["ecds_filter"]["typed_config"]["config"]["vm_config"]["code"]["remote"])
            .find(|r| r["http_uri"]["uri"] == url);
        if let Some(remote) = remote {
            assert_eq!(remote["sha256"], sha, "{remote}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway was never given the module at {url}: {dump}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster
        .wait_filter_weights(
            NS,
            "ai-model",
            &[("ai-model-one", 8000), ("ai-model-two", 2000)],
            IN_FORCE,
        )
        .await;
}

/// Every call to the group is answered by one of its members: the filter runs (without
/// it the group's name has no route and the gateway answers 404).
async fn assert_filter_routes(cluster: &Cluster) {
    cluster.wait_routed(NS, "ai-model", IN_FORCE).await;
    let tally = cluster.rest_tally(NS, "ai-model", 400).await;
    assert_eq!(tally.problem_count, 0, "{:?}", tally.problems);
    // 80/20 over 400 calls: a member with none is a 0.8^400 chance, i.e. never.
    for member in MODELS {
        assert!(
            tally.by_member.get(*member).copied().unwrap_or(0) > 0,
            "{member} got no call: {:?}",
            tally.by_member
        );
    }
    eprintln!("through the served module: {:?}", tally.by_member);
}

/// The built module with one custom section more: a valid module of the same filter with
/// another digest, as the next version's would have.
fn next_version(module: &[u8], dir: &Path) -> std::path::PathBuf {
    let name = b"modelsplit-next";
    let payload = b"v2";
    let mut bytes = module.to_vec();
    bytes.push(0); // custom section
    bytes.push(u8::try_from(1 + name.len() + payload.len()).expect("short section"));
    bytes.push(u8::try_from(name.len()).expect("short name"));
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    let path = dir.join("next-plugin.wasm");
    std::fs::write(&path, bytes).expect("write the next module");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gateway_loads_the_module_the_controller_serves_and_its_upgrade() {
    let mut cluster = Cluster::start(&[(NS, MODELS)]).await;
    let built = require_filter_wasm();
    let module = std::fs::read(&built).expect("read the built module");
    let sha = sha256_hex(&module);

    let mut leader = cluster.controller_serving_filter("replica-a", &built, &[]);
    leader.wait_ready().await;
    leader.wait_leader(true, IN_FORCE).await;
    let mut standby = cluster.controller_serving_filter("replica-b", &built, &[]);
    standby.wait_ready().await;
    // Any replica serves it, the standby too: the Service may pick either.
    assert_serves(&leader, &module).await;
    assert_serves(&standby, &module).await;
    cluster
        .filter_service
        .set_endpoints(&[leader.metrics_port, standby.metrics_port]);

    cluster.admin.apply(&group_yaml(
        NS,
        "ai-model",
        &[("ai-model-one", "80"), ("ai-model-two", "20")],
    ));
    let plugin = wait_published(&cluster, &sha).await;
    assert_eq!(plugin["spec"]["url"], served_url(&sha), "{plugin}");
    wait_gateway_runs(&cluster, &served_url(&sha), &sha).await;
    assert_filter_routes(&cluster).await;
    assert!(
        cluster.filter_service.connections() > 0,
        "the gateway never fetched through the Service"
    );

    // An upgrade: both replicas replaced by ones with the next module. It has a new digest
    // and path; the WasmPlugin names it, and the gateway loads it.
    let next = next_version(&module, &cluster.dir);
    let next_module = std::fs::read(&next).expect("read the next module");
    let next_sha = sha256_hex(&next_module);
    assert_ne!(next_sha, sha);
    // A rolling update: SIGTERM, as the kubelet sends it; the leader releases its Lease.
    for replica in [&mut standby, &mut leader] {
        replica.process().signal("TERM");
        assert!(replica.process().wait_exit(Duration::from_secs(30)));
    }
    let mut upgraded = cluster.controller_serving_filter("replica-c", &next, &[]);
    upgraded.wait_ready().await;
    assert_serves(&upgraded, &next_module).await;
    // The old module is gone with the old replicas: a gateway that still asks for it gets
    // 503 (retried while old replicas may still be behind the Service), not another module.
    let old = HttpClient::default()
        .get(
            &format!(
                "http://127.0.0.1:{}/filter/{sha}.wasm",
                upgraded.metrics_port
            ),
            &[],
        )
        .await
        .expect("GET the old module");
    assert_eq!(old.status, 503);
    cluster
        .filter_service
        .set_endpoints(&[upgraded.metrics_port]);
    let fetched_before = cluster.filter_service.connections();
    let plugin = wait_published(&cluster, &next_sha).await;
    assert_eq!(plugin["spec"]["url"], served_url(&next_sha), "{plugin}");
    // The running gateway is given the new module (istio-agent would fetch it now) ...
    wait_gateway_runs(&cluster, &served_url(&next_sha), &next_sha).await;
    // ... and a gateway started afresh fetches and runs it.
    cluster.restart_gateway().await;
    wait_gateway_runs(&cluster, &served_url(&next_sha), &next_sha).await;
    assert_filter_routes(&cluster).await;
    assert!(
        cluster.filter_service.connections() > fetched_before,
        "the gateway never fetched the next module"
    );
}
