//! WebTransport (HTTP/3 over QUIC, through wtransport on quinn) on the UDP port of the same
//! number as the TCP one: browsers through the WebTransport API, native clients and bots through
//! wtransport's client, one endpoint for all. Reliable messages travel on one bidirectional
//! stream the client opens, framed (`protocol::stream`); snapshots and inputs as datagrams
//! (`protocol::datagram`). Behind the transport the session and the room are the same as for a
//! WebSocket (`player`).
//!
//! The endpoint makes a client prove its address before it keeps any state for it (a QUIC
//! retry), so the UDP port cannot be used to reflect traffic at a spoofed address; it holds at
//! most `Limits::max_connections`; and each connection may open a handful of streams, no more.

pub mod certificates;
mod connection;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use wtransport::endpoint::endpoint_side::Server;
use wtransport::quinn::{TransportConfig, VarInt};
use wtransport::{Endpoint, ServerConfig};

use super::AppState;
use crate::config::{CertificateSource, TlsFiles};
use certificates::{CertificateError, Hashes, Rotation, Step};

/// The path WebTransport sessions are opened on.
pub const PATH: &str = "/wt";

/// Streams a client may have open at once: the HTTP/3 request that opens the session, Easel's
/// reliable stream, and room for one being replaced. HTTP/3 itself needs three unidirectional
/// streams each way (control and the two QPACK streams).
const MAX_BIDI_STREAMS: u32 = 4;
const MAX_UNI_STREAMS: u32 = 4;
/// Datagrams queued for one client before the oldest are dropped: a client that cannot take
/// its snapshots gets newer ones rather than old ones (as a WebSocket's unsent bytes are
/// bounded, decision 0025).
const DATAGRAM_SEND_BUFFER: usize = 64 * 1024;
/// A connection that has sent nothing for this long is taken for lost.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the server makes sure a quiet connection is still there.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    #[error("cannot bind UDP {address} for WebTransport: {source}")]
    Bind { address: SocketAddr, source: std::io::Error },
}

/// The running endpoint.
pub struct Quic {
    endpoint: Endpoint<Server>,
    /// What pages are told: the port and the hashes to trust (`/webtransport`).
    pub offer: Offer,
    /// The names the server's own certificates are made for.
    names: Vec<String>,
    rotation: Option<Rotation>,
}

/// What a page needs to open a session: the UDP port, and the hashes of the server's own
/// certificates (none for a host's own, which browsers check the usual way).
#[derive(Clone)]
pub struct Offer {
    pub port: u16,
    pub hashes: Hashes,
}

impl Quic {
    /// Binds `address` (UDP) and starts presenting the certificate `source` gives.
    pub async fn bind(address: SocketAddr, source: &CertificateSource) -> Result<Self, QuicError> {
        let hashes = Hashes::default();
        let names = certificate_names(address);
        let (identity, rotation) = certificates::load(source, &names, SystemTime::now(), &hashes).await?;
        let socket = std::net::UdpSocket::bind(address).map_err(|source| QuicError::Bind { address, source })?;
        let port = socket.local_addr().map_err(|source| QuicError::Bind { address, source })?.port();
        let config = ServerConfig::builder().with_bind_socket(socket).with_custom_transport(identity, transport());
        let endpoint = Endpoint::server(config.build()).map_err(|source| QuicError::Bind { address, source })?;
        Ok(Self { endpoint, offer: Offer { port, hashes }, names, rotation })
    }
}

/// The names a self-signed certificate is made for: the loopback names, and the address the
/// server listens on when it is a particular one. (A page that trusts the certificate by its
/// hash does not check names; a native client may.)
fn certificate_names(address: SocketAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let ip = address.ip().to_string();
    if !address.ip().is_unspecified() && !names.contains(&ip) {
        names.push(ip);
    }
    names
}

