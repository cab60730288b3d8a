//! `GET /filter/<sha256>.wasm`: the filter module, served by every replica (leader or not)
//! on the metrics server, so the WasmPlugin's default `url` is this controller's Service.
//! Only the module's own digest is served: a gateway that asks for another (a module of an
//! earlier version, after an upgrade) gets 404 rather than a module its `sha256` refuses.

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
    let wanted = file.strip_suffix(".wasm");
    if wanted != Some(module.sha256()) {
        return (
            StatusCode::NOT_FOUND,
            format!(
                "this controller serves the filter module {} only: {file} is another version \
                 (the WasmPlugin's url and sha256 name the module of the controller that wrote it)\n",
                module.served_path()
            ),
        )
            .into_response();
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
    async fn another_digest_or_name_is_not_found() {
        let module = module();
        let other = format!("/filter/{}.wasm", "0".repeat(64));
        let without_suffix = format!("/filter/{}", module.sha256());
        for path in [
            other.as_str(),
            without_suffix.as_str(),
            "/filter/plugin.wasm",
            "/filter/",
        ] {
            let (status, _, body) = get_path(router(module.clone()), path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            if path.len() > PATH_PREFIX.len() {
                // It says which module this replica has.
                let text = String::from_utf8(body).unwrap();
                assert!(text.contains(&module.served_path()), "{path}: {text}");
            }
        }
    }
}
