//! A small in-memory Kubernetes API server on 127.0.0.1 for tests that run the real
//! watchers (and the `modelsplit run` binary): lists, never-ending watches, server-side
//! apply, deletes, Events, Leases and access reviews, with every request recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub uri: String,
    pub body: Value,
    pub user_agent: Option<String>,
}

#[derive(Default)]
pub struct FakeState {
    /// Objects by collection path (`/apis/<group>/<version>/<plural>` or `/api/v1/namespaces`).
    pub objects: BTreeMap<String, Vec<Value>>,
    /// Resources (plural) answered with 404: their CRD "is not installed".
    pub missing: BTreeSet<String>,
    /// Resources (plural) whose list is answered with 403.
    pub forbidden: BTreeSet<String>,
    pub requests: Vec<Recorded>,
    resource_version: u64,
    /// Open watches: collection path, label selector, and where their events go.
    watches: Vec<(String, Option<String>, WatchSender)>,
}

type WatchSender = futures::channel::mpsc::UnboundedSender<Result<Bytes, std::io::Error>>;

impl FakeState {
    /// Tells the open watches of `collection` about a change (ADDED, MODIFIED, DELETED).
    fn notify(&mut self, collection: &str, kind: &str, object: &Value) {
        let line = format!("{}\n", json!({"type": kind, "object": object}));
        self.watches.retain(|(path, selector, sender)| {
            if path != collection || !selected(object, selector) {
                return !sender.is_closed();
            }
            sender.unbounded_send(Ok(Bytes::from(line.clone()))).is_ok()
        });
    }
}

fn selected(object: &Value, selector: &Option<String>) -> bool {
    selector.as_deref().is_none_or(|s| {
        let (k, v) = s.split_once('=').unwrap_or((s, ""));
        object["metadata"]["labels"][k] == v
    })
}

#[derive(Clone)]
pub struct FakeApi {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<FakeState>>,
}

/// Where an object of this apiVersion/kind is listed.
pub fn collection(api_version: &str, kind: &str) -> String {
    let plural = match kind {
        "Namespace" => "namespaces",
        "ServingRuntime" => "servingruntimes",
        "InferenceService" => "inferenceservices",
        "WasmPlugin" => "wasmplugins",
        "EnvoyFilter" => "envoyfilters",
        "VirtualService" => "virtualservices",
        "Event" => "events",
        "Lease" => "leases",
        other => panic!("fake API server: unknown kind {other}"),
    };
    if api_version == "v1" {
        format!("/api/v1/{plural}")
    } else {
        format!("/apis/{api_version}/{plural}")
    }
}

impl FakeApi {
    /// Starts serving `objects` (inputs and/or managed objects).
    pub async fn start(objects: &[Value]) -> FakeApi {
        let mut state = FakeState::default();
        for object in objects {
            let path = collection(
                object["apiVersion"].as_str().unwrap_or(""),
                object["kind"].as_str().unwrap_or(""),
            );
            state.objects.entry(path).or_default().push(object.clone());
        }
        let state = Arc::new(Mutex::new(state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new().fallback(handle).with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        FakeApi { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for this server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().expect("url"));
        kube::Client::try_from(config).expect("client")
    }

    /// A kubeconfig file for the `modelsplit` binary.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\nusers:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\n",
            self.url()
        );
        std::fs::write(&path, text).expect("kubeconfig");
        path
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Changes an object as `kubectl` would (new resourceVersion) and tells the watches.
    pub fn update(&self, mut object: Value) {
        let path = collection(
            object["apiVersion"].as_str().unwrap_or(""),
            object["kind"].as_str().unwrap_or(""),
        );
        let mut state = self.state.lock().unwrap();
        state.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(state.resource_version.to_string());
        let (namespace, name) = (
            object["metadata"]["namespace"].as_str().map(str::to_string),
            object["metadata"]["name"].as_str().map(str::to_string),
        );
        let objects = state.objects.entry(path.clone()).or_default();
        objects.retain(|o| !matches(o, &namespace, &name));
        objects.push(object.clone());
        state.notify(&path, "MODIFIED", &object);
    }

    /// The bodies of server-side applies, in order.
    pub fn applied(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "PATCH")
            .map(|r| r.body)
            .collect()
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    json_response(
        StatusCode::from_u16(code).unwrap(),
        json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
               "code": code, "reason": reason, "message": message}),
    )
}

