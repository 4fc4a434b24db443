//! The only part of the server that knows sockets: HTTP (static client, health, metrics) and the
//! WebSocket upgrade on one TCP port, and WebTransport (`quic`) on the UDP port of the same
//! number.

mod http;
pub mod origin;
mod pages;
pub use pages::embedded_client;
mod player;
pub mod quic;
mod socket;
pub mod ws;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::ServiceExt;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::room::Rooms;

/// The most a request's head (request line and headers) may take; more is answered 431. A
/// browser's head is under 2 KB; hyper's default, about 400 KB, is memory a slow client could
/// hold per connection.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// How long shutdown waits for clients to receive their close frames.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What every request handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub config: Arc<Config>,
    pub rooms: Arc<Rooms>,
    pub metrics: Arc<Metrics>,
    pub sessions: SessionTracker,
    pub store: crate::store::Store,
    /// The port pages are served on (the same-origin check of WebTransport names it).
    pub http_port: u16,
    /// What pages are told about WebTransport, when it is on.
    pub webtransport: Option<quic::Offer>,
}

/// Counts live sessions (WebSocket and WebTransport), for the connection limit and so that
/// shutdown can wait until each has sent its close.
#[derive(Clone, Default)]
pub(crate) struct SessionTracker(Arc<(AtomicUsize, Notify)>);

pub(crate) struct SessionGuard(SessionTracker);

impl SessionTracker {
    pub fn enter(&self) -> SessionGuard {
        self.0.0.fetch_add(1, Ordering::AcqRel);
        SessionGuard(self.clone())
    }

    pub fn count(&self) -> usize {
        self.0.0.load(Ordering::Acquire)
    }

    async fn drained(&self) {
        loop {
            let notified = self.0.1.notified();
            if self.0.0.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if self.0.0.0.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.0.1.notify_waiters();
        }
    }
}

/// Accepts connections until `shutdown` completes; then drains (no new players, a notice to
/// everyone, rooms play on) until everyone has left or the drain timeout has passed, still
/// answering HTTP (`/readyz` says not ready); then closes every session with "going away" and
/// waits (bounded) for them to finish.
pub(crate) async fn serve(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()>) {
    let router = http::router(state.clone());
    let header_timeout = state.config.limits.http_header_timeout;
    // Tells every HTTP connection to finish what it serves and close: an idle keep-alive one
    // would otherwise live until its header timeout, holding the server (and its store) open.
    let (stopping, stop) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown, if drain_until.is_none() => {
                let timeout = state.config.drain_timeout;
                if timeout.is_zero() {
                    break;
                }
                tracing::info!("draining: no new players; rooms play on for up to {timeout:?}");
                state.rooms.drain(&format!(
                    "This server is restarting: your game ends within {} s. Join again to play on.",
                    timeout.as_secs().max(1)
                ));
                drain_until = Some(tokio::time::Instant::now() + timeout);
                continue;
            }
            () = drained_or_due(&state.sessions, drain_until), if drain_until.is_some() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // Handlers learn the client's address (`ConnectInfo`): connections log it.
        let service = TowerToHyperService::new(router.clone().map_request(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        }));
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(MAX_REQUEST_HEAD)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = async { let _ = stop.wait_for(|stop| *stop).await; } => {
                    // An upgraded connection (a WebSocket) has left hyper already; this ends the
                    // rest once their response is out.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!("http connection ended: {e}");
            }
        });
    }
    let _ = stopping.send(true);
    tracing::info!("shutting down: closing all sessions");
    state.rooms.shutdown();
    if tokio::time::timeout(DRAIN_TIMEOUT, state.sessions.drained()).await.is_err() {
        tracing::warn!("some sessions did not close within {DRAIN_TIMEOUT:?}");
    }
}

/// Completes once no session is left, or at `deadline`.
async fn drained_or_due(sessions: &SessionTracker, deadline: Option<tokio::time::Instant>) {
    let Some(deadline) = deadline else { return std::future::pending().await };
    let _ = tokio::time::timeout_at(deadline, sessions.drained()).await;
}
