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
//! Over TLS the same holds one layer up: the rustls session lives under the writer's lock,
//! every write (the hand-over's and the connection's) is encrypted into it in order, and its
//! records go to the socket the same way; the records the socket did not take are the
//! leftover. The reader decrypts through the same session. So a TLS connection keeps the
//! hand-over: a snapshot is encrypted and written from the room's thread, no task woken
//! (decision 0042).
//!
//! On the read side, every frame the client sends is metered as it arrives (`FrameMeter`):
//! frames that are not whole messages (pings, pongs, continuations) draw on a budget of their
//! own, and the read that goes past it fails with `TooManyFrames`.

use std::io::{self, IoSlice, Read as _, Write as _};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use easel_protocol::frame::server_frame_header;
use rustls::ServerConnection;
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

/// Bytes of TLS records read from the socket at once: a record is at most 16 KiB, and nearly
/// every client message is an input of about 20 bytes.
const TLS_READ_CHUNK: usize = 4096;

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
    /// Over TLS, the session: what is written is encrypted into it (in order, under this lock)
    /// and what is read is decrypted by it. The records it holds unwritten are a leftover too.
    tls: Option<Box<ServerConnection>>,
}

impl WriterState {
    /// Whether bytes already accepted are still to go out.
    fn pending(&self) -> bool {
        !self.leftover.is_empty() || self.tls.as_ref().is_some_and(|tls| tls.wants_write())
    }
}

/// The socket as `io::Write` for rustls: never waits, `WouldBlock` when full.
struct SocketSink<'a>(&'a OwnedWriteHalf);

impl io::Write for SocketSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SocketWriter {
    /// Splits `stream` into the reader tungstenite reads from (its frames metered by `limits`)
    /// and the shared writer.
    pub fn split(stream: TcpStream, metrics: Arc<Metrics>, limits: &Limits) -> (SocketIo, Arc<Self>) {
        Self::split_with(stream, None, metrics, limits)
    }

    /// As `split`, for a connection whose TLS handshake `tls` completed: frames are encrypted
    /// into the session and its records written to the socket, by the hand-over as by the
    /// connection, so a snapshot still goes out from the room's thread without waking the
    /// connection's task.
    pub fn split_tls(
        stream: TcpStream,
        mut tls: Box<ServerConnection>,
        metrics: Arc<Metrics>,
        limits: &Limits,
    ) -> (SocketIo, Arc<Self>) {
        // Plaintext is only handed over when nothing is pending (`poll_write` flushes first,
        // the hand-over writes only while idle), so the session never holds more than one
        // write's records: no limit of its own is needed, and one would split a frame.
        tls.set_buffer_limit(None);
        Self::split_with(stream, Some(tls), metrics, limits)
    }

