//! A WebTransport client that sends what a proper one never would: garbage on its stream, a
//! frame announcing a huge message, floods of datagrams, more streams than allowed, nothing at
//! all. It trusts the test server's own certificate by the hash `/webtransport` gives.

use easel_client::headless::{Transport, TransportChoice};
use easel_protocol::stream::{FrameReader, StreamFrame};
use wtransport::endpoint::endpoint_side::Client;
use wtransport::error::ConnectionError;
use wtransport::tls::Sha256Digest;
use wtransport::{ClientConfig, Connection, Endpoint, RecvStream, SendStream};

use crate::{TestServer, WAIT};

/// An open session, nothing sent on it yet.
pub struct RawSession {
    pub connection: Connection,
    /// Kept as long as the connection: dropping the endpoint ends it.
    _endpoint: Endpoint<Client>,
}

/// How the server ended a session, as its client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// A close frame on the reliable stream (what a page reads), with its code and reason.
    CloseFrame { code: u16, reason: String },
    /// The connection closed by the server with an application code, no frame read before.
    Connection { code: u64, reason: String },
    /// Anything else (a timeout, a reset): the test reads it as a failure.
    Other(String),
}

impl Ended {
    /// The close code, whichever way it came.
    pub fn code(&self) -> Option<u64> {
        match self {
            Ended::CloseFrame { code, .. } => Some(u64::from(*code)),
            Ended::Connection { code, .. } => Some(*code),
            Ended::Other(_) => None,
        }
    }
}

impl RawSession {
    /// Opens a session to `server`'s WebTransport endpoint.
    pub async fn open(server: &TestServer) -> Self {
        let Transport::WebTransport { url, certificate_hashes } = server.transport(TransportChoice::WebTransport).await
        else {
            panic!("the server offers WebTransport")
        };
        let config = ClientConfig::builder()
            .with_bind_default()
            .with_server_certificate_hashes(certificate_hashes.into_iter().map(Sha256Digest::new))
            .build();
        let endpoint = Endpoint::client(config).expect("a client endpoint");
        let connection =
            tokio::time::timeout(WAIT, endpoint.connect(&url)).await.expect("session in time").expect("session opened");
        Self { connection, _endpoint: endpoint }
    }

    /// Opens a bidirectional stream (the server sees it when its first bytes arrive).
    pub async fn open_stream(&self) -> (SendStream, RecvStream) {
        let opening = self.connection.open_bi().await.expect("open a stream");
        opening.await.expect("stream opened")
    }

    /// Reads `recv` until the server's close frame or the connection's end.
    pub async fn ended(&self, recv: &mut RecvStream) -> Ended {
        let mut frames = FrameReader::new(1 << 20);
        let mut buffer = vec![0u8; 64 * 1024];
        let read = async {
            loop {
                match frames.next_frame() {
                    Ok(Some(StreamFrame::Close { code, reason })) => return Ended::CloseFrame { code, reason },
                    Ok(Some(StreamFrame::Message(_))) => continue,
                    Ok(None) => {}
                    Err(e) => return Ended::Other(format!("bad frame from the server: {e}")),
                }
                match recv.read(&mut buffer).await {
                    Ok(Some(n)) => frames.push(&buffer[..n]),
                    Ok(None) | Err(_) => return self.connection_end().await,
                }
            }
        };
        tokio::time::timeout(WAIT, read).await.unwrap_or_else(|_| Ended::Other("no close in time".to_owned()))
    }

    /// Waits for the connection to be closed, and says how.
    pub async fn connection_end(&self) -> Ended {
        let closed = tokio::time::timeout(WAIT, self.connection.closed()).await;
        match closed {
            Ok(ConnectionError::ApplicationClosed(close)) => Ended::Connection {
                code: close.code().into_inner(),
                reason: String::from_utf8_lossy(close.reason()).into_owned(),
            },
            Ok(other) => Ended::Other(other.to_string()),
            Err(_) => Ended::Other("the connection is still open".to_owned()),
        }
    }
}
