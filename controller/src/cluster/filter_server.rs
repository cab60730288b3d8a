//! `GET /filter/<sha256>.wasm`: the filter module, served by every replica (leader or not)
//! on the metrics server, so the WasmPlugin's default `url` is this controller's Service.
//! Only the module's own digest is served, never another module under its name.
//!
//! Another well-formed digest is answered 503 with `Connection: close`, not 404: during a
//! rolling update old and new replicas are behind the Service at once, and the gateway's
//! istio-agent retries a 5xx (on a new connection, which the Service may send to a replica
//! that has the module) but gives up at once on a 4xx, and then runs the gateway without the
//! filter (FAIL_OPEN) until the next push. Anything else under /filter/ is 404.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::filter_module::FilterModule;

/// The path prefix of the served module.
pub const PATH_PREFIX: &str = "/filter/";

/// The route serving `module` at [`FilterModule::served_path`].
pub fn router(module: FilterModule) -> Router {
    Router::new()
        .route("/filter/{file}", get(serve))
        .with_state(module)
}

async fn serve(State(module): State<FilterModule>, Path(file): Path<String>) -> Response {
    let wanted = file.strip_suffix(".wasm").filter(|sha| is_sha256_hex(sha));
    // A fetch is rare (a gateway pod starting, a new module): each one is worth a line.
    match wanted {
        Some(sha) if sha == module.sha256() => {
            tracing::info!(path = %module.served_path(), "serving the filter module");
        }
        Some(_) => {
            tracing::info!(%file, "asked for another filter module: 503");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONNECTION, "close"), (header::RETRY_AFTER, "1")],
                format!(
                    "this replica serves the filter module {} only; {file} may be on another \
                     replica (a rolling update) — or on none, if no controller of that version runs\n",
                    module.served_path()
                ),
            )
                .into_response();
        }
        None => {
            return (
                StatusCode::NOT_FOUND,
                format!(
                    "no such filter module: this controller serves {}\n",
                    module.served_path()
                ),
            )
                .into_response();
        }
    }
    (
        [
            (header::CONTENT_TYPE, "application/wasm"),
            // The path names the content: it never changes.
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        axum::body::Bytes::from_owner(module.bytes().clone()),
    )
        .into_response()
}

/// 64 lowercase hex digits, as [`FilterModule::sha256`] writes them.
fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn module() -> FilterModule {
        let bytes = b"\0asm\x01\0\0\0 a module".to_vec();
        FilterModule::from_bytes(std::path::Path::new("plugin.wasm"), bytes).unwrap()
    }

    async fn get_path(router: Router, path: &str) -> (StatusCode, Option<String>, Vec<u8>) {
        let reply = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = reply.status();
        let content_type = reply
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string());
        let body = reply.into_body().collect().await.unwrap().to_bytes();
        (status, content_type, body.to_vec())
    }

    #[tokio::test]
    async fn the_module_is_served_at_its_digest_as_application_wasm() {
        let module = module();
        let (status, content_type, body) =
            get_path(router(module.clone()), &module.served_path()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type.as_deref(), Some("application/wasm"));
        assert_eq!(body, &module.bytes()[..]);
        assert_eq!(
            crate::cluster::filter_module::sha256_hex(&body),
            module.sha256()
        );
    }

    #[tokio::test]
    async fn another_digest_is_unavailable_here_and_anything_else_not_found() {
        let module = module();
        // A replica of another version may have it: retryable, on a new connection.
        let other = format!("/filter/{}.wasm", "0".repeat(64));
        let reply = router(module.clone())
            .oneshot(Request::get(&other).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.headers()[header::CONNECTION], "close");
        let text = reply.into_body().collect().await.unwrap().to_bytes();
        assert!(
            String::from_utf8_lossy(&text).contains(&module.served_path()),
            "it says which module this replica has"
        );

        let upper = format!("/filter/{}.wasm", module.sha256().to_uppercase());
        let without_suffix = format!("/filter/{}", module.sha256());
        for path in [
            upper.as_str(),
            without_suffix.as_str(),
            "/filter/plugin.wasm",
            "/filter/",
            "/filter",
        ] {
            let (status, _, body) = get_path(router(module.clone()), path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(
                !body.starts_with(b"\0asm"),
                "{path}: no module under another name"
            );
        }
    }
}
