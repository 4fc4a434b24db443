//! Agones: telling the GameServer's SDK sidecar what the server does, so a Fleet can run,
//! scale and replace Easel nodes. `Lifecycle` decides (pure, always built, tested); `Agones`
//! (the `agones` feature, `--agones on`) makes the calls:
//! - Ready once the server's database answers (after the store opened and, in a cluster, the
//!   node joined);
//! - a health ping every `EVERY` while the rooms tick (or there are none, or all rest because
//!   nothing in them moves): a server whose tick loop has stalled stops pinging and Agones
//!   replaces it;
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

/// What the node's rooms are doing, looked at every `EVERY`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Activity {
    /// Rooms open.
    pub rooms: usize,
    /// Of those, the rooms at rest: not ticking because nothing in them moves.
    pub resting: usize,
    /// Ticks run by all rooms so far.
    pub ticks: u64,
    /// Whether the node is draining.
    pub draining: bool,
}

/// What Agones has been told, and what the server did since.
#[derive(Debug, Default)]
pub struct Lifecycle {
    allocated: bool,
    counted: Option<i64>,
    ticks: u64,
}

impl Lifecycle {
    /// The calls due now that the rooms do what `now` says; while draining, the node stays as
    /// it is (it will shut down) and only says it lives.
    pub fn step(&mut self, now: Activity) -> Vec<Call> {
        let Activity { rooms, resting, ticks, draining } = now;
        let mut calls = Vec::new();
        let ticking = ticks > self.ticks;
        self.ticks = ticks;
        if ticking || resting >= rooms {
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

    use super::{Activity, Call, EVERY, Lifecycle, ROOMS_COUNTER};
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
                let now = Activity {
                    rooms: rooms.room_count(),
                    resting: usize::try_from(metrics.rooms_at_rest.value()).unwrap_or(0),
                    ticks: metrics.ticks.value(),
                    draining: rooms.is_draining(),
                };
                for call in lifecycle.step(now) {
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

    fn activity(rooms: usize, resting: usize, ticks: u64, draining: bool) -> Activity {
        Activity { rooms, resting, ticks, draining }
    }

    #[test]
    fn an_idle_node_is_ready_and_healthy_with_no_rooms_counted() {
        let mut lifecycle = Lifecycle::default();
        assert_eq!(lifecycle.step(activity(0, 0, 0, false)), vec![Call::Health, Call::CountRooms(0)]);
        assert_eq!(lifecycle.step(activity(0, 0, 0, false)), vec![Call::Health], "nothing ticks, nothing has to");
    }

    #[test]
    fn a_node_with_rooms_is_allocated_while_it_holds_them_and_ready_again_after() {
        let mut lifecycle = Lifecycle::default();
        lifecycle.step(activity(0, 0, 0, false));
        assert_eq!(lifecycle.step(activity(2, 0, 60, false)), vec![Call::Health, Call::CountRooms(2), Call::Allocate]);
        assert_eq!(lifecycle.step(activity(3, 0, 120, false)), vec![Call::Health, Call::CountRooms(3)]);
        assert_eq!(lifecycle.step(activity(0, 0, 150, false)), vec![Call::Health, Call::CountRooms(0), Call::Ready]);
    }

    #[test]
    fn rooms_that_stop_ticking_stop_the_health_pings() {
        let mut lifecycle = Lifecycle::default();
        lifecycle.step(activity(1, 0, 30, false));
        assert_eq!(lifecycle.step(activity(1, 0, 30, false)), Vec::<Call>::new(), "a stalled tick loop is not healthy");
        assert_eq!(lifecycle.step(activity(1, 0, 31, false)), vec![Call::Health]);
    }

    #[test]
    fn rooms_at_rest_keep_a_node_healthy_though_nothing_ticks() {
        let mut lifecycle = Lifecycle::default();
        lifecycle.step(activity(2, 0, 30, false));
        assert_eq!(lifecycle.step(activity(2, 2, 30, false)), vec![Call::Health], "both rooms rest");
        assert_eq!(lifecycle.step(activity(2, 1, 30, false)), Vec::<Call>::new(), "one should tick and did not");
    }

    #[test]
    fn a_draining_node_keeps_its_state_and_only_says_it_lives() {
        let mut lifecycle = Lifecycle::default();
        lifecycle.step(activity(1, 0, 30, false));
        assert_eq!(
            lifecycle.step(activity(0, 0, 60, true)),
            vec![Call::Health, Call::CountRooms(0)],
            "not Ready: it is leaving"
        );
    }
}
