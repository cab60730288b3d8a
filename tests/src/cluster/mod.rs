//! A real control plane for the cluster tests: etcd, kube-apiserver and istiod built from
//! their Go modules (tests/control-plane/build.sh), Istio's own CRDs, minimal KServe CRDs,
//! an ingress gateway (Envoy 1.40) configured by istiod, ModelMesh stand-ins behind
//! ServiceEntries, and `modelsplit run` installed from controller/deploy/ and running as its
//! ServiceAccount. Everything is torn down when the [`Cluster`] is dropped.

pub mod apiserver;
pub mod binaries;
pub mod controller;
pub mod istio;
pub mod kubectl;
pub mod pki;
pub mod process;
pub mod proxy;
pub mod service;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use apiserver::ApiServer;
use binaries::ControlPlaneBinaries;
use controller::{Controller, ModuleSource};
use istio::{GatewayMark, IstioGateway, Istiod};
use kubectl::Kubectl;
use process::free_port;
use service::ServiceProxy;

use crate::standin::{StandIn, StandInConfig};

/// The gateway every mesh namespace of these tests is bound to (the ODH default).
pub const GATEWAY_NAMESPACE: &str = "istio-system";
pub const GATEWAY_NAME: &str = "odh-gateway";
/// The ServingRuntime the tests' InferenceServices run on.
pub const RUNTIME: &str = "my-runtime";

/// The running control plane, gateway and stand-ins of one test.
pub struct Cluster {
    pub admin: Kubectl,
    /// kubeconfig with the controller's ServiceAccount token.
    pub controller_kubeconfig: PathBuf,
    pub gateway: IstioGateway,
    pub standins: BTreeMap<String, StandIn>,
    /// The controller's Service, where the gateway fetches an `http://` filter module.
    pub filter_service: ServiceProxy,
    pub dir: PathBuf,
    // Drop order: gateway (field above) first, then istiod, then the API server.
    pub istiod: Istiod,
    pub api: ApiServer,
    _tempdir: Option<tempfile::TempDir>,
    // Last: one cluster at a time per test binary (2 cores, ~1 GiB each).
    _one_at_a_time: tokio::sync::MutexGuard<'static, ()>,
}

static ONE_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Stand-ins serving exactly the models of each namespace.
fn only(namespaces: &[(&str, &[&str])]) -> Vec<StandInConfig> {
    namespaces
        .iter()
        .map(|(namespace, models)| StandInConfig::only(namespace, models))
        .collect()
}

impl Cluster {
    /// Starts everything but the controller; `namespaces` are mesh namespaces bound to the
    /// gateway, each with a ModelMesh stand-in that serves exactly `models`.
    pub async fn start(namespaces: &[(&str, &[&str])]) -> Cluster {
        Cluster::start_with(&only(namespaces), true).await
    }

    /// Like [`Cluster::start`], with stand-ins as `standins` configure them (say, a model
    /// that fails some requests).
    pub async fn start_standins(standins: &[StandInConfig]) -> Cluster {
        Cluster::start_with(standins, true).await
    }

    /// Like [`Cluster::start`], but the namespaces are as they are before the ODH workflow
    /// (the install guide's step 4): not in the mesh, no gateway named, their runtime without
    /// `enable-route`; ModelMesh's Service (the stand-in) is there.
    pub async fn start_before_odh(namespaces: &[(&str, &[&str])]) -> Cluster {
        Cluster::start_with(&only(namespaces), false).await
    }

