//! A scripted mock Kubernetes API server for the cluster tests (the kube-rs way:
//! `tower_test::mock::pair` behind a real `kube::Client`), plus fixture helpers.
#![allow(dead_code)]

pub mod fake_api;

use std::path::{Path, PathBuf};
use std::task::Poll;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A client whose every request the test answers through the returned handle.
pub fn mock_client() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

/// One request as the API server received it.
#[derive(Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query, e.g. `/apis/x/v1/namespaces/ns/things/a?&fieldManager=modelsplit&force=true`.
    pub uri: String,
    pub content_type: Option<String>,
    /// The JSON body (`Value::Null` when empty).
    pub body: Value,
}

impl Seen {
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("")
    }

    /// The query parameters, sorted, without empty pairs.
    pub fn query(&self) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = self
            .uri
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (p.to_string(), String::new()),
            })
            .collect();
        pairs.sort();
        pairs
    }
}

/// Waits for the next request; panics (failing the test) if the client went away.
pub async fn next(handle: &mut Handle) -> (Seen, tower_test::mock::SendResponse<Response<Body>>) {
    // Fails instead of hanging when the code under test waits for nothing (virtual time
    // in paused tests jumps straight here).
    let (request, send) =
        tokio::time::timeout(std::time::Duration::from_secs(60), handle.next_request())
            .await
            .expect("no request came although the test expected one")
            .expect("the code under test stopped before sending the expected request");
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.expect("request body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("request body is JSON")
    };
    let seen = Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body,
    };
    (seen, send)
}

/// Answers with `status` and a JSON body.
pub fn reply(send: tower_test::mock::SendResponse<Response<Body>>, status: u16, body: &Value) {
    let response = Response::builder()
        .status(StatusCode::from_u16(status).expect("status"))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("response");
    send.send_response(response);
}

/// Expects one request with this method and path, answers it, and returns it.
pub async fn expect(
    handle: &mut Handle,
    method: &str,
    path: &str,
    status: u16,
    answer: &Value,
) -> Seen {
    let (seen, send) = next(handle).await;
    assert_eq!(
        (seen.method.as_str(), seen.path()),
        (method, path),
        "unexpected request {} {}",
        seen.method,
        seen.uri
    );
    reply(send, status, answer);
    seen
}

/// Asserts that no request is waiting (call once the code under test has finished).
pub async fn assert_no_more_requests(handle: &mut Handle) {
    let pending = futures::poll!(Box::pin(handle.next_request()));
    if let Poll::Ready(Some((request, _))) = pending {
        panic!("unexpected request {} {}", request.method(), request.uri());
    }
}

/// A Kubernetes `Status` error body.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
        "code": code, "reason": reason, "message": message
    })
}

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every document of a YAML file (or of the YAML files of a directory), as JSON.
pub fn yaml_documents(path: &Path) -> Vec<Value> {
    let mut files = Vec::new();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("fixture dir") {
            let file = entry.expect("entry").path();
            if file.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(file);
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("fixture file");
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value: serde_yaml::Value = serde::Deserialize::deserialize(document).expect("yaml");
            if value.is_null() {
                continue;
            }
            documents.push(serde_json::to_value(value).expect("yaml as json"));
        }
    }
    documents
}

/// The documents of `path` of one kind.
pub fn of_kind(documents: &[Value], kind: &str) -> Vec<Value> {
    documents
        .iter()
        .filter(|d| d["kind"] == kind)
        .cloned()
        .collect()
}

/// An object as a watcher would see it in a cluster: server fields added.
pub fn as_observed(object: &Value, resource_version: &str) -> Value {
    let mut object = object.clone();
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or("x")
        .to_string();
    let api_version = object["apiVersion"].clone();
    let meta = &mut object["metadata"];
    meta["resourceVersion"] = json!(resource_version);
    meta["uid"] = json!(format!("uid-{name}"));
    if meta["creationTimestamp"].is_null() {
        meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    meta["generation"] = json!(1);
    meta["managedFields"] =
        json!([{"manager": "modelsplit", "operation": "Apply", "apiVersion": api_version}]);
    object
}

/// A watcher snapshot holding these objects (inputs by kind; WasmPlugins and
/// VirtualServices as the managed objects observed in the cluster).
pub fn snapshot_of(documents: &[Value]) -> modelsplit_controller::cluster::snapshot::Snapshot {
    use kube::api::DynamicObject;
    use modelsplit_controller::cluster::kinds::ManagedKind;
    let mut snapshot = modelsplit_controller::cluster::snapshot::Snapshot::default();
    for document in documents {
        let dynamic = || serde_json::from_value::<DynamicObject>(document.clone()).expect("object");
        match document["kind"].as_str() {
            Some("Namespace") => snapshot
                .namespaces
                .push(serde_json::from_value(document.clone()).expect("namespace")),
            Some("ServingRuntime") => snapshot.serving_runtimes.push(dynamic().into()),
            Some("InferenceService") => snapshot.inference_services.push(dynamic().into()),
            Some(kind) => {
                let kind = ManagedKind::from_kind(kind).expect("a managed kind");
                snapshot.insert_managed(kind, dynamic());
            }
            None => panic!("document without kind"),
        }
    }
    snapshot
}

/// The seed workflow (docs/design.md section 1) as a cluster holds it: uids and versions set.
pub fn seed_inputs() -> Vec<Value> {
    yaml_documents(&manifest_dir().join("tests/fixtures/seed"))
        .iter()
        .map(|d| as_observed(d, "1"))
        .collect()
}

/// What `render` prints for the seed: the expected apply bodies.
pub fn seed_golden() -> Vec<Value> {
    yaml_documents(&manifest_dir().join("tests/golden/seed.yaml"))
}

/// Waits for the code under test to finish; an unexpected request fails the test
/// instead of hanging it.
pub async fn finish<T>(task: tokio::task::JoinHandle<T>, handle: &mut Handle) -> T {
    tokio::pin!(task);
    tokio::select! {
        biased;
        result = &mut task => result.expect("the code under test panicked"),
        request = handle.next_request() => match request {
            Some((request, _)) => panic!("unexpected request {} {}", request.method(), request.uri()),
            None => task.await.expect("the code under test panicked"),
        },
    }
}
