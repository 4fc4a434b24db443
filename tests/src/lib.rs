//! Helpers for workspace-level tests: start the real server on 127.0.0.1:0, connect clients, read
//! close frames, stop the server cleanly; `raw` speaks WebSocket frame by frame, `wt`
//! WebTransport by hand, `relay` makes a lossy UDP path; `fuzz` holds the fuzz targets' bodies.

pub mod fuzz;
pub mod raw;
pub mod relay;
pub mod wt;

use std::net::SocketAddr;
use std::time::Duration;

use easel::Config;
use easel_client::headless::{HeadlessClient, Transport, TransportChoice};
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

/// A server running inside the test process.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), easel::RunError>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(Config::for_tests()).await
    }

    pub async fn start_with(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound address");
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(easel::run(config, listener, async {
            let _ = stopped.await;
        }));
        Self { addr, stop: Some(stop), task }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// A server with WebTransport on (a self-signed certificate, the UDP port of the HTTP one's
    /// number).
    pub async fn start_with_webtransport() -> Self {
        Self::start_with(with_webtransport(Config::for_tests())).await
    }

    /// How a client reaches this server over `choice` (asking `/webtransport` for WebTransport).
    pub async fn transport(&self, choice: TransportChoice) -> Transport {
        Transport::choose(&format!("http://{}", self.addr), choice, &easel_client::headless::Trust::System)
            .await
            .unwrap_or_else(|e| panic!("no transport {choice:?}: {e}"))
    }

    /// A client that joined `room` as `name` (its `Welcome` received).
    pub async fn join(&self, name: &str, room: &str) -> HeadlessClient {
        HeadlessClient::join(&self.ws_url(), name, room, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{name} could not join {room}: {e}"))
    }

    /// Asks the server to stop (it drains first when its configuration says so) and returns at
    /// once.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Triggers graceful shutdown and waits for `run` to return.
    pub async fn stop(mut self) {
        self.begin_stop();
        let result = tokio::time::timeout(WAIT, &mut self.task).await.expect("server stops in time");
        result.expect("server task").expect("server ran without errors");
    }

    /// A plain HTTP GET, returning (status line, body).
    pub async fn get(&self, path: &str) -> (String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.addr);
        stream.write_all(request.as_bytes()).await.expect("write request");
        let mut response = String::new();
        tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
            .await
            .expect("response in time")
            .expect("read");
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
    }

    /// The value of a metric from `/metrics`.
    pub async fn metric(&self, name: &str) -> i64 {
        let (_, body) = self.get("/metrics").await;
        body.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing from:\n{body}"))
    }
}

/// A moving player keeps receiving snapshots: the server is still serving it. (It moves because
/// a room where nothing changes sends no snapshots.)
pub async fn still_playing(client: &HeadlessClient) {
    let (tick, toward_centre) = {
        let core = client.core();
        let me = core.view().me().and_then(|id| core.view().players().get(&id)?.state);
        (core.view().tick(), if me.is_some_and(|s| s.x > 1000.0) { -1 } else { 1 })
    };
    client.hold_direction(toward_centre, 0);
    client
        .wait_for(WAIT, "fresh snapshots", |core| (core.view().tick() > tick + 3).then_some(()))
        .await
        .expect("an honest player keeps playing while others misbehave");
    client.hold_direction(0, 0);
}

/// `config` with WebTransport on: a self-signed certificate on the default schedule, the UDP
/// port of the HTTP one's number.
pub fn with_webtransport(mut config: Config) -> Config {
    config.quic = Some(easel::config::Quic {
        udp_port: None,
        certificate: easel::config::CertificateSource::SelfSigned { schedule: Default::default() },
    });
    config
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A raw WebSocket connection, for sending what a well-behaved client never would.
pub type RawSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn raw_connect(server: &TestServer) -> RawSocket {
    let (socket, _) = tokio_tungstenite::connect_async(server.ws_url()).await.expect("WebSocket connect");
    socket
}

/// Reads until the server's close frame; returns its (code, reason).
pub async fn read_close(socket: &mut RawSocket) -> (u16, String) {
    let read = async {
        while let Some(message) = socket.next().await {
            match message {
                Ok(Message::Close(Some(frame))) => return (u16::from(frame.code), frame.reason.to_string()),
                Ok(Message::Close(None)) => return (1005, String::new()),
                Ok(_) => continue,
                Err(e) => return (1006, e.to_string()),
            }
        }
        (1006, "ended without a close frame".to_owned())
    };
    tokio::time::timeout(WAIT, read).await.expect("close frame in time")
}
