//! The Easel dedicated server as a library: `run(config, listener, shutdown)` is the IO edge that
//! `main.rs` and the tests both call.

pub mod config;
pub mod metrics;
mod net;
pub mod room;
pub mod session;
pub mod sim;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::{Config, ServeArgs};
use metrics::Metrics;

/// Serves `config` on `listener` until `shutdown` completes, then closes every client with
/// "going away" and returns once they are gone (or a bounded drain time has passed).
pub async fn run(config: Config, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::default());
    let rooms = room::Rooms::new(config.clone(), metrics.clone());
    let state = net::AppState { config, rooms, metrics, sessions: net::SessionTracker::default() };
    net::serve(listener, state, shutdown).await;
}
