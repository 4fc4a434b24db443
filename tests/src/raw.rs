//! A WebSocket client that writes frames byte by byte on a plain TCP socket, for what a proper
//! client library would never send: invalid close codes, broken UTF-8, floods of pings or empty
//! fragments, malformed handshakes.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::WAIT;

/// Opcodes (RFC 6455 §5.2).
pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;

/// A key that is 16 bytes in base64, as RFC 6455 §1.3's example.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// One frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A close frame's code (`None` when it has no body).
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// Sends `request` (a whole HTTP request head) on a new connection and returns the response's
/// head, e.g. to see how a handshake is refused.
pub async fn http_exchange(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write request");
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while !response.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("a response in time");
    String::from_utf8_lossy(&response).into_owned()
}

/// A valid upgrade request for `/ws`.
pub fn upgrade_request(addr: SocketAddr) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
    )
}

/// A WebSocket connection driven frame by frame.
pub struct RawWebSocket {
    stream: TcpStream,
    /// Bytes read past the last whole frame.
    buffered: Vec<u8>,
}

impl RawWebSocket {
    /// Connects to `/ws` and completes the handshake.
    pub async fn connect(addr: SocketAddr) -> Self {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(upgrade_request(addr).as_bytes()).await.expect("write the upgrade");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let read = tokio::time::timeout(WAIT, stream.read(&mut byte)).await.expect("a handshake reply in time");
            assert_eq!(read.expect("read"), 1, "connection ended during the handshake: {head:?}");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "not upgraded: {head}");
        Self { stream, buffered: Vec::new() }
    }

    /// Sends one masked frame (as a client must) with the FIN bit `fin`.
    pub async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            len @ 0..=125 => frame.push(0x80 | len as u8),
            len @ 126..=65_535 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ mask[i % 4]));
        // The server may already have closed (a flood test): what happens next is what is tested.
        let _ = self.stream.write_all(&frame).await;
    }

    /// Sends a close frame with `code` (none: an empty body) and `reason`.
    pub async fn send_close(&mut self, code: Option<u16>, reason: &[u8]) {
        let mut payload = code.map(|c| c.to_be_bytes().to_vec()).unwrap_or_default();
        payload.extend_from_slice(reason);
        self.send_frame(true, CLOSE, &payload).await;
    }

    /// The next frame from the server; `None` when the connection ends first.
    pub async fn read_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = parse(&self.buffered) {
                self.buffered.drain(..used);
                return Some(frame);
            }
            let mut buf = [0u8; 16 * 1024];
            match tokio::time::timeout(WAIT, self.stream.read(&mut buf)).await.expect("the server answers in time") {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buffered.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Reads until the server's close frame (skipping anything sent before it).
    pub async fn read_close(&mut self) -> Option<Frame> {
        while let Some(frame) = self.read_frame().await {
            if frame.opcode == CLOSE {
                return Some(frame);
            }
        }
        None
    }

    /// The frames the server sends until it ends the TCP connection (which must happen within
    /// the wait).
    pub async fn frames_until_end(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = self.read_frame().await {
            frames.push(frame);
        }
        frames
    }
}

/// A whole server frame at the start of `bytes` (unmasked, as a server sends) and its length.
fn parse(bytes: &[u8]) -> Option<(Frame, usize)> {
    let [first, second, rest @ ..] = bytes else { return None };
    let (len, header) = match second & 0x7F {
        126 => (u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize, 4),
        127 => (u64::from_be_bytes(rest.get(..8)?.try_into().ok()?) as usize, 10),
        len => (usize::from(len), 2),
    };
    let payload = bytes.get(header..header + len)?.to_vec();
    Some((Frame { fin: first & 0x80 != 0, opcode: first & 0x0F, payload }, header + len))
}
