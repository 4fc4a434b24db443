//! The headless front: the same `ClientCore` over either transport (`link`, on `wire` for TCP,
//! plain or TLS), for integration tests and the load generator. A background task owns the connection; the handle shares the
//! core.

mod link;
mod wire;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use easel_protocol::text::TextError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::core::{Channel, ClientCore, Status};
pub use link::{Link, LinkError, Received, Transport, TransportChoice};
pub use wire::Trust;

/// How often the task polls the core for inputs and pings: faster than any tick rate we run.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub enum HeadlessError {
    #[error("cannot connect: {0}")]
    Connect(#[from] LinkError),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, &'static str),
    #[error("connection closed ({code}): {reason}")]
    Closed { code: u16, reason: String },
    #[error(transparent)]
    Text(#[from] TextError),
}

enum Command {
    Send(Vec<u8>),
    Close,
}

pub struct HeadlessClient {
    core: Arc<Mutex<ClientCore>>,
    /// Bumped after every change to the core, so waiters wake without polling.
    changed: watch::Receiver<u64>,
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
}

impl HeadlessClient {
    /// Connects to `url` (e.g. `ws://127.0.0.1:8080/ws`) and sends `Hello`; does not wait for
    /// `Welcome` (see `joined`).
    pub async fn connect(url: &str, name: &str, room: &str) -> Result<Self, HeadlessError> {
        Self::connect_with(url, ClientCore::new(name, room)).await
    }

    /// Connects over a WebSocket with an existing core: a client coming back with its offline
    /// edits.
    pub async fn connect_with(url: &str, core: ClientCore) -> Result<Self, HeadlessError> {
        Self::connect_over(&Transport::WebSocket { url: url.to_owned(), trust: Trust::System }, core).await
    }

    /// Connects over `transport` with `core`, and sends `Hello`.
    pub async fn connect_over(transport: &Transport, mut core: ClientCore) -> Result<Self, HeadlessError> {
        let link = Link::open(transport, core.room()).await?;
        let hello = core.hello();
        let core = Arc::new(Mutex::new(core));
        let (changed_tx, changed) = watch::channel(0);
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let _ = commands.send(Command::Send(hello));
        let task = tokio::spawn(drive(link, transport.clone(), core.clone(), changed_tx, commands_rx));
        Ok(Self { core, changed, commands, task })
    }

    /// Connects over a WebSocket and waits for `Welcome`.
    pub async fn join(url: &str, name: &str, room: &str, timeout: Duration) -> Result<Self, HeadlessError> {
        Self::join_over(&Transport::WebSocket { url: url.to_owned(), trust: Trust::System }, name, room, timeout).await
    }

    /// Connects over `transport` and waits for `Welcome`.
    pub async fn join_over(
        transport: &Transport,
        name: &str,
        room: &str,
        timeout: Duration,
    ) -> Result<Self, HeadlessError> {
        Self::join_with(transport, ClientCore::new(name, room), timeout).await
    }

    /// Connects over `transport` with `core` (a reloaded tab's, say) and waits for `Welcome`.
    pub async fn join_with(transport: &Transport, core: ClientCore, timeout: Duration) -> Result<Self, HeadlessError> {
        let client = Self::connect_over(transport, core).await?;
        client.joined(timeout).await?;
        Ok(client)
    }

    /// Waits until the board has arrived and every own edit is acknowledged.
    pub async fn board_synced(&self, timeout: Duration) -> Result<(), HeadlessError> {
        self.wait_for(timeout, "board in sync", |core| {
            (matches!(core.status(), Status::Joined)
                && core.whiteboard().is_synced()
                && core.whiteboard().unsynced() == 0)
                .then_some(())
        })
        .await
    }

    /// Closes the connection and hands back the core, with its board and unsent edits, as a
    /// client that went offline would keep them.
    pub async fn disconnect(mut self) -> ClientCore {
        let _ = self.commands.send(Command::Close);
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
        self.take_core()
    }

    /// Loses the connection without a close frame, as a network drop does, and hands back the
    /// core, whose next `hello` carries the resume token that gets the same player back.
    pub async fn lose_connection(mut self) -> ClientCore {
        self.task.abort();
        // Dropping the aborted task drops the socket: the server reads an end without a close.
        let _ = (&mut self.task).await;
        self.take_core()
    }

    fn take_core(&mut self) -> ClientCore {
        std::mem::replace(&mut *lock(&self.core), ClientCore::new("", ""))
    }

    pub async fn joined(&self, timeout: Duration) -> Result<u32, HeadlessError> {
        self.wait_for(timeout, "Welcome", |core| match core.status() {
            Status::Joined => core.view().me().map(Ok),
            Status::Closed { code, reason, .. } => {
                Some(Err(HeadlessError::Closed { code: *code, reason: reason.clone() }))
            }
            Status::Connecting => None,
        })
        .await?
    }

    /// Reads the core.
    pub fn core(&self) -> MutexGuard<'_, ClientCore> {
        lock(&self.core)
    }

    pub fn hold_direction(&self, dx: i8, dy: i8) {
        self.core().hold_direction(dx, dy);
    }

    pub fn chat(&self, text: &str) -> Result<(), HeadlessError> {
        let bytes = self.core().chat(text)?;
        let _ = self.commands.send(Command::Send(bytes));
        Ok(())
    }

    /// Sends raw bytes as one binary message (for tests of hostile clients).
    pub fn send_raw(&self, bytes: Vec<u8>) {
        let _ = self.commands.send(Command::Send(bytes));
    }

    /// Waits until `check` returns `Some`, re-checking after every change.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &'static str,
        mut check: impl FnMut(&ClientCore) -> Option<T>,
    ) -> Result<T, HeadlessError> {
        let mut changed = self.changed.clone();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check(&self.core()) {
                return Ok(value);
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                // The task ended: one last look, then give up.
                Ok(Err(_)) => {
                    return check(&self.core()).ok_or(HeadlessError::Timeout(timeout, what));
                }
                Err(_) => return Err(HeadlessError::Timeout(timeout, what)),
            }
        }
    }

    /// Closes the connection normally and waits for the task to end.
    pub async fn close(mut self) {
        let _ = self.commands.send(Command::Close);
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
    }
}

