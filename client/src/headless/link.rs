//! A native client's connection to a server, over either transport: a WebSocket, or a
//! WebTransport session (wtransport, on quinn) with a reliable stream and datagrams. The same
//! bytes go in and come out of both: encoded messages, each sent the way its `Channel` says.

use std::time::Duration;

use easel_protocol::close;
use easel_protocol::codec::MAX_SERVER_MESSAGE_BYTES;
use easel_protocol::datagram::{self, Reassembler};
use easel_protocol::frame::server_frame_header;
use easel_protocol::stream::{FRAME_HEADER_BYTES, FrameReader, StreamFrame, close_frame, message_frame};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use wtransport::tls::Sha256Digest;
use wtransport::{ClientConfig, Connection, Endpoint, RecvStream, SendStream, VarInt};

use super::wire::{Trust, Wire};
use crate::core::{Channel, certificate_hash};

/// How a native client reaches a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// `ws://host:port/ws`, or `wss://` checked against `trust`.
    WebSocket { url: String, trust: Trust },
    /// `https://host:port/wt`, trusting the server's own certificate by one of these hashes (or,
    /// with none, by the usual checks).
    WebTransport { url: String, certificate_hashes: Vec<[u8; 32]> },
}

/// Which transport to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportChoice {
    WebSocket,
    WebTransport,
    /// WebTransport when the server offers it, else the WebSocket: what a page does.
    AsThePageWould,
}

/// Why a link could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("WebSocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("WebTransport: {0}")]
    WebTransport(String),
    #[error("cannot learn how to reach {0}: {1}")]
    Offer(String, String),
    #[error("the server offers no WebTransport")]
    NoWebTransport,
}

impl Transport {
    /// The transport `choice` names for the server whose pages are at `http_base`
    /// (`http://host:port` or `https://…`, whose certificate is checked against `trust`),
    /// asking the server (`/webtransport`) where it needs to.
    pub async fn choose(http_base: &str, choice: TransportChoice, trust: &Trust) -> Result<Transport, LinkError> {
        // http -> ws, https -> wss.
        let url = format!("{}/ws", http_base.replacen("http", "ws", 1));
        let websocket = Transport::WebSocket { url, trust: trust.clone() };
        match choice {
            TransportChoice::WebSocket => Ok(websocket),
            TransportChoice::WebTransport => offer(http_base, trust).await?.ok_or(LinkError::NoWebTransport),
            TransportChoice::AsThePageWould => Ok(offer(http_base, trust).await.ok().flatten().unwrap_or(websocket)),
        }
    }

    /// The same kind of transport to the server whose pages are at `http_base`, where a
    /// cluster's redirect sends the client.
    pub async fn redirected(&self, http_base: &str) -> Result<Transport, LinkError> {
        match self {
            Transport::WebSocket { trust, .. } => Transport::choose(http_base, TransportChoice::WebSocket, trust).await,
            Transport::WebTransport { .. } => {
                Transport::choose(http_base, TransportChoice::WebTransport, &Trust::System).await
            }
        }
    }

    /// The transport's name, as benchmarks report it.
    pub fn name(&self) -> &'static str {
        match self {
            Transport::WebSocket { .. } => "websocket",
            Transport::WebTransport { .. } => "webtransport",
        }
    }
}

