//! The host's console: `/admin` (a page of the built client, `admin.html`) and the JSON API it
//! and scripts use under `/admin/api/`, behind a token (`Authorization: Bearer …`): the token
//! given with `--admin-token`, or else one made from the OS's secure random source on first
//! start, stored in the data directory readable by the server's user only, and logged once.
//!
//! `GET /admin/api/status`: the process (uptime, CPU, memory), connections by transport, bytes
//! and messages in and out, and each room (players, board size, tick time p50/p99, missed
//! ticks, bytes in and out). Actions, each logged with the caller's address: `POST /admin/api/broadcast`
//! `{"text"}`, `POST /admin/api/drain`, `POST /admin/api/rooms/{room}/close` `{"message"}`,
//! `POST /admin/api/rooms/{room}/players/{id}/kick` `{"reason"}`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use easel_protocol::close;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Notify;

use super::AppState;
use crate::config::Config;
use crate::room::Control;
use crate::session::CloseReason;
use crate::store::Location;

/// The longest action body taken (a message and a few fields).
const MAX_BODY: usize = 4 * 1024;
/// The file, in the data directory, that holds a token the server made.
const TOKEN_FILE: &str = "admin-token";
/// The shortest token accepted from a host: guessable tokens protect nothing.
pub const MIN_TOKEN_CHARS: usize = 16;

/// What the console shares with the handlers.
pub(crate) struct Admin {
    token: String,
    started: Instant,
    /// Asks the server to drain and stop, as SIGTERM does.
    pub stop: Notify,
}

/// Why the console has no token.
#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    #[error("cannot read or write the admin token {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Random(#[from] crate::secret::RandomSourceFailed),
}

impl Admin {
    /// The console's token: the host's, the one stored in the data directory, or a new one.
    pub(crate) fn provision(config: &Config) -> Result<Arc<Self>, AdminTokenError> {
        let token = match (&config.admin_token, &config.storage) {
            (Some(token), _) => token.clone(),
            (None, Location::Directory(dir)) => stored_token(dir)?,
            // A cluster's nodes have no data directory of their own: give them --admin-token.
            (None, Location::Memory | Location::Postgres(_)) => {
                let token = new_token()?;
                tracing::warn!("admin console token (not stored; shown only now): {token}");
                token
            }
        };
        Ok(Arc::new(Self { token, started: Instant::now(), stop: Notify::new() }))
    }

    /// Time since the server started.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Whether `offered` is the token, compared in constant time (for a given length).
    fn accepts(&self, offered: &str) -> bool {
        let (a, b) = (self.token.as_bytes(), offered.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0_u8, |diff, (x, y)| diff | (x ^ y)) == 0
    }
}

fn new_token() -> Result<String, AdminTokenError> {
    Ok(crate::secret::token()?.iter().chain(&crate::secret::token()?).map(|b| format!("{b:02x}")).collect())
}

/// The token stored in `dir`, made and stored (owner-only) on first start.
fn stored_token(dir: &Path) -> Result<String, AdminTokenError> {
    let path = dir.join(TOKEN_FILE);
    let failed = |source| AdminTokenError::File { path: path.clone(), source };
    match std::fs::read_to_string(&path) {
        Ok(token) if token.trim().len() >= MIN_TOKEN_CHARS => return Ok(token.trim().to_owned()),
        Ok(_) => return Err(failed(std::io::Error::other("shorter than 16 characters"))),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(failed(e)),
        Err(_) => {}
    }
    let token = new_token()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::fs::create_dir_all(dir).map_err(failed)?;
    let mut file = options.open(&path).map_err(failed)?;
    std::io::Write::write_all(&mut file, token.as_bytes()).map_err(failed)?;
    tracing::warn!("admin console token (stored in {}, shown only now): {token}", path.display());
    Ok(token)
}

/// `/admin` and `/admin/api/…`.
pub(super) fn routes(state: AppState) -> Router<AppState> {
    let api = Router::new()
        .route("/status", get(status))
        .route("/broadcast", post(broadcast))
        .route("/drain", post(drain))
        .route("/rooms/{room}/close", post(close_room))
        .route("/rooms/{room}/players/{player}/kick", post(kick))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(state, authorize));
    Router::new().route("/admin", get(page)).nest("/admin/api", api)
}

async fn page(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    super::http::client_file(&state, ADMIN_PAGE, &headers).await
}

/// The console's page among the client's files.
const ADMIN_PAGE: &str = "admin.html";

/// Lets a request through only with the token.
async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let offered = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if offered.is_some_and(|token| state.admin.accepts(token.trim())) {
        let mut response = next.run(request).await;
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return response;
    }
    let mut response = (StatusCode::UNAUTHORIZED, "the admin token is needed\n").into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

