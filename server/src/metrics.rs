//! Process-wide counters and gauges, rendered in the Prometheus text format at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn value(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn value(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (µs) of the tick-duration buckets: ×1.5 steps from 10 µs to ~1.3 s, fine enough
/// to tell a 1 ms tick from a 1.5 ms one, and cheap (one atomic add per tick).
pub const TICK_BUCKETS_MICROS: [u64; 30] = [
    10, 15, 23, 34, 51, 76, 114, 171, 256, 384, 577, 865, 1_297, 1_946, 2_919, 4_379, 6_568, 9_853, 14_779, 22_168,
    33_253, 49_879, 74_818, 112_227, 168_341, 252_512, 378_768, 568_151, 852_227, 1_278_340,
];

/// A fixed-bucket histogram (cumulative on render, as Prometheus expects).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Counts per bucket of `TICK_BUCKETS_MICROS`, plus one for everything above.
    buckets: [AtomicU64; TICK_BUCKETS_MICROS.len() + 1],
    sum: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, micros: u64) {
        let bucket = TICK_BUCKETS_MICROS.iter().position(|&bound| micros <= bound).unwrap_or(TICK_BUCKETS_MICROS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let bound = TICK_BUCKETS_MICROS.get(i).map_or("+Inf".to_owned(), |b| (*b as f64 / 1e6).to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum {}", self.sum.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub connections_total: Counter,
    /// WebSockets moved to their room's shard before their first frame (`shards`).
    pub connections_moved_to_room: Counter,
    pub rooms: Gauge,
    /// Rooms that stopped ticking because nothing in them moves (`room::task::Beat`).
    pub rooms_at_rest: Gauge,
    pub players: Gauge,
    pub ticks: Counter,
    /// Ticks skipped because a room fell more than one period behind.
    pub ticks_missed: Counter,
    /// Time spent inside each room tick.
    pub tick_seconds: Histogram,
    /// From a tick's start until its last snapshot was written to a socket, counting writes within
    /// eight ticks (`room::fanout`).
    pub snapshot_fanout_seconds: Histogram,
    /// Open connections by transport.
    pub websocket_connections: Gauge,
    pub webtransport_connections: Gauge,
    pub messages_in: Counter,
    pub bytes_in: Counter,
    pub messages_out: Counter,
    pub bytes_out: Counter,
    /// Connections the server closed for breaking a rule (bad frames, floods, slow reads).
    pub closed_for_cause: Counter,
    /// Whiteboard ops stored and acknowledged.
    pub board_ops: Counter,
    /// Snapshot encodings made (one per distinct baseline per tick, shared by its members).
    pub snapshot_encodings: Counter,
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauges = [
            (
                "easel_connections",
                "Open connections, both transports",
                self.websocket_connections.value() + self.webtransport_connections.value(),
            ),
            ("easel_rooms", "Open rooms", self.rooms.value()),
            ("easel_rooms_at_rest", "Open rooms not ticking because nothing in them moves", self.rooms_at_rest.value()),
            ("easel_players", "Players in rooms", self.players.value()),
            ("easel_websocket_connections", "Open WebSocket connections", self.websocket_connections.value()),
            ("easel_webtransport_connections", "Open WebTransport sessions", self.webtransport_connections.value()),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        let counters = [
            ("easel_connections_total", "Connections accepted, both transports", &self.connections_total),
            (
                "easel_connections_moved_to_room_total",
                "WebSockets moved to the thread of the room they named before their first frame",
                &self.connections_moved_to_room,
            ),
            ("easel_ticks_total", "Room ticks run", &self.ticks),
            ("easel_ticks_missed_total", "Room ticks skipped because a room fell behind", &self.ticks_missed),
            ("easel_messages_in_total", "Client messages received", &self.messages_in),
            ("easel_messages_out_total", "Messages sent to clients", &self.messages_out),
            ("easel_bytes_out_total", "Payload bytes sent to clients", &self.bytes_out),
            ("easel_bytes_in_total", "Payload bytes received from clients", &self.bytes_in),
            ("easel_closed_for_cause_total", "Connections closed for breaking a rule", &self.closed_for_cause),
            ("easel_board_ops_total", "Whiteboard ops stored and acknowledged", &self.board_ops),
            (
                "easel_snapshot_encodings_total",
                "Snapshot encodings, each shared by every member on its baseline",
                &self.snapshot_encodings,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", counter.value());
        }
        self.tick_seconds.render(&mut out, "easel_tick_seconds", "Duration of one room tick");
        self.snapshot_fanout_seconds.render(
            &mut out,
            "easel_snapshot_fanout_seconds",
            "From a room tick's start until its last snapshot was written to a socket",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_renders_cumulative_buckets() {
        let metrics = Metrics::default();
        for micros in [5, 12, 12, 2_000_000] {
            metrics.tick_seconds.observe(micros);
        }
        let text = metrics.render();
        assert!(text.contains("easel_tick_seconds_bucket{le=\"0.00001\"} 1\n"), "{text}");
        assert!(text.contains("easel_tick_seconds_bucket{le=\"0.000015\"} 3\n"), "{text}");
        assert!(text.contains("easel_tick_seconds_bucket{le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("easel_tick_seconds_count 4\n"), "{text}");
    }
}
