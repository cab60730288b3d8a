//! etcd and kube-apiserver as separate processes: a real API server with RBAC, admission,
//! CRD validation and server-side apply — the way envtest runs one — but no controllers,
//! scheduler or kubelet. The API server can be stopped and started again on the same port
//! and etcd, to test what clients do while it is away.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::binaries::ControlPlaneBinaries;
use super::pki::Pki;
use super::process::{free_port, Process, START_ATTEMPTS};

/// The admin's bearer token (group `system:masters`), for the test's own setup only.
const ADMIN_TOKEN: &str = "modelsplit-test-admin";

/// A running etcd + kube-apiserver.
pub struct ApiServer {
    pub dir: PathBuf,
    pub port: u16,
    pub pki: Pki,
    /// kubeconfig of the cluster admin (setup, inspection): never given to the controller.
    pub admin_kubeconfig: PathBuf,
    binaries: ControlPlaneBinaries,
    etcd_port: u16,
    // Dropped in reverse order of starting: API server before etcd.
    apiserver: Option<Process>,
    _etcd: Process,
}

impl ApiServer {
    pub async fn start(binaries: &ControlPlaneBinaries, dir: &Path) -> ApiServer {
        let pki = Pki::create(&dir.join("pki"));
        let (etcd, etcd_port) = start_etcd(binaries, dir).await;

        std::fs::write(
            dir.join("tokens.csv"),
            format!("{ADMIN_TOKEN},admin,admin-uid,\"system:masters\"\n"),
        )
        .expect("write tokens.csv");
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        let mut server = ApiServer {
            dir: dir.to_path_buf(),
            port: 0,
            pki,
            admin_kubeconfig,
            binaries: binaries.clone(),
            etcd_port,
            apiserver: None,
            _etcd: etcd,
        };
        for attempt in 1..=START_ATTEMPTS {
            server.port = free_port();
            write_kubeconfig(
                &server.admin_kubeconfig,
                server.port,
                &server.pki.ca_cert,
                "admin",
                ADMIN_TOKEN,
            );
            if server.try_start_apiserver().await {
                return server;
            }
            eprintln!(
                "kube-apiserver: port {} was taken (attempt {attempt})",
                server.port
            );
        }
        panic!("kube-apiserver: {START_ATTEMPTS} ports in a row were taken");
    }

