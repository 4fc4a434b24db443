//! The Easel dedicated server as a library: `run(config, listener, shutdown)` is the IO edge that
//! `main.rs` and the tests both call.

pub mod config;
pub mod metrics;
pub mod net;
pub mod room;
pub mod secret;
pub mod session;
pub mod sim;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::{Config, ServeArgs};
use metrics::Metrics;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot open the store: {0}")]
    Store(#[from] store::StoreError),
    #[error("cannot make secrets: {0}")]
    Secrets(#[from] secret::RandomSourceFailed),
}

/// Serves `config` on `listener` until `shutdown` completes, then closes every client with
/// "going away", lets the rooms finish their pending writes, and returns.
pub async fn run(config: Config, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    // Every resume and author token comes from the OS's random source: fail now, not at a join.
    secret::token()?;
    let (store, store_thread) = store::Store::open(&config.storage)?;
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::default());
    let rooms = room::Rooms::new(config.clone(), metrics.clone(), store.clone());
    let state =
        net::AppState { config, rooms: rooms.clone(), metrics, sessions: net::SessionTracker::default(), store };
    net::serve(listener, state, shutdown).await;
    rooms.closed().await;
    drop(rooms);
    // Every handle is gone now: the store thread finishes the queued writes and exits.
    let _ = tokio::task::spawn_blocking(move || store_thread.join()).await;
    Ok(())
}