    fn split_with(
        stream: TcpStream,
        tls: Option<Box<ServerConnection>>,
        metrics: Arc<Metrics>,
        limits: &Limits,
    ) -> (SocketIo, Arc<Self>) {
        bound_unsent_bytes(&stream);
        let (read, write) = stream.into_split();
        let encrypted = tls.is_some();
        let writer = Arc::new(Self {
            socket: write,
            state: Mutex::new(WriterState { busy: true, leftover: BytesMut::new(), tls }),
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
        (SocketIo { read, tls: encrypted, writer: Arc::clone(&writer), frames }, writer)
    }

    fn lock(&self) -> MutexGuard<'_, WriterState> {
        // The state stays consistent at every point a panic could leave it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection has written and flushed everything it had: the hand-over may write
    /// again, unless `nothing_queued` says the room queued something for it meanwhile.
    pub fn idle_if(&self, nothing_queued: impl FnOnce() -> bool) {
        let mut state = self.lock();
        if !state.pending() && nothing_queued() {
            state.busy = false;
        }
    }

    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut state = self.lock();
        state.busy = true;
        ready!(self.poll_write_leftover(&mut state, cx))?;
        let Some(tls) = state.tls.as_mut() else {
            return self.poll_write_with(cx, |socket| socket.try_write(buf));
        };
        let accepted = tls.writer().write(buf)?;
        // Out as far as the socket takes it now; the rest goes with the flush that follows.
        if let Poll::Ready(Err(e)) = self.poll_write_leftover(&mut state, cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(accepted))
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
        if let Some(tls) = state.tls.as_mut() {
            while tls.wants_write() {
                ready!(self.poll_write_with(cx, |socket| tls.write_tls(&mut SocketSink(socket))))?;
            }
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
        self.write_frames_now_or(report.map(std::slice::from_ref).unwrap_or_default(), Some(snapshot), queue)
    }

    fn write_messages_now_or(&self, messages: &[Bytes], queue: &mut dyn FnMut()) -> bool {
        self.write_frames_now_or(messages, None, queue)
    }
}

impl SocketWriter {
    /// Writes `messages` and then `snapshot`, each as one frame, into the socket's byte stream
    /// with one write if the socket is idle; else calls `queue` under the lock (`DirectWrite`).
    fn write_frames_now_or(
        &self,
        messages: &[Bytes],
        snapshot: Option<&EncodedSnapshot>,
        queue: &mut dyn FnMut(),
    ) -> bool {
        let mut state = self.lock();
        if !state.busy {
            let payloads = || messages.iter().map(Bytes::as_ref).chain(snapshot.map(|s| s.bytes.as_ref()));
            let headers: Vec<_> = payloads().map(|payload| server_frame_header(payload.len())).collect();
            // Each frame's header, then its payload.
            let slices: Vec<IoSlice<'_>> = headers
                .iter()
                .zip(payloads())
                .flat_map(|(header, payload)| [IoSlice::new(header.as_slice()), IoSlice::new(payload)])
                .collect();
            let total: usize = slices.iter().map(|slice| slice.len()).sum();
            if let Some(tls) = state.tls.as_mut() {
                // Encrypted as one record stream, then written as far as the socket takes it;
                // what it does not take stays in the session for the connection task, like a
                // plain write's rest. (Once encrypted it is committed: a socket that is full
                // holds back this one write, and the next snapshots go to the slot.)
                let accepted = tls.writer().write_vectored(&slices).unwrap_or(0);
                while tls.wants_write() {
                    if !matches!(tls.write_tls(&mut SocketSink(&self.socket)), Ok(1..)) {
                        break;
                    }
                }
                if tls.wants_write() || accepted < total {
                    // The rest, or a broken session, is for the connection task to find.
                    state.busy = true;
                    self.finish_write.notify_one();
                }
                self.count_written(messages, snapshot);
                return true;
            }
            // Zero bytes taken (the socket is full, or broken): the connection task finds out.
            // (A write of more than the system's limit of slices takes the first ones only; the
            // rest is a leftover like any other.)
            if let Ok(written @ 1..) = self.socket.try_write_vectored(&slices) {
                if written < total {
                    let mut skip = written;
                    for part in &slices {
                        let taken = skip.min(part.len());
                        state.leftover.extend_from_slice(&part[taken..]);
                        skip -= taken;
                    }
                    state.busy = true;
                    self.finish_write.notify_one();
                }
                self.count_written(messages, snapshot);
                return true;
            }
        }
        state.busy = true;
        queue();
        false
    }

    fn count_written(&self, messages: &[Bytes], snapshot: Option<&EncodedSnapshot>) {
        let payload = messages.iter().map(Bytes::len).sum::<usize>() + snapshot.map_or(0, |s| s.bytes.len());
        self.metrics.messages_out.add((messages.len() + usize::from(snapshot.is_some())) as u64);
        self.metrics.bytes_out.add(payload as u64);
        if let Some(snapshot) = snapshot {
            self.delivery.written(snapshot.tick);
        }
    }
}

/// What tungstenite reads from and writes through: the socket's read half, metered, and the
/// shared writer, whose rule keeps tungstenite's frames (replies, pongs, the close) whole.
pub(super) struct SocketIo {
    read: OwnedReadHalf,
    writer: Arc<SocketWriter>,
    frames: FrameBudget,
    /// The socket carries TLS records (the session is in the writer's state).
    tls: bool,
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
            return self.poll_read_plaintext(cx, buf);
        }
        let before = buf.filled().len();
        ready!(self.poll_read_plaintext(cx, buf))?;
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

impl SocketIo {
    /// Reads what the client sent: from the socket, or over TLS, what the session decrypts of
    /// what the socket brings.
    fn poll_read_plaintext(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.tls {
            return Pin::new(&mut self.read).poll_read(cx, buf);
        }
        loop {
            {
                let mut state = self.writer.lock();
                let Some(tls) = state.tls.as_mut() else { return Poll::Ready(Err(io::ErrorKind::NotConnected.into())) };
                match tls.reader().read(buf.initialize_unfilled()) {
                    // 0: the client's close_notify, the end of the stream.
                    Ok(read) => {
                        buf.advance(read);
                        return Poll::Ready(Ok(()));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // Closed without close_notify, or a broken session.
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            let mut raw = [MaybeUninit::<u8>::uninit(); TLS_READ_CHUNK];
            let mut records = ReadBuf::uninit(&mut raw);
            ready!(Pin::new(&mut self.read).poll_read(cx, &mut records))?;
            let mut records = records.filled();
            let mut state = self.writer.lock();
            let Some(tls) = state.tls.as_mut() else { return Poll::Ready(Err(io::ErrorKind::NotConnected.into())) };
            // An empty read is the end of the TCP stream: the session is told, and says whether
            // the client closed it properly.
            let mut processed = Ok(());
            loop {
                if let Err(e) = tls.read_tls(&mut records) {
                    processed = Err(e);
                    break;
                }
                if let Err(e) = tls.process_new_packets() {
                    processed = Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    break;
                }
                if records.is_empty() {
                    break;
                }
            }
            // An answer of the session's own (a key update, an alert): the connection task
            // writes it, and the hand-over waits for it.
            if tls.wants_write() {
                state.busy = true;
                self.writer.finish_write.notify_one();
            }
            processed?;
        }
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
    async fn reliable_messages_are_written_in_order_in_one_write_when_idle_and_queued_when_busy() {
        let (_io, writer, mut client) = pair().await;
        let messages = [Bytes::from_static(b"first"), Bytes::from(vec![2; 300]), Bytes::from_static(b"third")];
        let mut queued = 0;
        assert!(!writer.write_messages_now_or(&messages, &mut || queued += 1), "busy until the welcome is out");
        assert_eq!(queued, 1);
        writer.idle_if(|| true);
        assert!(writer.write_messages_now_or(&messages, &mut || unreachable!("the socket was idle")));
        let expected: Vec<u8> = messages.iter().flat_map(|message| framed(message)).collect();
        assert_eq!(read_exactly(&mut client, expected.len()).await, expected);
        assert_eq!(writer.delivery.tick(), 0, "no snapshot was written");
        // Still idle: the next write goes straight out too.
        assert!(writer.write_now_or(None, &snapshot(4, 40), &mut || unreachable!("still idle")));
        assert_eq!(read_exactly(&mut client, 42).await, framed(&[4; 40]));
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

    /// A TLS connection on loopback with `easel cert dev`'s certificate: the server's side split
    /// as a WebSocket upgrade over TLS splits it, and the client's stream.
    async fn tls_pair(test: &str) -> (SocketIo, Arc<SocketWriter>, tokio_rustls::client::TlsStream<TcpStream>) {
        let dir = std::env::temp_dir().join(format!("easel-socket-tls-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = super::super::tls::write_dev_certificate(&dir, &["localhost".to_owned()]).unwrap();
        let tls = super::super::tls::Tls::load(&files).unwrap();
        let pem = std::fs::read(&files.cert).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::pem::PemObject::from_pem_slice(&pem).unwrap()).unwrap();
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connecting = TcpStream::connect(listener.local_addr().unwrap());
        let (client, (server, _)) = tokio::join!(connecting, async { listener.accept().await.unwrap() });
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let (client, server) = tokio::join!(connector.connect(name, client.unwrap()), tls.acceptor().accept(server));
        let (stream, session) = server.unwrap().into_inner();
        let (io, writer) = SocketWriter::split_tls(stream, Box::new(session), Arc::default(), &Limits::default());
        (io, writer, client.unwrap())
    }

    #[tokio::test]
    async fn over_tls_the_hand_over_encrypts_into_the_session_in_order_with_the_connections_writes() {
        let (mut io, writer, mut client) = tls_pair("order").await;
        // The connection's first write (the welcome), then the hand-over's.
        io.write_all(b"welcome").await.unwrap();
        io.flush().await.unwrap();
        writer.idle_if(|| true);
        let report = Bytes::from_static(b"report");
        assert!(writer.write_now_or(Some(&report), &snapshot(3, 40), &mut || unreachable!("idle")));
        let mut expected = b"welcome".to_vec();
        expected.extend(framed(b"report"));
        expected.extend(framed(&[3; 40]));
        let mut received = vec![0; expected.len()];
        tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut received)).await.unwrap().unwrap();
        assert_eq!(received, expected);
        assert_eq!(writer.delivery.tick(), 3);
        // And what the client sends is read decrypted.
        client.write_all(b"input").await.unwrap();
        client.flush().await.unwrap();
        let mut read = [0; 5];
        tokio::time::timeout(Duration::from_secs(10), io.read_exact(&mut read)).await.unwrap().unwrap();
        assert_eq!(&read, b"input");
    }

    #[tokio::test]
    async fn over_tls_a_direct_write_the_socket_cannot_take_at_once_is_finished_before_anything_else() {
        let (mut io, writer, mut client) = tls_pair("leftover").await;
        io.flush().await.unwrap();
        writer.idle_if(|| true);
        let big = snapshot(9, 8 * 1024 * 1024);
        assert!(writer.write_now_or(None, &big, &mut || unreachable!("the socket was idle")));
        assert!(!writer.write_now_or(None, &snapshot(10, 40), &mut || {}), "the rest is still to be written");
        let reader = tokio::spawn(async move {
            let mut expected = framed(&big.bytes);
            expected.extend_from_slice(b"after");
            let mut received = vec![0; expected.len()];
            tokio::time::timeout(Duration::from_secs(20), client.read_exact(&mut received)).await.unwrap().unwrap();
            assert!(received == expected, "the direct write came out whole and first");
        });
        tokio::time::timeout(Duration::from_secs(20), io.write_all(b"after")).await.unwrap().unwrap();
        tokio::time::timeout(Duration::from_secs(20), io.flush()).await.unwrap().unwrap();
        reader.await.unwrap();
    }
}