    /// Starts the kube-apiserver process again on its port (after [`ApiServer::stop_apiserver`];
    /// clients keep their kubeconfigs) and waits until it is ready.
    pub async fn start_apiserver(&mut self) {
        for _ in 1..=START_ATTEMPTS {
            if self.try_start_apiserver().await {
                return;
            }
            // Our port, taken meanwhile by someone else: clients cannot move, so wait.
            eprintln!("kube-apiserver: port {} is taken; retrying", self.port);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        panic!("kube-apiserver: port {} stays taken", self.port);
    }

    /// Starts kube-apiserver on `self.port` and waits until it is ready; false when it
    /// exited because the port was taken.
    async fn try_start_apiserver(&mut self) -> bool {
        let dir = &self.dir;
        let mut command = Command::new(&self.binaries.kube_apiserver);
        command.args([
            &format!("--etcd-servers=http://127.0.0.1:{}", self.etcd_port),
            &format!("--secure-port={}", self.port),
            "--bind-address=127.0.0.1",
            &format!("--tls-cert-file={}", self.pki.server_cert.display()),
            &format!("--tls-private-key-file={}", self.pki.server_key.display()),
            &format!("--client-ca-file={}", self.pki.ca_cert.display()),
            &format!("--token-auth-file={}", dir.join("tokens.csv").display()),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            &format!("--service-account-key-file={}", self.pki.sa_pub.display()),
            &format!(
                "--service-account-signing-key-file={}",
                self.pki.sa_key.display()
            ),
            "--api-audiences=https://kubernetes.default.svc.cluster.local",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.96.0.0/16",
            // No Endpoints for the `kubernetes` Service: they would name a loopback address.
            "--endpoint-reconciler-type=none",
            &format!("--cert-dir={}", dir.join("cert-dir").display()),
            "--profiling=false",
            "--v=1",
            // Every write, with who made it (user agent names the controller replica) and
            // when the server received it: what the write-safety tests assert on.
            &format!("--audit-policy-file={}", self.audit_policy().display()),
            &format!("--audit-log-path={}", dir.join("audit.log").display()),
            "--audit-log-mode=blocking",
        ]);
        let mut process = Process::spawn("kube-apiserver", command, dir);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let ready = Command::new(&self.binaries.kubectl)
                .args(["--kubeconfig"])
                .arg(&self.admin_kubeconfig)
                .args(["get", "--raw", "/readyz", "--request-timeout=2s"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ready && process.running() {
                self.apiserver = Some(process);
                return true;
            }
            if process.exited_on_taken_port() {
                return false;
            }
            process.assert_running("starting");
            assert!(
                Instant::now() < deadline,
                "the API server was not ready after 90 s:\n{}",
                process.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn audit_policy(&self) -> PathBuf {
        let path = self.dir.join("audit-policy.yaml");
        std::fs::write(
            &path,
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n\
             - level: Metadata\n  verbs: [create, update, patch, delete]\n- level: None\n",
        )
        .expect("write audit policy");
        path
    }

    /// Every write the API server received so far, oldest first.
    pub fn audit(&self) -> Vec<AuditEntry> {
        let text = std::fs::read_to_string(self.dir.join("audit.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .map(|v| AuditEntry {
                verb: v["verb"].as_str().unwrap_or_default().to_string(),
                user_agent: v["userAgent"].as_str().unwrap_or_default().to_string(),
                resource: v["objectRef"]["resource"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                namespace: v["objectRef"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                name: v["objectRef"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                code: v["responseStatus"]["code"].as_u64().unwrap_or(0),
                received: v["requestReceivedTimestamp"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            })
            .collect()
    }

    /// Stops the API server (SIGKILL: no graceful drain), keeping etcd and its data.
    pub fn stop_apiserver(&mut self) {
        if let Some(mut process) = self.apiserver.take() {
            process.kill();
        }
    }

    /// The API server's log so far.
    pub fn log(&self) -> String {
        self.apiserver
            .as_ref()
            .map(Process::log)
            .unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

/// A kubeconfig for `user` with a bearer token, trusting the test CA.
pub fn write_kubeconfig(path: &Path, port: u16, ca: &Path, user: &str, token: &str) {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: {user}\n    namespace: default\ncurrent-context: test\n",
        ca = ca.display(),
    );
    std::fs::write(path, text).expect("write kubeconfig");
}

/// One write as the API server's audit log recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub verb: String,
    pub user_agent: String,
    pub resource: String,
    pub namespace: String,
    pub name: String,
    /// HTTP status of the answer.
    pub code: u64,
    /// RFC 3339 with microseconds: sorts as text.
    pub received: String,
}

impl AuditEntry {
    /// Whether a controller replica `identity` made this request.
    pub fn by_replica(&self, identity: &str) -> bool {
        self.user_agent.starts_with("modelsplit/")
            && self.user_agent.ends_with(&format!("({identity})"))
    }

    /// Whether this wrote a WasmPlugin or VirtualService (not a Lease or an Event).
    pub fn is_routing_write(&self) -> bool {
        matches!(self.resource.as_str(), "wasmplugins" | "virtualservices")
    }
}

/// Starts etcd on fresh ports (again if one was taken) and waits until it is healthy.
async fn start_etcd(binaries: &ControlPlaneBinaries, dir: &Path) -> (Process, u16) {
    let http = crate::http::HttpClient::with_timeout(Duration::from_secs(10));
    for attempt in 1..=START_ATTEMPTS {
        let (port, peer_port) = (free_port(), free_port());
        // A name no other etcd has: the port must answer as this one.
        let name = format!("test-{}-{attempt}", std::process::id());
        let mut etcd = Command::new(&binaries.etcd);
        etcd.args([
            &format!("--name={name}"),
            &format!("--data-dir={}", dir.join("etcd").display()),
            &format!("--listen-client-urls=http://127.0.0.1:{port}"),
            &format!("--advertise-client-urls=http://127.0.0.1:{port}"),
            &format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            &format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
            &format!("--initial-cluster={name}=http://127.0.0.1:{peer_port}"),
            // A test cluster: durability is not the point, speed is.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]);
        let mut process = Process::spawn("etcd", etcd, dir);
        let health = format!("http://127.0.0.1:{port}/health");
        let members = format!("http://127.0.0.1:{port}/v3/cluster/member/list");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let healthy = match http.get(&health, &[]).await {
                Ok(reply) => reply.status == 200 && reply.json()["health"] == "true",
                Err(_) => false,
            } && match http.post_json(&members, &[], &serde_json::json!({})).await {
                Ok(reply) => reply.json()["members"][0]["name"] == name.as_str(),
                Err(_) => false,
            };
            if healthy && process.running() {
                return (process, port);
            }
            if process.exited_on_taken_port() {
                eprintln!("etcd: port {port} or {peer_port} was taken (attempt {attempt})");
                let _ = std::fs::remove_dir_all(dir.join("etcd"));
                break;
            }
            process.assert_running("starting");
            assert!(
                Instant::now() < deadline,
                "etcd was not healthy after 90 s:\n{}",
                process.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("etcd: {START_ATTEMPTS} port pairs in a row were taken");
}