/// The QUIC transport parameters every connection gets.
fn transport() -> TransportConfig {
    let mut transport = TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_BIDI_STREAMS))
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS))
        .datagram_send_buffer_size(DATAGRAM_SEND_BUFFER)
        // A connection silent this long is gone. The keep-alives keep a quiet one (a page in a
        // background tab, whose timers the browser slows) from looking silent.
        .max_idle_timeout(IDLE_TIMEOUT.try_into().ok())
        .keep_alive_interval(Some(KEEP_ALIVE));
    transport
}

/// Accepts sessions until `draining` completes, then refuses new ones until `closing` completes
/// (meanwhile the rooms close their members with 1001, and those closes go out), then closes
/// the endpoint.
pub(crate) async fn serve(
    quic: Quic,
    state: AppState,
    certificate_reloads: watch::Receiver<u64>,
    draining: impl Future<Output = ()>,
    closing: impl Future<Output = ()>,
) {
    let Quic { endpoint, offer, names, rotation } = quic;
    let hashes = offer.hashes;
    let endpoint = Arc::new(endpoint);
    let rotating = match (rotation, &state.config.tls) {
        (Some(rotation), _) => tokio::spawn(rotate(rotation, names, hashes, Arc::clone(&endpoint))),
        (None, Some(files)) => tokio::spawn(follow(files.clone(), certificate_reloads, Arc::clone(&endpoint))),
        (None, None) => tokio::spawn(async {}),
    };
    tokio::pin!(draining);
    tokio::pin!(closing);
    let mut accepting = true;
    loop {
        let incoming = tokio::select! {
            () = &mut draining, if accepting => {
                accepting = false;
                continue;
            }
            () = &mut closing => break,
            incoming = endpoint.accept() => incoming,
        };
        if !accepting {
            // A page reconnecting to a server that is going away tries elsewhere (or again).
            incoming.refuse();
            continue;
        }
        // A client must show it receives what is sent to its address before anything is
        // kept for it: the retry costs it one round trip, and a spoofed address gets nothing
        // larger than what it sent.
        if !incoming.remote_address_validated() {
            incoming.retry();
            continue;
        }
        if state.sessions.count() >= state.config.limits.max_connections {
            incoming.refuse();
            continue;
        }
        let state = state.clone();
        tokio::spawn(async move { connection::accept(incoming, state).await });
    }
    rotating.abort();
    endpoint.close(wtransport::VarInt::from_u32(u32::from(easel_protocol::close::GOING_AWAY)), b"server shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
}

/// Presents the host's certificate again each time HTTPS reloaded it (`tls::Tls::watch`);
/// sessions already open keep theirs.
async fn follow(files: TlsFiles, mut reloads: watch::Receiver<u64>, endpoint: Arc<Endpoint<Server>>) {
    while reloads.changed().await.is_ok() {
        match certificates::load_files(&files).await {
            Ok(identity) => present(&endpoint, identity),
            Err(e) => tracing::error!("{e}; WebTransport keeps its certificate"),
        }
    }
}

/// Presents `identity` to new sessions.
fn present(endpoint: &Endpoint<Server>, identity: wtransport::Identity) {
    // The bind address of a reloaded configuration is not used (no rebind).
    let config = ServerConfig::builder().with_bind_default(0).with_custom_transport(identity, transport());
    match endpoint.reload_config(config.build(), false) {
        Ok(()) => tracing::info!("WebTransport certificate replaced; open sessions keep theirs"),
        Err(e) => tracing::error!("cannot replace the WebTransport certificate: {e}"),
    }
}

/// Replaces the server's own certificate on its schedule; sessions already open keep theirs.
async fn rotate(mut rotation: Rotation, names: Vec<String>, hashes: Hashes, endpoint: Arc<Endpoint<Server>>) {
    loop {
        let wait = rotation.due().duration_since(SystemTime::now()).unwrap_or_default();
        tokio::time::sleep(wait).await;
        match rotation.step(SystemTime::now(), &names, &hashes) {
            Ok(Step::Announce) => tracing::info!("WebTransport certificate: its successor is offered to pages"),
            Ok(Step::Switch(identity)) => present(&endpoint, identity),
            Err(e) => {
                tracing::error!("{e}; trying again in a minute");
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
    }
}
