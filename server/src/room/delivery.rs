//! Which snapshot a member's client is sure to hold, the baseline the room encodes its next
//! snapshot against: kept by the member's connection, read by the room every tick.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The newest snapshot tick a client is sure to hold before it reads anything sent later. Over
/// an ordered reliable transport (WebSocket) a tick written to the socket counts at once, a
/// round trip before its acknowledgement would. A client whose link loses snapshots says so
/// (`ClientMsg::SnapshotLost`, at once if it knows beforehand), and from then on only its
/// acknowledgements count, so that no delta is against a snapshot it lost.
#[derive(Debug, Default)]
pub struct Delivery {
    newest: AtomicU32,
    loses_snapshots: AtomicBool,
}

impl Delivery {
    /// A client whose link may lose snapshots from the start (datagrams): only its
    /// acknowledgements count.
    pub fn for_lossy_link() -> Self {
        Self { newest: AtomicU32::new(0), loses_snapshots: AtomicBool::new(true) }
    }

    /// The baseline for the next snapshot (0: none, send it in full).
    pub fn tick(&self) -> u32 {
        self.newest.load(Ordering::Relaxed)
    }

    /// The snapshot of `tick` is in the connection's byte stream, ahead of anything written
    /// later.
    pub fn written(&self, tick: u32) {
        if !self.loses_snapshots.load(Ordering::Relaxed) {
            self.newest.fetch_max(tick, Ordering::Relaxed);
        }
    }

    /// The client decoded the snapshot of `tick`.
    pub fn acknowledged(&self, tick: u32) {
        self.newest.fetch_max(tick, Ordering::Relaxed);
    }

    /// The client's link loses snapshots; `newest` is the newest it decoded. From now on only
    /// its acknowledgements count.
    pub fn lost(&self, newest: u32) {
        self.loses_snapshots.store(true, Ordering::Relaxed);
        self.newest.store(newest, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_count_until_the_client_says_it_loses_snapshots_then_only_acknowledgements() {
        let delivery = Delivery::default();
        assert_eq!(delivery.tick(), 0, "nothing yet: in full");
        delivery.written(3);
        delivery.acknowledged(2);
        assert_eq!(delivery.tick(), 3, "written counts before its acknowledgement");
        delivery.lost(2);
        assert_eq!(delivery.tick(), 2, "back to what it decoded");
        delivery.written(5);
        assert_eq!(delivery.tick(), 2, "a write no longer counts");
        delivery.acknowledged(4);
        assert_eq!(delivery.tick(), 4);
    }
}
