//! HTTP routes: the static browser client, `/healthz`, `/metrics`, and `/ws`.

use std::path::{Component, Path, PathBuf};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;

pub(super) fn router(state: AppState) -> Router {
    let router = Router::new()
        .route("/", get(index))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/ws", get(super::ws::upgrade));
    #[cfg(feature = "autobahn-echo")]
    let router = router.route("/autobahn-echo", get(super::ws::echo::upgrade));
    router.route("/{*path}", get(static_file)).with_state(state)
}

async fn index(State(state): State<AppState>) -> Response {
    serve_file(&state, "index.html").await
}

async fn static_file(State(state): State<AppState>, UrlPath(path): UrlPath<String>) -> Response {
    serve_file(&state, &path).await
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    (headers, state.metrics.render()).into_response()
}

async fn serve_file(state: &AppState, path: &str) -> Response {
    let Some(dir) = &state.config.assets_dir else {
        return (StatusCode::NOT_FOUND, "this server serves no pages\n").into_response();
    };
    let Some(file) = resolve(dir, path) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    match tokio::fs::read(&file).await {
        Ok(body) => {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(&file)));
            // The client is rebuilt in place during development; always revalidate.
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
            (headers, body).into_response()
        }
        Err(_) => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// The file for a URL path inside `dir`, refusing anything that could leave it.
fn resolve(dir: &Path, path: &str) -> Option<PathBuf> {
    let relative = Path::new(path);
    if !relative.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(dir.join(relative))
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        // Required by WebAssembly.instantiateStreaming.
        Some("wasm") => "application/wasm",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_escape_the_assets_directory() {
        let dir = Path::new("/srv/easel");
        assert_eq!(resolve(dir, "pkg/easel.js"), Some(PathBuf::from("/srv/easel/pkg/easel.js")));
        assert_eq!(resolve(dir, "../etc/passwd"), None);
        assert_eq!(resolve(dir, "/etc/passwd"), None);
        assert_eq!(resolve(dir, "a/../../b"), None);
    }

    #[test]
    fn wasm_is_served_with_its_streaming_type() {
        assert_eq!(content_type(Path::new("x_bg.wasm")), "application/wasm");
    }
}
