//! KServe v2 REST, model-scoped endpoints, as ModelMesh's REST proxy serves them.

use super::{Protocol, Received, Shared, MODEL_HEADER, NAMESPACE_HEADER};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;

pub(super) async fn serve(listener: TcpListener, shared: Shared) {
    let app = Router::new().fallback(handle).with_state(shared);
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "stand-in REST server stopped");
    }
}

/// A model-scoped v2 endpoint, parsed from the path.
#[derive(Debug, PartialEq, Eq)]
enum Endpoint {
    Metadata,
    Ready,
    Infer,
}

/// `/v2/models/<m>[/versions/<v>][/ready|/infer]` -> (model, version, endpoint).
fn parse(path: &str) -> Option<(&str, Option<&str>, Endpoint)> {
    let rest = path.strip_prefix("/v2/models/")?;
    let mut parts = rest.split('/');
    let model = parts.next().filter(|m| !m.is_empty())?;
    let mut next = parts.next();
    let mut version = None;
    if next == Some("versions") {
        version = Some(parts.next().filter(|v| !v.is_empty())?);
        next = parts.next();
    }
    let endpoint = match next {
        None => Endpoint::Metadata,
        Some("ready") => Endpoint::Ready,
        Some("infer") => Endpoint::Infer,
        Some(_) => return None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((model, version, endpoint))
}

async fn handle(State(shared): State<Shared>, method: Method, uri: Uri, body: Bytes) -> Response {
    let full_path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| uri.path().to_string());
    let namespace = shared.config.namespace.clone();
    let parsed = parse(uri.path());
    let model = parsed
        .as_ref()
        .map(|(m, ..)| m.to_string())
        .unwrap_or_default();
    let served = parsed.is_some() && shared.config.serves(&model);
    shared.journal.record(Received {
        protocol: Protocol::Rest,
        model: model.clone(),
        path: full_path.clone(),
        vmodel_header: None,
        served,
    });

    let base = json!({"namespace": namespace, "path": full_path});
    let Some((_, version, endpoint)) = parsed else {
        return reply(
            StatusCode::NOT_FOUND,
            &namespace,
            "",
            with(base, json!({"error": "not a model-scoped KServe v2 path"})),
        );
    };
    if !served {
        let error = format!("model {model} not found in namespace {namespace}");
        return reply(
            StatusCode::NOT_FOUND,
            &namespace,
            &model,
            with(base, json!({"error": error})),
        );
    }
    if shared.fails(&model) {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            &namespace,
            &model,
            with(
                base,
                json!({"error": "failing as configured (--fail-every)"}),
            ),
        );
    }
    let expected = if endpoint == Endpoint::Infer {
        Method::POST
    } else {
        Method::GET
    };
    if method != expected {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            &namespace,
            &model,
            with(base, json!({"error": format!("use {expected}")})),
        );
    }
    let answer = match endpoint {
        Endpoint::Metadata => json!({
            "name": model, "versions": [version.unwrap_or("1")],
            "platform": "modelmesh-standin", "inputs": [], "outputs": [],
        }),
        Endpoint::Ready => json!({"name": model, "ready": true}),
        Endpoint::Infer => {
            let id = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("id").cloned())
                .unwrap_or(Value::Null);
            json!({
                "model_name": model, "model_version": version, "id": id,
                "outputs": [{"name": "served_by", "datatype": "BYTES", "shape": [1], "data": [model]}],
            })
        }
    };
    let mut answer = with(base, answer);
    answer["model_name"] = json!(model);
    reply(StatusCode::OK, &namespace, &model, answer)
}

fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    base
}

fn reply(status: StatusCode, namespace: &str, model: &str, body: Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    for (name, value) in [(NAMESPACE_HEADER, namespace), (MODEL_HEADER, model)] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_model_scoped_path() {
        assert_eq!(parse("/v2/models/m"), Some(("m", None, Endpoint::Metadata)));
        assert_eq!(
            parse("/v2/models/m/ready"),
            Some(("m", None, Endpoint::Ready))
        );
        assert_eq!(
            parse("/v2/models/m/infer"),
            Some(("m", None, Endpoint::Infer))
        );
        assert_eq!(
            parse("/v2/models/m/versions/3/infer"),
            Some(("m", Some("3"), Endpoint::Infer))
        );
        assert_eq!(
            parse("/v2/models/m/versions/3"),
            Some(("m", Some("3"), Endpoint::Metadata))
        );
    }

    #[test]
    fn rejects_other_paths() {
        for path in [
            "/v2/models/",
            "/v2/models//infer",
            "/v2/models/m/explain",
            "/v2/models/m/infer/x",
            "/v2/models/m/versions//infer",
            "/modelmesh/ns/v2/models/m/infer",
            "/v2",
        ] {
            assert_eq!(parse(path), None, "{path}");
        }
    }
}
