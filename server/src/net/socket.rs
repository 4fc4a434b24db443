//! A WebSocket connection's TCP socket, shared by its connection task (reads, replies, control
//! frames, and snapshots a busy socket queued) and the room's snapshot hand-over, which writes
//! a tick's snapshot straight to every idle socket in deadline order instead of waking one task
//! per member.
//!
//! One rule keeps the byte stream whole: the hand-over writes only while the socket is idle,
//! and only the connection task, after a flush that left nothing buffered and nothing queued,
//! declares it idle. Every write of the connection's (tungstenite's frames included) marks the
//! socket busy under the same lock, so a frame is never split by another.
//!
//! The kernel holds at most `NOT_SENT_LOW_WATER` bytes not yet sent for a socket, so the
//! snapshots a client cannot take pile up nowhere: the socket reports itself full, and newer
//! snapshots supersede older ones in the connection's slot instead of queueing behind them.
//!
//! On the read side, every frame the client sends is metered as it arrives (`FrameMeter`):
//! frames that are not whole messages (pings, pongs, continuations) draw on a budget of their
//! own, and the read that goes past it fails with `TooManyFrames`.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use easel_protocol::frame::server_frame_header;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;

use super::ws::frame_meter::{FrameKind, FrameMeter};
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::room::{Delivery, DirectWrite, EncodedSnapshot};
use crate::session::TokenBucket;

/// Bytes the kernel may hold for a socket before they go out (`TCP_NOTSENT_LOWAT`). Without a
/// bound, Linux grows a socket's send buffer to `tcp_wmem`'s 4 MB: a loopback socket whose
/// client read nothing took 3.5 MB of snapshots before it reported itself full (44 KB with the
/// bound; the test below), and at N = 3,000, where the bots could not keep up, their median
/// latency was 8–16 s (under one in three runs of four with the bound: docs/bench/HISTORY.md).
/// 16 KB is several times a tick's snapshot for a thousand players, so a client that keeps up
/// never waits for it.
const NOT_SENT_LOW_WATER: u32 = 16 * 1024;

/// Sets `NOT_SENT_LOW_WATER` where the platform has it. Without it the server is still correct,
/// only laggier for a slow client, whose old snapshots then wait in the kernel.
fn bound_unsent_bytes(stream: &TcpStream) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_notsent_lowat(NOT_SENT_LOW_WATER) {
        tracing::debug!("cannot bound the socket's unsent bytes: {e}");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (stream, NOT_SENT_LOW_WATER);
}

/// The write side of one connection's socket.
pub(super) struct SocketWriter {
    socket: OwnedWriteHalf,
    state: Mutex<WriterState>,
    /// A direct write left part of its frames to be written: the connection task finishes it.
    pub finish_write: Notify,
    /// The snapshot the client is sure to hold (the room's baseline for this member): every
    /// snapshot written here counts as delivered.
    pub delivery: Arc<Delivery>,
    metrics: Arc<Metrics>,
}

struct WriterState {
    /// Something of the connection's is on its way to the socket (or may be): the hand-over
    /// must queue instead of writing. Starts set: the welcome goes first.
    busy: bool,
    /// The rest of a direct write the socket did not take at once; it goes before anything else.
    leftover: BytesMut,
}

impl SocketWriter {
    /// Splits `stream` into the reader tungstenite reads from (its frames metered by `limits`)
    /// and the shared writer.
    pub fn split(stream: TcpStream, metrics: Arc<Metrics>, limits: &Limits) -> (SocketIo, Arc<Self>) {
        bound_unsent_bytes(&stream);
        let (read, write) = stream.into_split();
        let writer = Arc::new(Self {
            socket: write,
            state: Mutex::new(WriterState { busy: true, leftover: BytesMut::new() }),
            finish_write: Notify::new(),
            delivery: Arc::default(),
            metrics,
        });
        let frames = FrameBudget {
            meter: FrameMeter::default(),
            // As many as messages: a client that pings or fragments is not a client that floods.
            bucket: TokenBucket::new(Instant::now(), limits.messages_per_second, limits.message_burst),
            exceeded: false,
        };
        (SocketIo { read, writer: Arc::clone(&writer), frames }, writer)
    }

