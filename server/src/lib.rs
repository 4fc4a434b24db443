//! The Easel dedicated server as a library: `run(config, listener, shutdown)` is the IO edge that
//! `main.rs` and the tests both call.

pub mod agones;
pub mod cluster;
pub mod config;
pub mod metrics;
pub mod net;
pub mod room;
pub mod secret;
pub mod session;
pub mod shards;
pub mod sim;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
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
    #[error("cannot start WebTransport: {0}")]
    Quic(#[from] net::quic::QuicError),
    #[error("cannot read the listener's address: {0}")]
    Listener(std::io::Error),
    #[error("cannot start the server's threads: {0}")]
    Shards(std::io::Error),
    #[error(transparent)]
    Tls(#[from] net::tls::TlsError),
    #[error(transparent)]
    AdminToken(#[from] net::admin::AdminTokenError),
    #[error("cannot listen on {address} for the redirect to HTTPS: {source}")]
    Redirect { address: SocketAddr, source: std::io::Error },
    #[error("cannot join the cluster: {0}")]
    Cluster(#[from] cluster::ClusterError),
    #[cfg(feature = "agones")]
    #[error("cannot reach Agones: {0}")]
    Agones(#[from] agones::AgonesError),
    #[error("no --public-url, and this build cannot ask Agones for one (the `agones` feature)")]
    NoPublicUrl,
}

/// Serves `config` on `listener` until `shutdown` completes, then closes every client with
/// "going away", lets the rooms finish their pending writes, and returns.
pub async fn run(config: Config, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    // Every resume and author token comes from the OS's random source: fail now, not at a join.
    secret::token()?;
    let http_port = listener.local_addr().map_err(RunError::Listener)?.port();
    let tls = config.tls.as_ref().map(net::tls::Tls::load).transpose()?;
    // Counts certificate reloads, for WebTransport to present the new one too.
    let (reloaded, certificate_reloads) = tokio::sync::watch::channel(0_u64);
    let watching = tls.clone().map(|tls| tokio::spawn(tls.watch(reloaded)));
    let redirecting = match config.redirect_http {
        Some(port) => {
            let address = SocketAddr::new(config.listen.ip(), port);
            let redirect = TcpListener::bind(address).await.map_err(|source| RunError::Redirect { address, source })?;
            Some(tokio::spawn(net::redirect::serve(redirect, http_port, config.limits.http_header_timeout)))
        }
        None => None,
    };
    let quic = match &config.quic {
        Some(quic) => {
            let address = SocketAddr::new(config.listen.ip(), quic.udp_port.unwrap_or(http_port));
            let quic = net::quic::Quic::bind(address, &quic.certificate).await?;
            tracing::info!(port = quic.offer.port, "WebTransport listening (UDP)");
            Some(quic)
        }
        None => None,
    };
    #[cfg(feature = "agones")]
    let mut agones = match config.agones {
        Some(sidecar) => Some(agones::Agones::connect(sidecar).await?),
        None => None,
    };
    let (store, store_thread) = store::Store::open(&config.storage)?;
    let cluster = match (&config.cluster, &config.storage) {
        (Some(settings), store::Location::Postgres(url)) => {
            let public_url = match &settings.public_url {
                config::PublicUrl::Given(url) => url.clone(),
                #[cfg(feature = "agones")]
                config::PublicUrl::FromAgones => match agones.as_mut() {
                    Some(agones) => agones.public_url().await?,
                    None => return Err(RunError::NoPublicUrl),
                },
                #[cfg(not(feature = "agones"))]
                config::PublicUrl::FromAgones => return Err(RunError::NoPublicUrl),
            };
            Some(cluster::Cluster::join(url, &public_url, &settings.secret).await?)
        }
        _ => None,
    };
    let admin = net::admin::Admin::provision(&config)?;
    let (shards, shard_threads) =
        shards::Shards::start(config.workers.unwrap_or_else(cores)).map_err(RunError::Shards)?;
    let shards = Arc::new(shards);
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::default());
    let rooms = room::Rooms::new(config.clone(), metrics.clone(), store.clone());
    let leases = cluster.clone().map(|cluster| tokio::spawn(cluster.keep_leases(rooms.clone())));
    // The database answers (the store opened; in a cluster, the node joined): ready for players.
    #[cfg(feature = "agones")]
    let following = match agones.as_mut() {
        Some(sdk) => {
            sdk.ready().await?;
            Some(tokio::spawn(sdk.clone().follow(rooms.clone(), metrics.clone())))
        }
        None => None,
    };
    let state = net::AppState::new(net::Shared {
        config,
        rooms: rooms.clone(),
        metrics,
        sessions: net::SessionTracker::default(),
        store,
        http_port,
        webtransport: quic.as_ref().map(|quic| quic.offer.clone()),
        tls,
        admin,
        cluster,
        shards: shards.clone(),
    });
    // One shutdown for both edges: when it comes, the UDP side stops taking sessions while the
    // TCP side's loop has the rooms close every session (WebTransport ones too) and waits for
    // them; then the UDP endpoint closes.
    let (draining, drain) = tokio::sync::watch::channel(false);
    let (closing, close) = tokio::sync::watch::channel(false);
    let until = |mut signal: tokio::sync::watch::Receiver<bool>| async move {
        let _ = signal.wait_for(|set| *set).await;
    };
    let quic = quic.map(|quic| {
        tokio::spawn(net::quic::serve(quic, state.clone(), certificate_reloads, until(drain), until(close)))
    });
    net::serve(listener, state, async move {
        shutdown.await;
        let _ = draining.send(true);
    })
    .await;
    let _ = closing.send(true);
    if let Some(quic) = quic {
        let _ = quic.await;
    }
    for task in [watching, redirecting, leases].into_iter().flatten() {
        task.abort();
    }
    rooms.closed().await;
    #[cfg(feature = "agones")]
    if let Some(mut sdk) = agones {
        if let Some(following) = following {
            following.abort();
        }
        if let Err(e) = sdk.shutdown().await {
            tracing::warn!("cannot tell Agones the server is done: {e}");
        }
    }
    drop(rooms);
    shard_threads.stop().await;
    // Every handle is gone now: the store thread finishes the queued writes and exits.
    let _ = tokio::task::spawn_blocking(move || store_thread.join()).await;
    Ok(())
}

/// The machine's cores (the default number of shards).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}
