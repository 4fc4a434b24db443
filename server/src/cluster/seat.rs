//! Seats: a node's signed word that a room is placed on another node, handed to a player with
//! a redirect. The owner opens the room at the seat's epoch without asking the database again;
//! a seat that is forged, expired, for another room or node, or used twice is not trusted (the
//! owner then asks the database, as for a player with no seat).
//!
//! Layout: node (8) | epoch (8) | expires, Unix ms (8) | nonce (16) | room (UTF-8) | HMAC-SHA256
//! of everything before it (32), all integers big-endian.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

const FIXED: usize = 8 + 8 + 8 + 16;
const TAG: usize = 32;

/// How long a seat is good for: a redirect is followed in milliseconds; this leaves room for a
/// slow network and for the nodes' clocks to differ by a few seconds.
pub const SEAT_LIFETIME: Duration = Duration::from_secs(10);

/// What a seat says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seat {
    pub room: String,
    pub node: i64,
    pub epoch: i64,
    /// Unix milliseconds.
    pub expires_ms: u64,
    pub nonce: [u8; 16],
}

/// Why a seat is not trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SeatError {
    #[error("not a seat")]
    Malformed,
    #[error("the seat's signature is wrong")]
    Forged,
    #[error("the seat has expired")]
    Expired,
    #[error("the seat is for another room")]
    OtherRoom,
    #[error("the seat is for another node")]
    OtherNode,
    #[error("the seat was used before")]
    Replayed,
}

/// Signs and checks seats with the cluster's secret, and remembers the seats used until they
/// expire.
pub struct Seats {
    key: Vec<u8>,
    /// Nonces of seats taken, with their expiry (Unix ms).
    used: std::sync::Mutex<HashMap<[u8; 16], u64>>,
}

impl Seats {
    pub fn new(secret: &str) -> Self {
        Self { key: secret.as_bytes().to_vec(), used: std::sync::Mutex::new(HashMap::new()) }
    }

    /// A seat for `room` on `node` at `epoch`, good for `SEAT_LIFETIME` from `now_ms`.
    pub fn issue(&self, room: &str, node: i64, epoch: i64, now_ms: u64, nonce: [u8; 16]) -> Vec<u8> {
        let expires_ms = now_ms + SEAT_LIFETIME.as_millis() as u64;
        let mut bytes = Vec::with_capacity(FIXED + room.len() + TAG);
        bytes.extend(node.to_be_bytes());
        bytes.extend(epoch.to_be_bytes());
        bytes.extend(expires_ms.to_be_bytes());
        bytes.extend(nonce);
        bytes.extend(room.as_bytes());
        let tag = self.mac(&bytes).finalize().into_bytes();
        bytes.extend(tag);
        bytes
    }

    /// The seat in `bytes` when it is genuine, unexpired at `now_ms`, for `room` on `node`, and
    /// not used before (it is used up by this call).
    pub fn take(&self, bytes: &[u8], room: &str, node: i64, now_ms: u64) -> Result<Seat, SeatError> {
        let seat = self.verify(bytes)?;
        if seat.expires_ms <= now_ms {
            return Err(SeatError::Expired);
        }
        if seat.room != room {
            return Err(SeatError::OtherRoom);
        }
        if seat.node != node {
            return Err(SeatError::OtherNode);
        }
        let mut used = self.used.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        used.retain(|_, expires| *expires > now_ms);
        if used.insert(seat.nonce, seat.expires_ms).is_some() {
            return Err(SeatError::Replayed);
        }
        Ok(seat)
    }

    /// The seat in `bytes` if its signature is right.
    fn verify(&self, bytes: &[u8]) -> Result<Seat, SeatError> {
        if bytes.len() < FIXED + TAG {
            return Err(SeatError::Malformed);
        }
        let (signed, tag) = bytes.split_at(bytes.len() - TAG);
        self.mac(signed).verify_slice(tag).map_err(|_| SeatError::Forged)?;
        let word = |at: usize| {
            let mut word = [0; 8];
            word.copy_from_slice(&signed[at..at + 8]);
            word
        };
        let mut nonce = [0; 16];
        nonce.copy_from_slice(&signed[24..FIXED]);
        let room = std::str::from_utf8(&signed[FIXED..]).map_err(|_| SeatError::Malformed)?.to_owned();
        Ok(Seat {
            room,
            node: i64::from_be_bytes(word(0)),
            epoch: i64::from_be_bytes(word(8)),
            expires_ms: u64::from_be_bytes(word(16)),
            nonce,
        })
    }

    fn mac(&self, bytes: &[u8]) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(bytes);
        mac
    }
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_800_000_000_000;

    fn seats() -> Seats {
        Seats::new("a secret of the whole cluster")
    }

    #[test]
    fn a_seat_is_taken_once_by_its_node_for_its_room() {
        let seats = seats();
        let seat = seats.issue("lobby", 3, 7, NOW, [1; 16]);
        let taken = seats.take(&seat, "lobby", 3, NOW + 1).unwrap();
        assert_eq!((taken.room.as_str(), taken.node, taken.epoch), ("lobby", 3, 7));
        assert_eq!(seats.take(&seat, "lobby", 3, NOW + 2), Err(SeatError::Replayed));
    }

    #[test]
    fn expired_foreign_and_misdirected_seats_are_refused() {
        let seats = seats();
        let seat = seats.issue("lobby", 3, 7, NOW, [2; 16]);
        let expiry = NOW + SEAT_LIFETIME.as_millis() as u64;
        assert_eq!(seats.take(&seat, "lobby", 3, expiry), Err(SeatError::Expired));
        assert_eq!(seats.take(&seat, "other", 3, NOW), Err(SeatError::OtherRoom));
        assert_eq!(seats.take(&seat, "lobby", 4, NOW), Err(SeatError::OtherNode));
        let stranger = Seats::new("another cluster's secret!");
        assert_eq!(stranger.take(&seat, "lobby", 3, NOW), Err(SeatError::Forged));
        assert_eq!(seats.take(&seat[..20], "lobby", 3, NOW), Err(SeatError::Malformed));
        // Refused seats were not used up.
        assert!(seats.take(&seat, "lobby", 3, NOW).is_ok());
    }

    #[test]
    fn replays_are_remembered_only_until_the_seat_expires() {
        let seats = seats();
        for i in 0..100_u8 {
            let seat = seats.issue("r", 1, 1, NOW + u64::from(i) * 1000, [i; 16]);
            seats.take(&seat, "r", 1, NOW + u64::from(i) * 1000).unwrap();
        }
        let kept = seats.used.lock().unwrap().len();
        assert!(kept <= 11, "only unexpired nonces are kept, {kept} are");
    }

    proptest! {
        #[test]
        fn any_change_to_a_seat_is_caught(flip in 0usize..200, bit in 0u8..8, room in "[a-z]{1,20}") {
            let seats = seats();
            let mut seat = seats.issue(&room, 5, 9, NOW, [3; 16]);
            let at = flip % seat.len();
            seat[at] ^= 1 << bit;
            prop_assert!(seats.take(&seat, &room, 5, NOW).is_err());
        }

        #[test]
        fn arbitrary_bytes_are_never_a_seat(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            prop_assert!(seats().take(&bytes, "r", 1, NOW).is_err());
        }
    }
}
