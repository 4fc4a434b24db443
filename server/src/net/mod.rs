//! The only part of the server that knows sockets: HTTP (static client, health, metrics) and the
//! WebSocket upgrade on one port.

mod http;
mod socket;
pub mod ws;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::room::Rooms;

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
}

/// Counts live WebSocket sessions so shutdown can wait until each has sent its close frame.
#[derive(Clone, Default)]
pub(crate) struct SessionTracker(Arc<(AtomicUsize, Notify)>);

pub(crate) struct SessionGuard(SessionTracker);

impl SessionTracker {
    pub fn enter(&self) -> SessionGuard {
        self.0.0.fetch_add(1, Ordering::AcqRel);
        SessionGuard(self.clone())
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

/// Accepts connections until `shutdown` completes, then closes every session with "going away"
/// and waits (bounded) for them to finish.
pub(crate) async fn serve(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()>) {
    let router = http::router(state.clone());
    let header_timeout = state.config.limits.http_header_timeout;
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            _ = &mut shutdown => break,
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
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = connection.await {
                tracing::debug!("http connection ended: {e}");
            }
        });
    }
    tracing::info!("shutting down: closing all sessions");
    state.rooms.shutdown();
    if tokio::time::timeout(DRAIN_TIMEOUT, state.sessions.drained()).await.is_err() {
        tracing::warn!("some sessions did not close within {DRAIN_TIMEOUT:?}");
    }
}