    async fn start_with(configs: &[StandInConfig], in_mesh: bool) -> Cluster {
        let one_at_a_time = ONE_CLUSTER.lock().await;
        let started = Instant::now();
        let binaries = ControlPlaneBinaries::require();
        let tempdir = tempfile::Builder::new()
            .prefix("modelsplit-cluster-")
            .tempdir()
            .expect("temp dir");
        let dir = tempdir.path().to_path_buf();
        let api = ApiServer::start(&binaries, &dir).await;
        let admin = Kubectl::new(&binaries.kubectl, &api.admin_kubeconfig);

        // CRDs: Istio's from its module (server-side: they are too big for client-side apply).
        admin.run(&[
            "apply",
            "--server-side",
            "-f",
            &binaries.istio_crds.display().to_string(),
        ]);
        admin.run(&[
            "apply",
            "--server-side",
            "-f",
            &kserve_crds().display().to_string(),
        ]);
        admin.run(&[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ]);

        let port = free_port();
        admin.apply(&gateway_yaml(port));

        let mut standins = BTreeMap::new();
        for config in configs {
            let namespace = &config.namespace;
            let standin = StandIn::start_local(config.clone())
                .await
                .expect("stand-in");
            admin.apply(&if in_mesh {
                mesh_namespace_yaml(namespace, &standin)
            } else {
                format!(
                    "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n---\n{}---\n{}",
                    serving_runtime_yaml(namespace, false),
                    modelmesh_service_yaml(namespace, &standin)
                )
            });
            standins.insert(namespace.to_string(), standin);
        }

        let istiod = Istiod::start(&binaries, &api.admin_kubeconfig, &dir).await;
        let filter_service = ServiceProxy::start().await;
        let gateway = IstioGateway::start(&istiod, port, filter_service.port, &dir).await;
        let controller_kubeconfig = controller::install(&admin, &dir, api.port, &api.pki.ca_cert);
        let mut cluster = Cluster {
            admin,
            controller_kubeconfig,
            gateway,
            standins,
            filter_service,
            dir,
            istiod,
            api,
            _tempdir: Some(tempdir),
            _one_at_a_time: one_at_a_time,
        };
        cluster.wait_gateway_listening().await;
        eprintln!(
            "cluster up in {:.1}s (API server {}, gateway :{}, dir {})",
            started.elapsed().as_secs_f64(),
            cluster.api.url(),
            cluster.gateway.port,
            cluster.dir.display()
        );
        cluster
    }

    /// Replaces the gateway's Envoy with a new one on the same Gateway port, as a gateway pod
    /// deleted and started again: it loads its filter modules afresh.
    pub async fn restart_gateway(&mut self) {
        self.gateway.stop();
        self.gateway = IstioGateway::start(
            &self.istiod,
            self.gateway.port,
            self.filter_service.port,
            &self.dir,
        )
        .await;
        self.wait_gateway_listening().await;
    }