/// What the server at `http_base` says about WebTransport: `None` when it has none (404).
async fn offer(http_base: &str, trust: &Trust) -> Result<Option<Transport>, LinkError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let failed = |e: String| LinkError::Offer(http_base.to_owned(), e);
    let (secure, address) = match (http_base.strip_prefix("http://"), http_base.strip_prefix("https://")) {
        (Some(address), _) => (false, address),
        (None, Some(address)) => (true, address),
        (None, None) => return Err(failed("not an http:// or https:// address".into())),
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(|| failed("no port".into()))?;
    let port = port.parse().map_err(|_| failed("a bad port".into()))?;
    let mut stream = Wire::connect(host, port, secure, trust).await.map_err(|e| failed(e.to_string()))?;
    let request = format!("GET /webtransport HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| failed(e.to_string()))?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .map_err(|_| failed("no answer in 5 s".into()))?
        .map_err(|e| failed(e.to_string()))?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(|| failed("no HTTP response".into()))?;
    if head.starts_with("HTTP/1.1 404") {
        return Ok(None);
    }
    let json: serde_json::Value = serde_json::from_str(body.trim()).map_err(|e| failed(e.to_string()))?;
    let url = json["url"].as_str().ok_or_else(|| failed("no url".into()))?.to_owned();
    let certificate_hashes = json["certificateHashes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|hash| hash.as_str().and_then(certificate_hash::from_hex))
        .collect();
    Ok(Some(Transport::WebTransport { url, certificate_hashes }))
}

/// What came from the server.
#[derive(Debug)]
pub enum Received {
    /// An encoded message, and the bytes it took on the wire (with its framing).
    Message { bytes: Vec<u8>, wire: usize },
    /// The server closed the connection with a code and reason.
    Closed { code: u16, reason: String },
    /// The connection ended without a close: the network.
    Lost(String),
}

/// An open connection to a server.
pub enum Link {
    WebSocket(Box<WebSocketStream<Wire>>),
    WebTransport(Box<WebTransportLink>),
}

pub struct WebTransportLink {
    connection: Connection,
    send: SendStream,
    recv: RecvStream,
    frames: FrameReader,
    reassembler: Reassembler,
    buffer: Vec<u8>,
    /// Datagram bytes received since the last message they completed.
    datagram_bytes: usize,
    /// The endpoint the connection runs on, kept as long as it.
    _endpoint: Endpoint<wtransport::endpoint::endpoint_side::Client>,
}

impl Link {
    /// Opens `transport` for a client of `room` (a WebSocket names it in its URL, so the server
    /// places the connection with the room's).
    pub async fn open(transport: &Transport, room: &str) -> Result<Link, LinkError> {
        match transport {
            Transport::WebSocket { url, trust } => {
                let url = format!("{url}{}", easel_protocol::text::room_query(room));
                // tungstenite's default 128 KiB read buffer is zeroed on every read, which for a
                // process of a thousand bots costs more CPU than the messages themselves; 16 KiB
                // holds any message but a board chunk in one read.
                let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
                let request = url.as_str().into_client_request()?;
                let uri = request.uri();
                let secure = uri.scheme_str() == Some("wss");
                let host = uri.host().unwrap_or_default().to_owned();
                let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
                let wire = Wire::connect(&host, port, secure, trust)
                    .await
                    .map_err(|e| LinkError::Connect(format!("{host}:{port}"), e))?;
                let (socket, _) = tokio_tungstenite::client_async_with_config(request, wire, Some(config)).await?;
                Ok(Link::WebSocket(Box::new(socket)))
            }
            Transport::WebTransport { url, certificate_hashes } => {
                let wt = |e: &dyn std::fmt::Display| LinkError::WebTransport(e.to_string());
                let config = ClientConfig::builder().with_bind_default();
                let config = if certificate_hashes.is_empty() {
                    config.with_native_certs().build()
                } else {
                    config
                        .with_server_certificate_hashes(certificate_hashes.iter().copied().map(Sha256Digest::new))
                        .build()
                };
                let endpoint = Endpoint::client(config).map_err(|e| wt(&e))?;
                let connection = endpoint.connect(url).await.map_err(|e| wt(&e))?;
                let (send, recv) = connection.open_bi().await.map_err(|e| wt(&e))?.await.map_err(|e| wt(&e))?;
                Ok(Link::WebTransport(Box::new(WebTransportLink {
                    connection,
                    send,
                    recv,
                    frames: FrameReader::new(MAX_SERVER_MESSAGE_BYTES),
                    reassembler: Reassembler::new(MAX_SERVER_MESSAGE_BYTES),
                    buffer: vec![0; 64 * 1024],
                    datagram_bytes: 0,
                    _endpoint: endpoint,
                })))
            }
        }
    }

    /// Sends an encoded message the way `channel` says (over a WebSocket, all the same way).
    pub async fn send(&mut self, bytes: &[u8], channel: Channel) -> Result<(), LinkError> {
        match self {
            Link::WebSocket(socket) => Ok(socket.send(Message::Binary(bytes.to_vec().into())).await?),
            Link::WebTransport(link) => match channel {
                Channel::Unreliable => {
                    let max = link.connection.max_datagram_size().unwrap_or(0);
                    match datagram::datagrams(bytes, max, 0) {
                        // A client's datagrams are whole; one too large for the path goes reliably.
                        Some(parts) if parts.len() == 1 => {
                            link.connection.send_datagram(&parts[0]).map_err(|e| LinkError::WebTransport(e.to_string()))
                        }
                        _ => link.write(&message_frame(bytes)).await,
                    }
                }
                Channel::Reliable => link.write(&message_frame(bytes)).await,
            },
        }
    }

    /// The next thing from the server. Cancel-safe: dropping it loses nothing.
    pub async fn recv(&mut self) -> Received {
        match self {
            Link::WebSocket(socket) => loop {
                match socket.next().await {
                    Some(Ok(Message::Binary(bytes))) => {
                        let wire = bytes.len() + server_frame_header(bytes.len()).as_slice().len();
                        return Received::Message { bytes: bytes.to_vec(), wire };
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) =
                            frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                        // Complete the closing handshake for the server.
                        let _ = socket.send(Message::Close(None)).await;
                        return Received::Closed { code, reason };
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Received::Lost(e.to_string()),
                    None => return Received::Lost("connection ended".to_owned()),
                }
            },
            Link::WebTransport(link) => link.recv().await,
        }
    }

    /// Closes the connection normally.
    pub async fn close(&mut self) {
        match self {
            Link::WebSocket(socket) => {
                let frame = CloseFrame { code: close::NORMAL.into(), reason: "bye".into() };
                let _ = socket.send(Message::Close(Some(frame))).await;
                // Wait (bounded) for the server's reply so it sees a clean close.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Some(Ok(message)) = socket.next().await {
                        if matches!(message, Message::Close(_)) {
                            break;
                        }
                    }
                })
                .await;
            }
            Link::WebTransport(link) => {
                let _ = link.write(&close_frame(close::NORMAL, "bye")).await;
                // The server answers with its own close frame and closes the connection.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while !matches!(link.recv().await, Received::Closed { .. } | Received::Lost(_)) {}
                })
                .await;
                link.connection.close(VarInt::from_u32(u32::from(close::NORMAL)), b"bye");
            }
        }
    }
}

