//! Agones: telling the GameServer's SDK sidecar what the server does, so a Fleet can run,
//! scale and replace Easel nodes. `Lifecycle` decides (pure, always built, tested); `Agones`
//! (the `agones` feature, `--agones on`) makes the calls:
//! - Ready once the server's database answers (after the store opened and, in a cluster, the
//!   node joined);
//! - a health ping every `EVERY` while the rooms tick (or there are none): a server whose tick
//!   loop has stalled stops pinging and Agones replaces it;
//! - the `rooms` counter kept at the number of rooms open, for a FleetAutoscaler's Counter
//!   policy and allocation by counter; Allocated while the node holds a room, so a scale-down
//!   never takes a node with players, and Ready again once it holds none;
//! - Shutdown once a drain has ended.

use std::time::Duration;

/// How often the sidecar hears from the server (its health checks run every few seconds).
pub const EVERY: Duration = Duration::from_secs(2);
/// The Counter a Fleet declares for Easel's rooms.
pub const ROOMS_COUNTER: &str = "rooms";

/// A call to make to the SDK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Health,
    CountRooms(i64),
    Allocate,
    Ready,
}

/// What Agones has been told, and what the server did since.
#[derive(Debug, Default)]
pub struct Lifecycle {
    allocated: bool,
    counted: Option<i64>,
    ticks: u64,
}

impl Lifecycle {
    /// The calls due now that `rooms` are open and the rooms have ticked `ticks` times in all;
    /// while `draining`, the node stays as it is (it will shut down) and only says it lives.
    pub fn step(&mut self, rooms: usize, ticks: u64, draining: bool) -> Vec<Call> {
        let mut calls = Vec::new();
        let ticking = ticks > self.ticks;
        self.ticks = ticks;
        if rooms == 0 || ticking {
            calls.push(Call::Health);
        }
        let count = i64::try_from(rooms).unwrap_or(i64::MAX);
        if self.counted != Some(count) {
            self.counted = Some(count);
            calls.push(Call::CountRooms(count));
        }
        if draining {
            return calls;
        }
        if rooms > 0 && !self.allocated {
            self.allocated = true;
            calls.push(Call::Allocate);
        } else if rooms == 0 && self.allocated {
            self.allocated = false;
            calls.push(Call::Ready);
        }
        calls
    }
}

#[cfg(feature = "agones")]
pub use sdk::{Agones, AgonesError};

#[cfg(feature = "agones")]
mod sdk {
    use std::sync::Arc;

    use super::{Call, EVERY, Lifecycle, ROOMS_COUNTER};
    use crate::metrics::Metrics;
    use crate::room::Rooms;

    /// Why Agones could not be told something.
    #[derive(Debug, thiserror::Error)]
    pub enum AgonesError {
        #[error("Agones SDK: {0}")]
        Sdk(#[from] agones::errors::Error),
        #[error("the GameServer has no address and port yet")]
        NoAddress,
    }

    /// The connection to the GameServer's SDK sidecar.
    #[derive(Clone)]
    pub struct Agones {
        sdk: agones::Sdk,
    }

    impl Agones {
        /// Connects to the sidecar, waiting up to 30 s for it.
        pub async fn connect(sidecar: crate::config::AgonesSidecar) -> Result<Self, AgonesError> {
            Ok(Self { sdk: agones::Sdk::new(sidecar.port, None).await? })
        }

        /// `http://ADDRESS:PORT` of the GameServer: how players reach this node.
        pub async fn public_url(&mut self) -> Result<String, AgonesError> {
            let (address, port) = self.address().await?;
            Ok(format!("http://{address}:{port}"))
        }

        /// The GameServer's first port (with `portPolicy: Passthrough`, the one to listen on).
        pub async fn assigned_port(&mut self) -> Result<u16, AgonesError> {
            let server = self.sdk.get_gameserver().await?;
            let port = server.status.and_then(|status| status.ports.first().map(|port| port.port));
            port.and_then(|port| u16::try_from(port).ok()).ok_or(AgonesError::NoAddress)
        }

        async fn address(&mut self) -> Result<(String, i32), AgonesError> {
            let server = self.sdk.get_gameserver().await?;
            let status = server.status.ok_or(AgonesError::NoAddress)?;
            let port = status.ports.first().map(|port| port.port).ok_or(AgonesError::NoAddress)?;
            if status.address.is_empty() {
                return Err(AgonesError::NoAddress);
            }
            Ok((status.address, port))
        }

        pub async fn ready(&mut self) -> Result<(), AgonesError> {
            Ok(self.sdk.ready().await?)
        }

        pub async fn shutdown(&mut self) -> Result<(), AgonesError> {
            Ok(self.sdk.shutdown().await?)
        }

        /// Tells the sidecar what the rooms do, every `EVERY`, until the task is dropped.
        pub async fn follow(mut self, rooms: Arc<Rooms>, metrics: Arc<Metrics>) {
            let health = self.sdk.health_check();
            let mut beta = self.sdk.beta().clone();
            let mut lifecycle = Lifecycle::default();
            let mut every = tokio::time::interval(EVERY);
            loop {
                every.tick().await;
                for call in lifecycle.step(rooms.room_count(), metrics.ticks.value(), rooms.is_draining()) {
                    let result = match call {
                        Call::Health => health.send(()).await.map_err(|_| "the health stream ended".to_owned()),
                        Call::CountRooms(count) => {
                            beta.set_counter_count(ROOMS_COUNTER, count).await.map_err(|e| e.to_string())
                        }
                        Call::Allocate => self.sdk.allocate().await.map_err(|e| e.to_string()),
                        Call::Ready => self.sdk.ready().await.map_err(|e| e.to_string()),
                    };
                    if let Err(e) = result {
                        tracing::warn!(?call, "Agones: {e}");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_node_is_ready_and_healthy_with_no_rooms_counted() {
        let mut lifecycle = Lifecycle::default();
        assert_eq!(lifecycle.step(0, 0, false), vec![Call::Health, Call::CountRooms(0)]);
        assert_eq!(lifecycle.step(0, 0, false), vec![Call::Health], "nothing ticks, nothing has to");
    }

    #[test]
    fn a_node_with_rooms_is_allocated_while_it_holds_them_and_ready_again_after() {
        let mut lifecycle = Lifecycle::default();
        lifecycle.step(0, 0, false);
        assert_eq!(lifecycle.step(2, 60, false), vec![Call::Health, Call::CountRooms(2), Call::Allocate]);
        assert_eq!(lifecycle.step(3, 120, false), vec![Call::Health, Call::CountRooms(3)]);
        assert_eq!(lifecycle.step(0, 150, false), vec![Call::Health, Call::CountRooms(0), Call::Ready]);
    }

    #[test]
    fn rooms_that_stop_ticking_stop_the_health_pings() {
        let mut lifecycle = Lifecycle::default();
        lifecycle.step(1, 30, false);
        assert_eq!(lifecycle.step(1, 30, false), Vec::<Call>::new(), "a stalled tick loop is not healthy");
        assert_eq!(lifecycle.step(1, 31, false), vec![Call::Health]);
    }

    #[test]
    fn a_draining_node_keeps_its_state_and_only_says_it_lives() {
        let mut lifecycle = Lifecycle::default();
        lifecycle.step(1, 30, false);
        assert_eq!(lifecycle.step(0, 60, true), vec![Call::Health, Call::CountRooms(0)], "not Ready: it is leaving");
    }
}
