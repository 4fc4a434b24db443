//! Hands a tick's snapshots to the connections in the room's order (the member whose input
//! waited longest first), from one thread outside the runtime. Tokio queues wakes from outside
//! its workers in one FIFO queue; a worker's own wakes go to its local queue of 256, which, when
//! a room wakes hundreds of connections at once, overflows by moving its oldest wakes behind the
//! newest and undoes the order. (Yielding every few wakes to keep that queue short kept the order
//! at N = 500 but stretched the fan-out at N = 1,000: README, Benchmarks.)

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::EncodedSnapshot;

/// One member's snapshot of a tick, on its way to the member's connection.
pub(super) struct Handoff {
    pub snapshots: Arc<watch::Sender<EncodedSnapshot>>,
    pub snapshot: EncodedSnapshot,
    /// A message that goes just before the snapshot (an input-timing report), so the
    /// connection writes both at once.
    pub report: Option<(mpsc::Sender<Bytes>, Bytes)>,
}

impl Handoff {
    fn deliver(self) {
        if let Some((messages, report)) = self.report {
            // Advice, not state: a member whose queue is full does without it.
            let _ = messages.try_send(report);
        }
        self.snapshots.send_replace(self.snapshot);
    }
}

/// Hands `batch` over in its order: on the hand-over thread when `threaded` (the room task),
/// else at once (tests, and if the thread cannot be started).
pub(super) fn hand_over(batch: Vec<Handoff>, threaded: bool) {
    static THREAD: OnceLock<Option<std_mpsc::Sender<Vec<Handoff>>>> = OnceLock::new();
    let thread = threaded.then(|| THREAD.get_or_init(start).as_ref()).flatten();
    match thread {
        Some(thread) => {
            if let Err(std_mpsc::SendError(batch)) = thread.send(batch) {
                batch.into_iter().for_each(Handoff::deliver);
            }
        }
        None => batch.into_iter().for_each(Handoff::deliver),
    }
}

fn start() -> Option<std_mpsc::Sender<Vec<Handoff>>> {
    let (sender, batches) = std_mpsc::channel::<Vec<Handoff>>();
    let spawned = std::thread::Builder::new().name("snapshot hand-over".to_owned()).spawn(move || {
        for batch in batches {
            batch.into_iter().for_each(Handoff::deliver);
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
