//! The server's threads: one single-threaded tokio runtime per core, a shard, each with its own
//! I/O driver, timers and tasks. A room runs on the shard where it opened, and a WebSocket that
//! names its room in the upgrade request moves to the room's shard before its first frame, so a
//! room's tick, its members' reads and its replies are wakes on one thread: none of the parking
//! and stealing between workers that made two workers of one runtime cost more CPU than one
//! (decision 0053). Connections are spread over the shards as they are accepted, so a server
//! with many rooms still uses every core.
//!
//! Shard 0 is the runtime `start` is called on (the binary's main thread; a test's runtime);
//! the others run on threads of their own until their `Threads` are stopped or dropped.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

pub struct Shards {
    handles: Vec<Handle>,
    /// The shard the next accepted connection goes to.
    next: AtomicUsize,
}

/// The threads of shards 1 and up, and what tells each to finish. Dropped (the server's future
/// cancelled), they are told to finish too, and what runs on them is dropped as it would be
/// with a single runtime: nothing outlives the server, whatever holds the `Shards`.
pub struct Threads(Vec<(oneshot::Sender<()>, JoinHandle<()>)>);

impl Shards {
    /// The calling runtime as shard 0 and `count - 1` more, each on a thread of its own. Must be
    /// called inside a runtime.
    pub fn start(count: usize) -> io::Result<(Self, Threads)> {
        let mut handles = vec![Handle::current()];
        let mut threads = Vec::new();
        for index in 1..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new().name(format!("shard {index}")).spawn(move || {
                // A dropped sender stops the shard as a sent stop does.
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
            threads.push((stop, thread));
        }
        Ok((Self { handles, next: AtomicUsize::new(0) }, Threads(threads)))
    }

    /// The shard for a newly accepted connection: each in turn.
    pub fn next(&self) -> &Handle {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[index]
    }
}

impl Threads {
    /// Stops shards 1 and up (what still runs on them is dropped) and waits for their threads.
    pub async fn stop(mut self) {
        for (stop, thread) in std::mem::take(&mut self.0) {
            let _ = stop.send(());
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        for (stop, _) in self.0.drain(..) {
            let _ = stop.send(());
        }
    }
}

/// Whether `runtime` is the one this code runs on.
pub fn is_current(runtime: &Handle) -> bool {
    Handle::try_current().is_ok_and(|current| current.id() == runtime.id())
}

/// Runs `serve` with `stream` as a task on `runtime`: on this one as it is, or on another with
/// the socket taken out of this runtime's I/O driver and registered with `runtime`'s, so its
/// readiness is reported on that runtime's thread. Returns whether the socket moved. A socket
/// the OS will not let move (it failed already) is dropped, with a warning.
pub fn spawn_with_stream<F, Fut>(runtime: &Handle, stream: tokio::net::TcpStream, serve: F) -> bool
where
    F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    if is_current(runtime) {
        tokio::spawn(serve(stream));
        return false;
    }
    // `into_std` deregisters the socket and leaves it non-blocking, as `from_std` wants it.
    match stream.into_std() {
        Ok(moved) => {
            runtime.spawn(async move {
                match tokio::net::TcpStream::from_std(moved) {
                    Ok(stream) => serve(stream).await,
                    Err(e) => tracing::warn!("cannot take a connection onto its shard: {e}"),
                }
            });
            true
        }
        Err(e) => {
            tracing::warn!("cannot move a connection off its shard: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_go_to_each_shard_in_turn_and_a_moved_socket_works_there() {
        let (shards, threads) = Shards::start(2).expect("two shards");
        assert!(is_current(shards.next()), "shard 0 is the caller's runtime");
        let other = shards.next().clone();
        assert!(!is_current(&other));
        assert!(is_current(shards.next()), "back to shard 0");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let client = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut client = tokio::net::TcpStream::connect(address).await.expect("connect");
            client.write_all(b"ping").await.expect("write");
            let mut answer = [0u8; 4];
            client.read_exact(&mut answer).await.expect("read");
            answer
        });
        let (stream, _) = listener.accept().await.expect("accept");
        let (served, on) = oneshot::channel();
        spawn_with_stream(&other, stream, move |mut stream| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut asked = [0u8; 4];
            stream.read_exact(&mut asked).await.expect("read on the other shard");
            stream.write_all(b"pong").await.expect("write on the other shard");
            let _ = served.send((asked, std::thread::current().name().map(str::to_owned)));
        });
        let (asked, thread) = on.await.expect("served");
        assert_eq!(&asked, b"ping");
        assert_eq!(thread.as_deref(), Some("shard 1"), "the socket was served on the other shard's thread");
        assert_eq!(&client.await.expect("client"), b"pong");
        threads.stop().await;
    }
}