impl Drop for HeadlessClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects where a redirect sent the client, the same way it came (`transport`'s kind and
/// trust), and sends the `Hello` with the seat.
async fn follow(transport: &Transport, url: &str, core: &Mutex<ClientCore>) -> Result<Link, LinkError> {
    let room = lock(core).room().to_owned();
    let mut link = Link::open(&transport.redirected(url).await?, &room).await?;
    let hello = lock(core).hello();
    link.send(&hello, Channel::Reliable).await?;
    Ok(link)
}

fn lock(core: &Mutex<ClientCore>) -> MutexGuard<'_, ClientCore> {
    // The core holds plain data; a panic while locked cannot leave it half-updated in a way
    // that matters more than losing the client.
    core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn drive(
    mut link: Link,
    transport: Transport,
    core: Arc<Mutex<ClientCore>>,
    changed: watch::Sender<u64>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let start = Instant::now();
    let now_ms = move || start.elapsed().as_secs_f64() * 1000.0;
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    let bump = |changed: &watch::Sender<u64>| changed.send_modify(|v| *v += 1);
    loop {
        tokio::select! {
            received = link.recv() => {
                match received {
                    Received::Message { bytes, .. } => {
                        let result = lock(&core).handle_message(now_ms(), &bytes);
                        if let Err(e) = result {
                            let reason = format!("bad message from server: {e}");
                            lock(&core).handle_close(easel_protocol::close::PROTOCOL_ERROR, &reason);
                            bump(&changed);
                            break;
                        }
                    }
                    Received::Closed { code, reason } => {
                        let redirect = lock(&core).take_redirect();
                        if let Some(url) = redirect {
                            match follow(&transport, &url, &core).await {
                                Ok(next) => {
                                    link = next;
                                    continue;
                                }
                                Err(e) => lock(&core).handle_close(easel_protocol::close::ABNORMAL, &e.to_string()),
                            }
                        } else {
                            lock(&core).handle_close(code, &reason);
                        }
                        bump(&changed);
                        break;
                    }
                    Received::Lost(why) => {
                        lock(&core).handle_close(easel_protocol::close::ABNORMAL, &why);
                        bump(&changed);
                        break;
                    }
                }
                bump(&changed);
            }
            command = commands.recv() => match command {
                Some(Command::Send(bytes)) => {
                    let _ = link.send(&bytes, Channel::Reliable).await;
                }
                Some(Command::Close) | None => {
                    link.close().await;
                    lock(&core).handle_close(1000, "closed by client");
                    bump(&changed);
                    break;
                }
            },
            _ = poll.tick() => {
                if lock(&core).close_if_silent(now_ms()) {
                    bump(&changed);
                    break;
                }
                let outgoing = lock(&core).poll_transmit(now_ms());
                for transmit in outgoing {
                    if link.send(&transmit.bytes, transmit.channel).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
}
