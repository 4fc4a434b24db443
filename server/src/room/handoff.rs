//! Hands a tick's snapshots to the connections in the room's order (the member whose input
//! waited longest first), from one thread outside the runtime: written straight to each socket
//! that is idle (`DirectWrite`), else queued in the member's `watch` slot for its connection
//! task, which wakes the task. Writing directly saves a task wake, a poll and a flush per member
//! and keeps the order exactly (docs/bench/HISTORY.md). Tokio queues wakes from outside
//! its workers in one FIFO queue; a worker's own wakes go to its local queue of 256, which, when
//! a room wakes hundreds of connections at once, overflows by moving its oldest wakes behind the
//! newest and undoes the order. (Yielding every few wakes to keep that queue short kept the order
//! at N = 500 but stretched the fan-out at N = 1,000: docs/bench/HISTORY.md.)
//!
//! A member's reliable messages take the same way from the room's own task (`send_messages`):
//! what the room gathered for it goes to its socket in one write when that is idle, else into
//! its connection's queue (decision 0049).

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::watch;

use super::EncodedSnapshot;
use super::Traffic;
use super::fanout::Fanout;
use super::message_queue::{MessageSender, Refused};

/// A connection's socket, which the hand-over writes a snapshot to at once when nothing else is
/// on its way to it.
pub trait DirectWrite: Send + Sync {
    /// Writes `report` (a message that goes just before the snapshot) and `snapshot` into the
    /// socket's byte stream now and returns true; or, if the connection is writing or has
    /// something queued, calls `queue` (while holding the socket, so that nothing is written in
    /// between) and returns false.
    fn write_now_or(&self, report: Option<&Bytes>, snapshot: &EncodedSnapshot, queue: &mut dyn FnMut()) -> bool;

    /// Writes reliable `messages` at once, in order, and returns true; or queues them as
    /// `write_now_or` does. Only a transport that carries them on the stream the connection
    /// writes its own messages to can take them here (a socket); the default queues them.
    fn write_messages_now_or(&self, messages: &[Bytes], queue: &mut dyn FnMut()) -> bool {
        let _ = messages;
        queue();
        false
    }
}

/// Hands a member's reliable `messages` to its connection, in order: written to its socket at
/// once when that is idle (no task woken), else queued for its connection task, which writes
/// them with one flush. False when its queue cannot take them all: the member is too slow.
pub(crate) fn send_messages(
    messages: &[Bytes],
    queue: &MessageSender,
    socket: Option<&Arc<dyn DirectWrite>>,
    traffic: &Traffic,
) -> bool {
    let mut kept = true;
    let mut enqueue = || kept = !matches!(queue.try_send_all(messages), Err(Refused::Full));
    let written = match socket {
        Some(socket) => socket.write_messages_now_or(messages, &mut enqueue),
        None => {
            enqueue();
            false
        }
    };
    if written {
        traffic.sent(messages.iter().map(|message| message.len() as u64).sum());
    }
    kept
}

/// One member's snapshot of a tick, on its way to the member's connection.
pub(crate) struct Handoff {
    pub snapshots: Arc<watch::Sender<EncodedSnapshot>>,
    pub snapshot: EncodedSnapshot,
    /// A message that goes just before the snapshot (an input-timing report), so both are
    /// written at once.
    pub report: Option<(MessageSender, Bytes)>,
    pub socket: Option<Arc<dyn DirectWrite>>,
}

impl Handoff {
    fn deliver(self, fanout: &Fanout, traffic: &Traffic) {
        let Handoff { snapshots, snapshot, report, socket } = self;
        let mut queue = || {
            if let Some((messages, report)) = &report {
                // Advice, not state: a member whose queue is full does without it.
                let _ = messages.try_send(report.clone());
            }
            snapshots.send_replace(snapshot.clone());
        };
        let written = match &socket {
            Some(socket) => socket.write_now_or(report.as_ref().map(|(_, report)| report), &snapshot, &mut queue),
            None => {
                queue();
                false
            }
        };
        if written {
            fanout.written(snapshot.tick);
            traffic.sent((report.as_ref().map_or(0, |(_, report)| report.len()) + snapshot.bytes.len()) as u64);
        }
    }
}

/// A tick's hand-overs, in order, the room's fan-out timer and its traffic counts.
type Batch = (Vec<Handoff>, Arc<Fanout>, Arc<Traffic>);

/// Where a room hands its ticks' snapshots over.
#[derive(Clone)]
pub(crate) enum Handover {
    /// At once, on the room's own thread: tests, and a server whose hand-over thread could not
    /// be started.
    Inline,
    /// On the process-wide hand-over thread, in the order the rooms send their batches.
    Thread(std_mpsc::Sender<Batch>),
}

impl Handover {
    /// The process-wide hand-over thread, started by the first room that asks.
    pub fn thread() -> Self {
        static THREAD: OnceLock<Option<std_mpsc::Sender<Batch>>> = OnceLock::new();
        match THREAD.get_or_init(start) {
            Some(sender) => Handover::Thread(sender.clone()),
            None => Handover::Inline,
        }
    }

    /// Hands `batch` over in its order.
    pub fn hand_over(&self, batch: Vec<Handoff>, fanout: &Arc<Fanout>, traffic: &Arc<Traffic>) {
        let batch = match self {
            Handover::Thread(thread) => match thread.send((batch, Arc::clone(fanout), Arc::clone(traffic))) {
                Ok(()) => return,
                Err(std_mpsc::SendError((batch, _, _))) => batch,
            },
            Handover::Inline => batch,
        };
        deliver_all(batch, fanout, traffic);
    }
}

fn deliver_all(batch: Vec<Handoff>, fanout: &Fanout, traffic: &Traffic) {
    batch.into_iter().for_each(|handoff| handoff.deliver(fanout, traffic));
}

fn start() -> Option<std_mpsc::Sender<Batch>> {
    let (sender, batches) = std_mpsc::channel::<Batch>();
    let spawned = std::thread::Builder::new().name("snapshot hand-over".to_owned()).spawn(move || {
        for (batch, fanout, traffic) in batches {
            deliver_all(batch, &fanout, &traffic);
        }
    });
    match spawned {
        Ok(_) => Some(sender),
        Err(e) => {
            tracing::warn!("cannot start the snapshot hand-over thread, handing over in the room: {e}");
            None
        }
    }
}