    fn lock(&self) -> MutexGuard<'_, WriterState> {
        // The state stays consistent at every point a panic could leave it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection has written and flushed everything it had: the hand-over may write
    /// again, unless `nothing_queued` says the room queued something for it meanwhile.
    pub fn idle_if(&self, nothing_queued: impl FnOnce() -> bool) {
        let mut state = self.lock();
        if state.leftover.is_empty() && nothing_queued() {
            state.busy = false;
        }
    }

    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut state = self.lock();
        state.busy = true;
        ready!(self.poll_write_leftover(&mut state, cx))?;
        self.poll_write_with(cx, |socket| socket.try_write(buf))
    }

    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.lock();
        self.poll_write_leftover(&mut state, cx)
    }

    fn poll_write_leftover(&self, state: &mut WriterState, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !state.leftover.is_empty() {
            let written = ready!(self.poll_write_with(cx, |socket| socket.try_write(&state.leftover)))?;
            state.leftover.advance(written);
        }
        Poll::Ready(Ok(()))
    }

    /// Runs `write` until the socket takes some bytes, waiting for it to be writable.
    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&OwnedWriteHalf) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            match write(&self.socket) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(written) => return Poll::Ready(Ok(written)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.socket.as_ref().poll_write_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl DirectWrite for SocketWriter {
    fn write_now_or(&self, report: Option<&Bytes>, snapshot: &EncodedSnapshot, queue: &mut dyn FnMut()) -> bool {
        let mut state = self.lock();
        if !state.busy {
            let report_header = report.map(|report| server_frame_header(report.len()));
            let snapshot_header = server_frame_header(snapshot.bytes.len());
            // Without a report its two parts are empty: `writev` skips them.
            let parts: [&[u8]; 4] = [
                report_header.as_ref().map_or(&[], |header| header.as_slice()),
                report.map_or(&[], |report| report.as_ref()),
                snapshot_header.as_slice(),
                snapshot.bytes.as_ref(),
            ];
            let slices = parts.map(IoSlice::new);
            // Zero bytes taken (the socket is full, or broken): the connection task finds out.
            if let Ok(written @ 1..) = self.socket.try_write_vectored(&slices) {
                let total: usize = parts.iter().map(|part| part.len()).sum();
                if written < total {
                    let mut skip = written;
                    for part in parts {
                        let taken = skip.min(part.len());
                        state.leftover.extend_from_slice(&part[taken..]);
                        skip -= taken;
                    }
                    state.busy = true;
                    self.finish_write.notify_one();
                }
                let payload = report.map_or(0, Bytes::len) + snapshot.bytes.len();
                self.metrics.messages_out.add(1 + u64::from(report.is_some()));
                self.metrics.bytes_out.add(payload as u64);
                self.delivery.written(snapshot.tick);
                return true;
            }
        }
        state.busy = true;
        queue();
        false
    }
}

/// What tungstenite reads from and writes through: the socket's read half, metered, and the
/// shared writer, whose rule keeps tungstenite's frames (replies, pongs, the close) whole.
pub(super) struct SocketIo {
    read: OwnedReadHalf,
    writer: Arc<SocketWriter>,
    frames: FrameBudget,
}

/// Frames that are not whole messages (control frames, continuations) and their budget.
struct FrameBudget {
    meter: FrameMeter,
    bucket: TokenBucket,
    exceeded: bool,
}

/// The client sent more control or continuation frames than its budget allows.
#[derive(Debug, thiserror::Error)]
#[error("too many control or continuation frames")]
pub(super) struct TooManyFrames;

impl AsyncRead for SocketIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.frames.exceeded {
            // Reported once: the connection is closing, and reads on so that its close frame is
            // not cut short by a reset.
            return Pin::new(&mut self.read).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.read).poll_read(cx, buf))?;
        let now = Instant::now();
        let FrameBudget { meter, bucket, exceeded } = &mut self.frames;
        meter.feed(&buf.filled()[before..], |kind| {
            if kind != FrameKind::MessageStart && !bucket.try_take(now) {
                *exceeded = true;
            }
        });
        if *exceeded {
            return Poll::Ready(Err(io::Error::other(TooManyFrames)));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SocketIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.writer.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.poll_flush(cx)
    }

    /// The socket itself is shut down when both halves are dropped, at the connection's end.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    use super::*;

    #[test]
    fn frame_headers_match_tungstenites_frames() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 200_000] {
            let payload = vec![7u8; len];
            let mut expected = Vec::new();
            Frame::message(payload.clone(), OpCode::Data(Data::Binary), true).format(&mut expected).unwrap();
            let mut ours = server_frame_header(len).as_slice().to_vec();
            ours.extend_from_slice(&payload);
            assert_eq!(ours, expected, "a frame of {len} bytes");
        }
    }

    /// A server-side writer and the client's end of a loopback connection.
    async fn pair() -> (SocketIo, Arc<SocketWriter>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (io, writer) = SocketWriter::split(server, Arc::default(), &Limits::default());
        (io, writer, client)
    }

    fn snapshot(tick: u32, len: usize) -> EncodedSnapshot {
        EncodedSnapshot { tick, bytes: Bytes::from(vec![tick as u8; len]) }
    }

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut bytes = server_frame_header(payload.len()).as_slice().to_vec();
        bytes.extend_from_slice(payload);
        bytes
    }

    async fn read_exactly(client: &mut TcpStream, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut bytes)).await.unwrap().unwrap();
        bytes
    }

    #[tokio::test]
    async fn snapshots_are_queued_until_the_connection_has_flushed_and_then_written_directly() {
        let (_io, writer, mut client) = pair().await;
        let mut queued = 0;
        assert!(!writer.write_now_or(None, &snapshot(1, 40), &mut || queued += 1), "busy until the welcome is out");
        assert_eq!(queued, 1);
        writer.idle_if(|| false);
        assert!(!writer.write_now_or(None, &snapshot(2, 40), &mut || queued += 1), "something was queued");
        writer.idle_if(|| true);
        let report = Bytes::from_static(b"report");
        assert!(writer.write_now_or(Some(&report), &snapshot(3, 40), &mut || queued += 1));
        assert_eq!(queued, 2);
        let mut expected = framed(b"report");
        expected.extend(framed(&[3; 40]));
        assert_eq!(read_exactly(&mut client, expected.len()).await, expected);
        assert_eq!(writer.delivery.tick(), 3);
    }

    #[tokio::test]
    async fn a_direct_write_the_socket_cannot_take_at_once_is_finished_before_anything_else() {
        let (mut io, writer, mut client) = pair().await;
        writer.idle_if(|| true);
        // Far more than loopback's socket buffers take while the client does not read.
        let big = snapshot(9, 32 * 1024 * 1024);
        assert!(writer.write_now_or(None, &big, &mut || unreachable!("the socket was idle")));
        assert!(!writer.write_now_or(None, &snapshot(10, 40), &mut || {}), "the rest is still to be written");
        let reader = tokio::spawn(async move {
            let mut expected = framed(&big.bytes);
            expected.extend_from_slice(b"after");
            let received = read_exactly(&mut client, expected.len()).await;
            assert!(received == expected, "the direct write came out whole and first");
        });
        // The connection's next write finishes the leftover first.
        tokio::time::timeout(Duration::from_secs(10), io.write_all(b"after")).await.unwrap().unwrap();
        tokio::time::timeout(Duration::from_secs(10), io.flush()).await.unwrap().unwrap();
        reader.await.unwrap();
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[tokio::test]
    async fn a_client_that_does_not_read_has_little_waiting_in_the_kernel_and_the_rest_is_superseded() {
        // A small receive window, as behind a slow link: what the client cannot take waits in
        // the server's socket.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpSocket::new_v4().unwrap();
        client.set_recv_buffer_size(16 * 1024).unwrap();
        let _client = client.connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (_io, writer) = SocketWriter::split(server, Arc::default(), &Limits::default());
        writer.idle_if(|| true);
        let (mut written, mut queued) = (0, 0);
        for tick in 1..=20_000 {
            let mut queue = || queued += 1;
            if writer.write_now_or(None, &snapshot(tick, 1000), &mut queue) {
                written += 1;
            }
        }
        assert!(written * 1000 <= 128 * 1024, "{written} snapshots of 1 KB went into the kernel");
        assert_eq!(written + queued, 20_000, "every other snapshot went to the connection's slot");
    }
}