async fn status(State(state): State<AppState>) -> Response {
    let metrics = &state.metrics;
    let process = ProcessFigures::read();
    let rooms: Vec<serde_json::Value> = state
        .rooms
        .reports()
        .await
        .into_iter()
        .map(|room| {
            json!({
                "name": room.name,
                "players": room.players.iter().map(|(id, name)| json!({"id": id, "name": name})).collect::<Vec<_>>(),
                "board_strokes": room.board_strokes,
                "tick_p50_ms": room.tick_p50_ms,
                "tick_p99_ms": room.tick_p99_ms,
                "missed_ticks": room.missed_ticks,
                "bytes_in_total": room.bytes_in,
                "bytes_out_total": room.bytes_out,
            })
        })
        .collect();
    // In a cluster, every node the directory knows (an unreachable database leaves it out).
    let cluster = match &state.cluster {
        Some(cluster) => match cluster.nodes().await {
            Ok(nodes) => json!({ "node": cluster.node(), "nodes": nodes }),
            Err(e) => json!({ "node": cluster.node(), "error": e.to_string() }),
        },
        None => serde_json::Value::Null,
    };
    let body = json!({
        "cluster": cluster,
        "uptime_s": state.admin.uptime().as_secs_f64(),
        "cpu_s": process.cpu_seconds,
        "rss_bytes": process.rss_bytes,
        "draining": state.rooms.admission() != crate::room::Admission::Open,
        "connections": {
            "websocket": metrics.websocket_connections.value(),
            "webtransport": metrics.webtransport_connections.value(),
        },
        "bytes_in_total": metrics.bytes_in.value(),
        "bytes_out_total": metrics.bytes_out.value(),
        "messages_in_total": metrics.messages_in.value(),
        "messages_out_total": metrics.messages_out.value(),
        "missed_ticks_total": metrics.ticks_missed.value(),
        "rooms": rooms,
    });
    axum::Json(body).into_response()
}

#[derive(Deserialize)]
struct Broadcast {
    text: String,
}

async fn broadcast(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Json(body): axum::Json<Broadcast>,
) -> Response {
    let Some(text) = message(&body.text) else { return refuse("text must be 1 to 500 characters") };
    tracing::info!(%peer, action = "broadcast", text, "admin action");
    state.rooms.broadcast(text);
    done()
}

async fn drain(State(state): State<AppState>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    tracing::info!(%peer, action = "drain", "admin action");
    state.admin.stop.notify_one();
    done()
}

#[derive(Deserialize)]
struct CloseRoom {
    message: String,
}

async fn close_room(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(room): UrlPath<String>,
    axum::Json(body): axum::Json<CloseRoom>,
) -> Response {
    let Some(notice) = message(&body.message) else { return refuse("message must be 1 to 500 characters") };
    tracing::info!(%peer, action = "close room", room, notice, "admin action");
    // The message goes in the close itself: a notice queued just before the close could be cut
    // off by it.
    let reason = CloseReason::new(close::NORMAL, fit_close_reason(notice));
    if state.rooms.command(&room, Control::Close { notice: notice.to_owned(), reason }) {
        done()
    } else {
        (StatusCode::NOT_FOUND, "no such room\n").into_response()
    }
}

#[derive(Deserialize, Default)]
struct Kick {
    #[serde(default)]
    reason: String,
}

async fn kick(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath((room, player)): UrlPath<(String, u32)>,
    body: Option<axum::Json<Kick>>,
) -> Response {
    let reason = body.map(|b| b.0.reason).filter(|r| !r.trim().is_empty());
    let reason = message(reason.as_deref().unwrap_or("removed by the server's host")).unwrap_or("removed");
    tracing::info!(%peer, action = "kick", room, player, reason, "admin action");
    let command = Control::Kick { player, reason: CloseReason::new(close::POLICY_VIOLATION, fit_close_reason(reason)) };
    // The room answers nothing: a player that is not there is not an error worth a round trip.
    if state.rooms.command(&room, command) { done() } else { (StatusCode::NOT_FOUND, "no such room\n").into_response() }
}

/// A message for players: trimmed, 1 to 500 characters.
fn message(text: &str) -> Option<&str> {
    let text = text.trim();
    (!text.is_empty() && text.chars().count() <= 500).then_some(text)
}

/// `text` cut (at a character) to what a close frame carries: 123 bytes.
fn fit_close_reason(text: &str) -> String {
    let mut end = text.len().min(123);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn done() -> Response {
    axum::Json(json!({"ok": true})).into_response()
}

fn refuse(why: &'static str) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(json!({"ok": false, "error": why}))).into_response()
}

/// The process's CPU time and resident memory (Linux's `/proc/self`; zero elsewhere).
pub(crate) struct ProcessFigures {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

impl ProcessFigures {
    pub fn read() -> Self {
        // utime and stime, fields 14 and 15, in the kernel's fixed 100 ticks a second (USER_HZ).
        let cpu_seconds = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|stat| {
                let after_name = stat.rsplit_once(')')?.1;
                let fields: Vec<&str> = after_name.split_whitespace().collect();
                let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
                Some(ticks as f64 / 100.0)
            })
            .unwrap_or(0.0);
        let rss_bytes = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
                Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
            })
            .unwrap_or(0);
        Self { cpu_seconds, rss_bytes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(token: &str) -> Admin {
        Admin { token: token.to_owned(), started: Instant::now(), stop: Notify::new() }
    }

    #[test]
    fn a_close_reason_fits_a_close_frame_and_cuts_at_a_character() {
        assert_eq!(fit_close_reason("short"), "short");
        assert_eq!(fit_close_reason(&"é".repeat(100)).len(), 122);
    }

    #[test]
    fn only_the_exact_token_is_accepted() {
        let admin = admin("0123456789abcdef0123");
        assert!(admin.accepts("0123456789abcdef0123"));
        assert!(!admin.accepts("0123456789abcdef012"));
        assert!(!admin.accepts("0123456789abcdef0124"));
        assert!(!admin.accepts(""));
    }

    #[test]
    fn a_made_token_is_stored_for_the_owner_only_and_kept() {
        let dir = std::env::temp_dir().join(format!("easel-admin-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = stored_token(&dir).unwrap();
        assert_eq!(first.len(), 64, "256 bits in hex");
        assert_eq!(stored_token(&dir).unwrap(), first, "the stored token is used again");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(TOKEN_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_process_figures_are_read() {
        let figures = ProcessFigures::read();
        if cfg!(target_os = "linux") {
            assert!(figures.rss_bytes > 1024 * 1024, "{}", figures.rss_bytes);
        }
    }
}
