//! The only part of the server that knows sockets: HTTP (static client, health, metrics) and the
//! WebSocket upgrade on one TCP port, and WebTransport (`quic`) on the UDP port of the same
//! number.

pub mod admin;
mod http;
pub mod origin;
mod pages;
pub use pages::embedded_client;
mod player;
pub mod quic;
pub(crate) mod redirect;
mod socket;
pub mod tls;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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
pub(crate) const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// How long shutdown waits for clients to receive their close frames.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What every request handler shares: one allocation, cloned by reference. Every connection
/// holds it for its whole life, three times over (its task, its player, its loop), so a copy
/// of the fields in each would be some 400 bytes of every idle connection.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The fields of `AppState`.
pub(crate) struct Shared {
    pub config: Arc<Config>,
    pub rooms: Arc<Rooms>,
    pub metrics: Arc<Metrics>,
    pub sessions: SessionTracker,
    pub store: crate::store::Store,
    /// The port pages are served on (the same-origin check of WebTransport names it).
    pub http_port: u16,
    /// What pages are told about WebTransport, when it is on.
    pub webtransport: Option<quic::Offer>,
    /// HTTPS on the TCP port, when the host gave a certificate.
    pub tls: Option<tls::Tls>,
    /// The host's console.
    pub admin: Arc<admin::Admin>,
    /// This node's cluster, in cluster mode.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The runtimes connections and rooms run on.
    pub shards: Arc<crate::shards::Shards>,
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }

    /// In a cluster, the public URLs of its live nodes (whose pages may connect here).
    pub fn peers(&self) -> Vec<String> {
        self.cluster.as_ref().map(|cluster| cluster.peers()).unwrap_or_default()
    }

    /// `peers`, asked again of the cluster when `origin` is not among them (see
    /// `Cluster::peers_for`).
    pub async fn peers_for(&self, origin: Option<&str>) -> Vec<String> {
        match &self.cluster {
            Some(cluster) => cluster.peers_for(origin).await,
            None => Vec::new(),
        }
    }
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
            // A stop asked for by signal, or from the host's console.
            () = async { tokio::select! { () = &mut shutdown => {}, () = state.admin.stop.notified() => {} } },
                if drain_until.is_none() => {
                let timeout = state.config.drain_timeout;
                if timeout.is_zero() {
                    break;
                }
                tracing::info!("draining: no new players; rooms play on for up to {timeout:?}");
                match &state.cluster {
                    Some(cluster) => {
                        state.rooms.drain("This server is restarting: your room moves to another one.");
                        let (cluster, rooms) = (cluster.clone(), state.rooms.clone());
                        tokio::spawn(async move { cluster.hand_off(&rooms).await });
                    }
                    None => state.rooms.drain(&format!(
                        "This server is restarting: your game ends within {} s. Join again to play on.",
                        timeout.as_secs().max(1)
                    )),
                }
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
        let router = router.clone();
        let stop = stop.clone();
        let acceptor = state.tls.as_ref().map(|tls| tls.acceptor().clone());
        crate::shards::spawn_with_stream(state.shards.next(), stream, move |stream| async move {
            let Some(acceptor) = acceptor else {
                return serve_http(TokioIo::new(stream), false, router, peer, header_timeout, stop).await;
            };
            // The handshake shares the request head's time limit.
            match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    serve_http(TokioIo::new(stream), http2, router, peer, header_timeout, stop).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
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

/// Serves one connection, HTTP/1.1 (upgrades to WebSocket included) or, when TLS's ALPN chose
/// it, HTTP/2, until it ends or the server stops. (hyper-util's protocol-sniffing builder would
/// wrap the socket, and an upgraded WebSocket could no longer be taken apart to its TCP stream.)
async fn serve_http<I>(io: I, http2: bool, router: Router, peer: SocketAddr, header_timeout: Duration, stop: Stop)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    // Handlers learn the client's address (`ConnectInfo`): connections log it.
    let service = TowerToHyperService::new(router.map_request(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    }));
    if http2 {
        let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_REQUEST_HEAD as u32)
            .serve_connection(io, service);
        until_stopped(connection, |connection| connection.graceful_shutdown(), stop).await;
    } else {
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(MAX_REQUEST_HEAD)
            .serve_connection(io, service)
            .with_upgrades();
        until_stopped(connection, |connection| connection.graceful_shutdown(), stop).await;
    }
}

/// Tells connections the server stops.
type Stop = tokio::sync::watch::Receiver<bool>;

/// Runs `connection` to its end; once the server stops, asks it to finish what it serves
/// (`graceful`) and close. An upgraded connection (a WebSocket) has left hyper already.
async fn until_stopped<C, E>(connection: C, graceful: impl FnOnce(Pin<&mut C>), mut stop: Stop)
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = async { let _ = stop.wait_for(|stop| *stop).await; } => {
            graceful(connection.as_mut());
            connection.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!("http connection ended: {e}");
    }
}

/// Completes once no session is left, or at `deadline`.
async fn drained_or_due(sessions: &SessionTracker, deadline: Option<tokio::time::Instant>) {
    let Some(deadline) = deadline else { return std::future::pending().await };
    let _ = tokio::time::timeout_at(deadline, sessions.drained()).await;
}