    /// Waits until calls to `group` are all answered by its members: with a module fetched
    /// over `http://` the filter may start on the gateway's workers after its configuration
    /// shows in `config_dump`, and calls meanwhile pass it by (FAIL_OPEN). On a timeout, says
    /// what the gateway's Wasm and module fetches show.
    pub async fn wait_routed(&self, namespace: &str, group: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let http = crate::http::HttpClient::default();
        let url = self
            .gateway
            .url(&format!("/modelmesh/{namespace}/v2/models/{group}/infer"));
        loop {
            // A gateway just (re)started may not accept connections yet: not routed either.
            let mut probe = crate::observe::Tally::default();
            for _ in 0..20 {
                match crate::infer::try_rest_infer(&http, &url).await {
                    Ok(observed) => {
                        if let Some(problem) = observed.problem(namespace) {
                            probe.problem_count += 1;
                            probe.problems.push(problem);
                        }
                    }
                    Err(error) => {
                        eprintln!("wait_routed: the gateway does not take the call yet: {error}");
                        probe.problem_count += 1;
                        probe.problems.push(error.to_string());
                    }
                }
                if probe.problem_count > 0 {
                    break;
                }
            }
            if probe.problem_count == 0 {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "the gateway did not route {namespace}/{group} within {timeout:?}: {:?}\n\
                     connections to the controller's Service: {}\ngateway stats:\n{}",
                    probe.problems,
                    self.filter_service.connections(),
                    self.gateway
                        .admin("/stats?filter=wasm|extension_config|cluster\\._\\.upstream_rq")
                        .await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Keeps the working directory (logs) after the test, e.g. to read it after a failure.
    pub fn keep_dir(&mut self) {
        if let Some(dir) = self._tempdir.take() {
            let _ = dir.keep();
        }
    }

    /// Waits until the gateway's Envoy has bound the Gateway object's port (istiod pushed
    /// the listener). The port was picked free before the Gateway was written; when
    /// another process took it meanwhile, Envoy refuses the listener, and the Gateway is
    /// moved to a fresh port.
    async fn wait_gateway_listening(&mut self) {
        for attempt in 1..=process::START_ATTEMPTS {
            let port = self.gateway.port;
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                if self.gateway.listening_on(port).await {
                    return;
                }
                if self.gateway.port_taken(port) {
                    break;
                }
                self.gateway
                    .assert_running("waiting for the Gateway's listener");
                assert!(
                    Instant::now() < deadline,
                    "the gateway never listened on the Gateway's port {port} (istiod pushed no listener)"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let fresh = free_port();
            eprintln!(
                "gateway port {port} was taken (attempt {attempt}); moving the Gateway to {fresh}"
            );
            self.gateway.port = fresh;
            self.admin.apply(&gateway_yaml(fresh));
        }
        panic!(
            "the Gateway's port was taken {} times",
            process::START_ATTEMPTS
        );
    }

    /// Starts a replica of `modelsplit run` as the controller's ServiceAccount.
    pub fn controller(&self, identity: &str, extra: &[&str]) -> Controller {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Controller::start(
            &self.controller_kubeconfig,
            identity,
            ModuleSource::FileUrl,
            &extra,
            &self.dir,
        )
    }

    /// Like [`Cluster::controller`], but the replica publishes the module it serves itself
    /// (the default without `--url`), read from `module` (`--filter-file`).
    pub fn controller_serving_filter(
        &self,
        identity: &str,
        module: &Path,
        extra: &[&str],
    ) -> Controller {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Controller::start(
            &self.controller_kubeconfig,
            identity,
            ModuleSource::Served(module.to_path_buf()),
            &extra,
            &self.dir,
        )
    }

    pub fn standin(&self, namespace: &str) -> &StandIn {
        &self.standins[namespace]
    }

    /// Waits until the gateway runs `group` of `namespace` with exactly `weights` on every
    /// worker, not just on its main thread: [`Cluster::wait_filter_weights`], then until
    /// what changed since `since` (taken before the change was made) has reached every
    /// worker ([`GatewayMark::in_force_since`]). Requests sent after this returns are
    /// decided by that configuration.
    pub async fn wait_in_force(
        &self,
        namespace: &str,
        group: &str,
        weights: &[(&str, u64)],
        since: &GatewayMark,
        timeout: Duration,
    ) -> Duration {
        let started = Instant::now();
        self.wait_filter_weights(namespace, group, weights, timeout)
            .await;
        let deadline = started + timeout;
        loop {
            let now = self.gateway.mark().await;
            if now.in_force_since(since) {
                return started.elapsed();
            }
            if Instant::now() > deadline {
                panic!(
                    "{namespace}/{group} = {weights:?} did not reach every worker of the gateway within {timeout:?}: {now:#?} since {since:#?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the gateway runs a filter config in which `group` of `namespace` has
    /// exactly `weights` (member -> weight as the controller writes it: basis points), as
    /// its main thread has it (`config_dump`): workers may still be taking it up (see
    /// [`Cluster::wait_in_force`]).
    pub async fn wait_filter_weights(
        &self,
        namespace: &str,
        group: &str,
        weights: &[(&str, u64)],
        timeout: Duration,
    ) -> Duration {
        let started = Instant::now();
        let want: BTreeMap<String, u64> =
            weights.iter().map(|(m, w)| (m.to_string(), *w)).collect();
        let deadline = started + timeout;
        loop {
            let configs = self.gateway.filter_configs().await;
            let found: Vec<_> = configs
                .iter()
                .filter_map(|(_, c)| group_weights(c, namespace, group))
                .collect();
            if !found.is_empty() && found.iter().all(|w| *w == want) {
                return started.elapsed();
            }
            if Instant::now() > deadline {
                panic!(
                    "the gateway did not run {namespace}/{group} = {want:?} within {timeout:?}; it runs {configs:#?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A failed test keeps its logs (every process's, the audit log) for reading.
        if std::thread::panicking() {
            if let Some(dir) = self._tempdir.take() {
                eprintln!("cluster test failed: logs kept in {}", dir.keep().display());
            }
        }
    }
}

/// member -> weight of `namespace/group` in a filter config, None when the group is absent.
pub fn group_weights(
    config: &serde_json::Value,
    namespace: &str,
    group: &str,
) -> Option<BTreeMap<String, u64>> {
    let groups = config.get("groups")?.as_array()?;
    let found = groups.iter().find(|g| {
        g.get("namespace").and_then(|v| v.as_str()) == Some(namespace)
            && g.get("name").and_then(|v| v.as_str()) == Some(group)
    })?;
    Some(
        found
            .get("members")?
            .as_array()?
            .iter()
            .filter_map(|m| {
                Some((
                    m.get("name")?.as_str()?.to_string(),
                    m.get("weight")?.as_f64()? as u64,
                ))
            })
            .collect(),
    )
}

/// The gateway namespace and the Gateway `odh-gateway` serving HTTP on `port`.
fn gateway_yaml(port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {GATEWAY_NAMESPACE}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: {GATEWAY_NAME}\n  namespace: {GATEWAY_NAMESPACE}\n\
         spec:\n  selector:\n    istio: ingressgateway\n  servers:\n  - port:\n      number: {port}\n      name: http\n      protocol: HTTP\n    hosts: [\"*\"]\n"
    )
}

fn kserve_crds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("control-plane/crds/kserve.yaml")
}

/// A mesh namespace as in the ODH workflow, its ServingRuntime with `enable-route`, and
/// its `modelmesh-serving` Service as a ServiceEntry pointing at the stand-in.
pub fn mesh_namespace_yaml(namespace: &str, standin: &StandIn) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {namespace}
  labels:
    opendatahub.io/service-mesh: "true"
  annotations:
    maistra.io/gateway-namespace: {GATEWAY_NAMESPACE}
    maistra.io/gateway-name: {GATEWAY_NAME}
---
{runtime}---
{service}"#,
        runtime = serving_runtime_yaml(namespace, true),
        service = modelmesh_service_yaml(namespace, standin),
    )
}

/// The ServingRuntime [`RUNTIME`] of `namespace`, with or without `enable-route: "true"`.
pub fn serving_runtime_yaml(namespace: &str, enable_route: bool) -> String {
    let annotations = if enable_route {
        "\n  annotations:\n    enable-route: \"true\""
    } else {
        ""
    };
    format!(
        r#"apiVersion: serving.kserve.io/v1alpha1
kind: ServingRuntime
metadata:
  name: {RUNTIME}
  namespace: {namespace}{annotations}
spec:
  multiModel: true
  supportedModelFormats:
  - name: sklearn
    autoSelect: true
  containers:
  - name: mlserver
    image: seldonio/mlserver:1.3.2
"#
    )
}

/// ModelMesh's `modelmesh-serving` Service of `namespace`, played by the stand-in.
pub fn modelmesh_service_yaml(namespace: &str, standin: &StandIn) -> String {
    format!(
        r#"# ModelMesh's Service, played by the stand-in on loopback (Endpoints reject loopback
# addresses; a STATIC ServiceEntry does not).
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: modelmesh-serving
  namespace: {namespace}
spec:
  hosts: [modelmesh-serving.{namespace}.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 8008, name: http, protocol: HTTP}}
  - {{number: 8033, name: grpc, protocol: GRPC}}
  endpoints:
  - address: 127.0.0.1
    ports: {{http: {rest}, grpc: {grpc}}}
---
# No istio-agent here, so no SDS: plaintext to the stand-in.
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: modelmesh-serving
  namespace: {namespace}
spec:
  host: modelmesh-serving.{namespace}.svc.cluster.local
  trafficPolicy:
    tls:
      mode: DISABLE
"#,
        rest = standin.rest_addr.port(),
        grpc = standin.grpc_addr.port(),
    )
}

/// An InferenceService on ModelMesh in `namespace`, optionally in `group` with `weight`.
/// The InferenceServices of group `group` in `namespace`, one per `(member, weight)`.
pub fn group_yaml(namespace: &str, group: &str, members: &[(&str, &str)]) -> String {
    members
        .iter()
        .map(|(member, weight)| isvc_yaml(namespace, member, Some(group), Some(weight)))
        .collect()
}

pub fn isvc_yaml(namespace: &str, name: &str, group: Option<&str>, weight: Option<&str>) -> String {
    let label = group
        .map(|g| format!("\n  labels:\n    serving.kserve.io/model-tag: {g}"))
        .unwrap_or_default();
    let weight = weight
        .map(|w| format!("\n    serving.kserve.io/canaryTrafficPercent: \"{w}\""))
        .unwrap_or_default();
    format!(
        "apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata:\n  name: {name}\n  namespace: {namespace}{label}\n  annotations:\n    serving.kserve.io/deploymentMode: ModelMesh{weight}\nspec:\n  predictor:\n    model:\n      modelFormat:\n        name: sklearn\n      runtime: {RUNTIME}\n      storage:\n        key: localMinIO\n        path: sklearn/{name}.joblib\n---\n"
    )
}

/// Requests in flight at once when the cluster tests send traffic.
const CONCURRENCY: usize = 32;

impl Cluster {
    /// `total` REST infer calls to `/modelmesh/<namespace>/v2/models/<model>/infer` through
    /// the gateway, tallied by member.
    pub async fn rest_tally(
        &self,
        namespace: &str,
        model: &str,
        total: usize,
    ) -> crate::observe::Tally {
        let url = self
            .gateway
            .url(&format!("/modelmesh/{namespace}/v2/models/{model}/infer"));
        crate::infer::rest_tally(&url, namespace, total, CONCURRENCY).await
    }

    /// `total` copies of the gRPC ModelInfer `request` through the gateway, tallied by
    /// member: `infer::vmodel_request` names the model in `mm-vmodel-id`,
    /// `infer::model_name_request` in the message's `model_name`, as KServe clients do.
    pub async fn grpc_tally(
        &self,
        namespace: &str,
        request: tonic::Request<crate::kserve::ModelInferRequest>,
        total: usize,
    ) -> crate::observe::Tally {
        crate::infer::grpc_tally(
            &self.gateway.url(""),
            request,
            namespace,
            total,
            CONCURRENCY,
        )
        .await
    }
}

/// One Event as `kubectl get events` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownEvent {
    pub type_: String,
    pub reason: String,
    pub object: String,
    pub message: String,
    pub reporting_controller: String,
}

impl Cluster {
    /// `modelsplit status --window=0 -o json` on istiod's gateway (its admin port, as
    /// `kubectl port-forward` gives it); panics with status's stderr when it fails.
    pub fn gateway_status(&self) -> serde_json::Value {
        let output = std::process::Command::new(controller::modelsplit_binary())
            .args(["status", "--window=0", "-o", "json"])
            .arg(format!(
                "--admin=http://127.0.0.1:{}",
                self.gateway.admin_port
            ))
            .output()
            .expect("modelsplit status runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("status -o json prints JSON")
    }

    /// `kubectl annotate --overwrite isvc <name> serving.kserve.io/canaryTrafficPercent=<w>`.
    pub fn annotate_weight(&self, namespace: &str, isvc: &str, weight: &str) {
        self.admin.run(&[
            "annotate",
            "--overwrite",
            "-n",
            namespace,
            "isvc",
            isvc,
            &format!("serving.kserve.io/canaryTrafficPercent={weight}"),
        ]);
    }

    /// The Events of `namespace`, as `kubectl get events` lists them (core/v1 view).
    pub fn events(&self, namespace: &str) -> Vec<ShownEvent> {
        let list = self.admin.get_json(&["events", "-n", namespace]);
        list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|e| ShownEvent {
                        type_: e["type"].as_str().unwrap_or_default().to_string(),
                        reason: e["reason"].as_str().unwrap_or_default().to_string(),
                        object: format!(
                            "{}/{}",
                            e["involvedObject"]["kind"].as_str().unwrap_or_default(),
                            e["involvedObject"]["name"].as_str().unwrap_or_default()
                        ),
                        message: e["message"].as_str().unwrap_or_default().to_string(),
                        reporting_controller: e["reportingComponent"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until an Event with `reason` about `object` (e.g. `InferenceService/x`) exists.
    pub async fn wait_event(
        &self,
        namespace: &str,
        reason: &str,
        object: &str,
        timeout: Duration,
    ) -> ShownEvent {
        self.wait_event_saying(namespace, reason, object, "", timeout)
            .await
    }

    /// Like [`Cluster::wait_event`], for an Event whose message contains `words` (an edit
    /// made in steps may pass through other states that have Events of the same reason).
    pub async fn wait_event_saying(
        &self,
        namespace: &str,
        reason: &str,
        object: &str,
        words: &str,
        timeout: Duration,
    ) -> ShownEvent {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self
                .events(namespace)
                .into_iter()
                .find(|e| e.reason == reason && e.object == object && e.message.contains(words))
            {
                return found;
            }
            if Instant::now() > deadline {
                panic!(
                    "no {reason} Event about {object} in {namespace} within {timeout:?}; Events: {:#?}",
                    self.events(namespace)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Requests in flight per protocol in a [`GroupLoad`].
const GROUP_LOAD_IN_FLIGHT: usize = 4;

/// Continuous REST and gRPC requests to one group through the gateway while a test
/// changes things; every answer must come from a member, in the group's namespace.
pub struct GroupLoad {
    namespace: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    answers: crate::infer::Answers,
    rest: tokio::task::JoinHandle<Vec<crate::infer::Timed>>,
    grpc: tokio::task::JoinHandle<Vec<crate::infer::Timed>>,
}

/// What a [`GroupLoad`] saw.
#[derive(Debug)]
pub struct LoadReport {
    pub sent: usize,
    /// Answers that were wrong: an error status from the gateway or ModelMesh (a 404 for a
    /// member without a route, NOT_FOUND), or an answer from outside the group.
    pub failed: usize,
    /// gRPC calls the connection dropped before any answer (CANCELLED / UNAVAILABLE with no
    /// response headers): Envoy draining connections when its listener changes (a WasmPlugin
    /// added or removed), not a routing decision.
    pub dropped: usize,
    /// The first few failures.
    pub failures: Vec<String>,
    pub by_member: BTreeMap<String, u64>,
}

impl GroupLoad {
    pub async fn start(cluster: &Cluster, namespace: &str, group: &str) -> GroupLoad {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answers = crate::infer::Answers::default();
        let url = cluster
            .gateway
            .url(&format!("/modelmesh/{namespace}/v2/models/{group}/infer"));
        let rest = crate::infer::timed_rest_until(
            stop.clone(),
            GROUP_LOAD_IN_FLIGHT,
            crate::http::HttpClient::default(),
            url,
            answers.clone(),
        );
        let grpc = crate::infer::timed_grpc_until(
            stop.clone(),
            GROUP_LOAD_IN_FLIGHT,
            crate::infer::grpc_client(&cluster.gateway.url("")).await,
            Box::leak(group.to_string().into_boxed_str()),
            answers.clone(),
        );
        GroupLoad {
            namespace: namespace.to_string(),
            stop,
            answers,
            rest,
            grpc,
        }
    }

    /// Waits until `more` requests sent from now on were answered: traffic through the
    /// state reached so far, however slow the machine.
    pub async fn wait_for_answers(&self, more: usize) {
        self.answers
            .wait_for_more(more, 2 * GROUP_LOAD_IN_FLIGHT, "group load")
            .await;
    }

    pub async fn finish(self) -> LoadReport {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut all = self.rest.await.expect("REST load");
        all.extend(self.grpc.await.expect("gRPC load"));
        let sent = all.len();
        let (dropped, observed): (Vec<_>, Vec<_>) =
            all.into_iter().map(|t| t.observed).partition(|o| {
                matches!(o.status, 1 | 14) && o.namespace.is_none() && o.routed_to.is_none()
            });
        let tally = crate::observe::Tally::of(&observed, &self.namespace);
        LoadReport {
            sent,
            dropped: dropped.len(),
            failed: tally.problem_count,
            failures: tally.problems,
            by_member: tally.by_member,
        }
    }
}