impl WebTransportLink {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        self.send.write_all(bytes).await.map_err(|e| LinkError::WebTransport(e.to_string()))
    }

    async fn recv(&mut self) -> Received {
        loop {
            match self.frames.next_frame() {
                Ok(Some(StreamFrame::Message(bytes))) => {
                    let wire = bytes.len() + FRAME_HEADER_BYTES;
                    return Received::Message { bytes, wire };
                }
                Ok(Some(StreamFrame::Close { code, reason })) => return Received::Closed { code, reason },
                Ok(None) => {}
                Err(e) => return Received::Lost(format!("bad stream from the server: {e}")),
            }
            tokio::select! {
                // The stream first: its close frame says more than the connection's end.
                biased;
                read = self.recv.read(&mut self.buffer) => match read {
                    Ok(Some(n)) => self.frames.push(&self.buffer[..n]),
                    Ok(None) => return Received::Lost("the server ended its stream".to_owned()),
                    Err(e) => return Received::Lost(e.to_string()),
                },
                datagram = self.connection.receive_datagram() => match datagram {
                    Ok(datagram) => {
                        let payload = datagram.payload();
                        self.datagram_bytes += payload.len();
                        match self.reassembler.push(&payload) {
                            Ok(Some(bytes)) => {
                                let wire = std::mem::take(&mut self.datagram_bytes);
                                return Received::Message { bytes, wire };
                            }
                            Ok(None) => {}
                            Err(e) => return Received::Lost(format!("bad datagram from the server: {e}")),
                        }
                    }
                    Err(e) => return Received::Lost(e.to_string()),
                },
            }
        }
    }
}
