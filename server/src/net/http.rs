//! HTTP routes: the static browser client, `/healthz` (the process answers), `/readyz` (it
//! takes new players: not while it drains), `/metrics`, `/ws`, and `/webtransport` (where pages
//! learn how to open a WebTransport session).

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
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/webtransport", get(webtransport))
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

/// `GET /readyz`: 200 while the server takes new players, 503 once it drains for a stop, so a
/// load balancer sends newcomers elsewhere while the players already here play on.
async fn ready(State(state): State<AppState>) -> Response {
    match state.rooms.admission() {
        crate::room::Admission::Open => (StatusCode::OK, "ready\n").into_response(),
        crate::room::Admission::Draining | crate::room::Admission::Closed => {
            (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    (headers, state.metrics.render()).into_response()
}

/// `GET /webtransport`: the session URL on the host the page was served from, and the hashes of
/// the server's own certificates to trust (`serverCertificateHashes`; none when the host
/// brought a certificate browsers check the usual way), as JSON. 404 when WebTransport is off,
/// which pages take as "use the WebSocket".
async fn webtransport(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(offer) = &state.webtransport else {
        return (StatusCode::NOT_FOUND, "WebTransport is off on this server\n").into_response();
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    let url = format!("https://{}:{}{}", super::origin::without_port(host), offer.port, super::quic::PATH);
    let hashes: Vec<String> = offer.hashes.current().iter().map(|hash| format!("\"{}\"", hex(hash))).collect();
    let body = format!("{{\"url\":\"{url}\",\"certificateHashes\":[{}]}}\n", hashes.join(","));
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // Hashes change when the certificate is replaced.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (headers, body).into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
    fn the_session_url_names_the_pages_host_without_its_port() {
        use super::super::origin::without_port;
        assert_eq!(without_port("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(without_port("[::1]:8080"), "[::1]");
        assert_eq!(without_port("play.example.com"), "play.example.com");
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }

    #[test]
    fn wasm_is_served_with_its_streaming_type() {
        assert_eq!(content_type(Path::new("x_bg.wasm")), "application/wasm");
    }
}
