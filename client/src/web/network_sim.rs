//! The bad network of `?lag=&loss=&jitter=`, simulated inside the page: what the page sends
//! waits in `up`, what the socket delivers waits in `down`, until their time comes. Snapshots,
//! inputs and acknowledgements may be lost or reordered; everything else is only delayed, as
//! over TCP.

use crate::core::link::{Conditions, LinkConditioner};
use crate::core::{Channel, Transmit};

pub(super) struct SimulatedNetwork {
    pub conditions: Conditions,
    up: LinkConditioner<Transmit>,
    down: LinkConditioner<Vec<u8>>,
}

impl SimulatedNetwork {
    pub fn new(conditions: Conditions) -> Self {
        let seed = (js_sys::Math::random() * f64::from(u32::MAX)) as u32;
        Self {
            conditions,
            up: LinkConditioner::new(conditions, seed),
            down: LinkConditioner::new(conditions, seed ^ 0x9E37_79B9),
        }
    }

    /// A new connection: what is still in flight belonged to the old one.
    pub fn restart(&mut self) {
        *self = Self::new(self.conditions);
    }

    /// A message from the server, delivered by `poll` when its time comes.
    pub fn deliver_later(&mut self, now: f64, bytes: Vec<u8>) {
        let droppable = easel_protocol::codec::is_snapshot(&bytes);
        self.down.send(now, bytes, droppable);
    }

    /// A message to the server, sent by `poll` when its time comes.
    pub fn send_later(&mut self, now: f64, bytes: &[u8], channel: Channel) {
        let droppable = channel == Channel::Unreliable;
        self.up.send(now, Transmit { bytes: bytes.to_vec(), channel }, droppable);
    }

    /// What arrives from the server now, and what leaves for it now.
    pub fn poll(&mut self, now: f64) -> (Vec<Vec<u8>>, Vec<Transmit>) {
        (self.down.poll(now), self.up.poll(now))
    }
}
