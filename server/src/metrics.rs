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

#[derive(Debug, Default)]
pub struct Metrics {
    pub connections: Gauge,
    pub connections_total: Counter,
    pub rooms: Gauge,
    pub players: Gauge,
    pub ticks: Counter,
    /// Ticks skipped because a room fell more than one period behind.
    pub ticks_missed: Counter,
    /// Time spent inside room ticks, summed.
    pub tick_micros: Counter,
    pub messages_in: Counter,
    pub messages_out: Counter,
    pub bytes_out: Counter,
    /// Connections the server closed for breaking a rule (bad frames, floods, slow reads).
    pub closed_for_cause: Counter,
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauges = [
            ("easel_connections", "Open WebSocket connections", self.connections.value()),
            ("easel_rooms", "Open rooms", self.rooms.value()),
            ("easel_players", "Players in rooms", self.players.value()),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        let counters = [
            ("easel_connections_total", "WebSocket connections accepted", &self.connections_total),
            ("easel_ticks_total", "Room ticks run", &self.ticks),
            ("easel_ticks_missed_total", "Room ticks skipped because a room fell behind", &self.ticks_missed),
            ("easel_tick_micros_total", "Microseconds spent in room ticks", &self.tick_micros),
            ("easel_messages_in_total", "Client messages received", &self.messages_in),
            ("easel_messages_out_total", "Messages sent to clients", &self.messages_out),
            ("easel_bytes_out_total", "Payload bytes sent to clients", &self.bytes_out),
            ("easel_closed_for_cause_total", "Connections closed for breaking a rule", &self.closed_for_cause),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", counter.value());
        }
        out
    }
}
