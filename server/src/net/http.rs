//! HTTP routes: the browser client (`pages`), `/healthz` (the process answers), `/readyz` (it
//! takes new players: not while it drains, nor in a cluster while its database does not
//! answer), `/metrics`, `/ws`, and `/webtransport` (where pages learn how to open a
//! WebTransport session).

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{AppState, pages};

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
    router
        .merge(super::admin::routes(state.clone()))
        .route("/{*path}", get(static_file))
        .layer(axum::middleware::map_response_with_state(state.clone(), common_headers))
        .with_state(state)
}

async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    client_file(&state, pages::PAGE, &headers).await
}

async fn static_file(State(state): State<AppState>, UrlPath(path): UrlPath<String>, headers: HeaderMap) -> Response {
    client_file(&state, &path, &headers).await
}

pub(super) async fn client_file(state: &AppState, name: &str, headers: &HeaderMap) -> Response {
    let connect =
        pages::Connect { webtransport_port: state.webtransport.as_ref().map(|offer| offer.port), peers: state.peers() };
    pages::serve(&state.config.pages, name, headers, &connect).await
}

/// Headers every response carries: no type sniffing (a file is what its type says), no
/// `Referer` leaking the room's address to anyone the page links to, and over TLS, HSTS: a
/// browser that reached the server over HTTPS never tries plain HTTP for a year.
async fn common_headers(State(state): State<AppState>, mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if state.tls.is_some() {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    }
    response
}

/// `GET /readyz`: 200 while the server takes new players, 503 once it drains for a stop, so a
/// load balancer sends newcomers elsewhere while the players already here play on.
async fn ready(State(state): State<AppState>) -> Response {
    match state.rooms.admission() {
        crate::room::Admission::Open if state.cluster.as_ref().is_some_and(|c| !c.in_touch()) => {
            (StatusCode::SERVICE_UNAVAILABLE, "the cluster's database does not answer\n").into_response()
        }
        crate::room::Admission::Open => (StatusCode::OK, "ready\n").into_response(),
        crate::room::Admission::Draining | crate::room::Admission::Closed => {
            (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    let mut text = state.metrics.render();
    // The process's figures, as the console shows them.
    let process = super::admin::ProcessFigures::read();
    let figures = [
        ("process_cpu_seconds_total", "counter", "CPU time used by the server", process.cpu_seconds),
        ("process_resident_memory_bytes", "gauge", "Resident memory", process.rss_bytes as f64),
        ("easel_uptime_seconds", "gauge", "Time since the server started", state.admin.uptime().as_secs_f64()),
    ];
    for (name, kind, help, value) in figures {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
    }
    (headers, text).into_response()
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
    // In a cluster, the page of another node asks too (a redirected player's): the URL and the
    // hashes are no secret.
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    (headers, body).into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_url_names_the_pages_host_without_its_port() {
        use super::super::origin::without_port;
        assert_eq!(without_port("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(without_port("[::1]:8080"), "[::1]");
        assert_eq!(without_port("play.example.com"), "play.example.com");
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