/// `(collection path, namespace, name)` of a request path.
fn parse(path: &str) -> (String, Option<String>, Option<String>) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    // api/v1/... or apis/<group>/<version>/...
    let prefix = if parts.first() == Some(&"api") { 2 } else { 3 };
    let head = parts[..prefix.min(parts.len())].join("/");
    let rest = &parts[prefix.min(parts.len())..];
    match rest {
        [plural] => (format!("/{head}/{plural}"), None, None),
        ["namespaces", name] if prefix == 2 => {
            (format!("/{head}/namespaces"), None, Some(name.to_string()))
        }
        ["namespaces", ns, plural] => (format!("/{head}/{plural}"), Some(ns.to_string()), None),
        ["namespaces", ns, plural, name] => (
            format!("/{head}/{plural}"),
            Some(ns.to_string()),
            Some(name.to_string()),
        ),
        _ => (format!("/{head}"), None, None),
    }
}

fn matches(object: &Value, namespace: &Option<String>, name: &Option<String>) -> bool {
    let meta = &object["metadata"];
    namespace
        .as_deref()
        .is_none_or(|ns| meta["namespace"] == ns)
        && name.as_deref().is_none_or(|n| meta["name"] == n)
}

fn query_param(uri: &Uri, key: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| v.replace("%3D", "=").replace("%2F", "/"))
    })
}

async fn handle(
    State(state): State<Arc<Mutex<FakeState>>>,
    method: Method,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let body_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut state = state.lock().unwrap();
    state.requests.push(Recorded {
        method: method.to_string(),
        uri: uri.to_string(),
        body: body_json.clone(),
        user_agent: headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    });
    let (collection_path, namespace, name) = parse(uri.path());
    let plural = collection_path.rsplit('/').next().unwrap_or("").to_string();

    if plural == "selfsubjectaccessreviews" {
        let mut review = body_json;
        review["status"] = json!({"allowed": true});
        return json_response(StatusCode::CREATED, review);
    }
    if state.missing.contains(&plural) {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    }
    if state.forbidden.contains(&plural) && method == Method::GET {
        return status(403, "Forbidden", &format!("{plural} is forbidden: User \"system:serviceaccount:modelsplit-system:modelsplit-controller\" cannot list resource \"{plural}\" at the cluster scope"));
    }
    state.resource_version += 1;
    let version = state.resource_version.to_string();
    let objects = state.objects.entry(collection_path.clone()).or_default();

    match method {
        Method::GET if name.is_none() => {
            let selector = query_param(&uri, "labelSelector");
            if query_param(&uri, "watch").is_some_and(|w| w == "true" || w == "1") {
                // Stays open; later changes arrive as watch events.
                let (sender, receiver) = futures::channel::mpsc::unbounded();
                state.watches.push((collection_path, selector, sender));
                return (StatusCode::OK, Body::from_stream(receiver)).into_response();
            }
            let items: Vec<Value> = objects
                .iter()
                .filter(|o| matches(o, &namespace, &None))
                .filter(|o| selected(o, &selector))
                .cloned()
                .collect();
            json_response(
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": version}, "items": items}),
            )
        }
        Method::GET => match objects.iter().find(|o| matches(o, &namespace, &name)) {
            Some(object) => json_response(StatusCode::OK, object.clone()),
            None => status(404, "NotFound", "not found"),
        },
        Method::POST => {
            let mut object = body_json;
            object["metadata"]["resourceVersion"] = json!(version);
            objects.push(object.clone());
            state.notify(&collection_path, "ADDED", &object);
            json_response(StatusCode::CREATED, object)
        }
        Method::PUT | Method::PATCH => {
            let mut object = body_json;
            object["metadata"]["resourceVersion"] = json!(version);
            objects.retain(|o| !matches(o, &namespace, &name));
            objects.push(object.clone());
            state.notify(&collection_path, "MODIFIED", &object);
            json_response(StatusCode::OK, object)
        }
        Method::DELETE => {
            let gone: Vec<Value> = objects
                .iter()
                .filter(|o| matches(o, &namespace, &name))
                .cloned()
                .collect();
            objects.retain(|o| !matches(o, &namespace, &name));
            for object in &gone {
                state.notify(&collection_path, "DELETED", object);
            }
            json_response(
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "metadata": {}}),
            )
        }
        _ => status(405, "MethodNotAllowed", "method not allowed"),
    }
}
