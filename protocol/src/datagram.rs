//! Framing of WebTransport datagrams, which carry what may be lost (snapshots and the
//! input-timing report from the server; inputs and acknowledgements from the client). A
//! message that fits goes whole; a larger one (a full snapshot, or a crowded room's delta) is
//! split into numbered parts, and is delivered only if every part arrives: a lost part loses the
//! message, as a lost datagram would, and never holds up the messages after it.
//!
//! A datagram is `kind: u8` then either the message (`WHOLE`) or `group: u16 big-endian,
//! index: u8, count: u8, part` (`PART`). Sans-IO.

const WHOLE: u8 = 0;
const PART: u8 = 1;
/// Bytes a part's header adds.
const PART_HEADER: usize = 5;
/// Groups being put together at once: later ones push the oldest out (a part of it was lost,
/// or comes so late that its message is stale).
const GROUPS_KEPT: usize = 4;

/// Why a datagram is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    #[error("an empty datagram")]
    Empty,
    #[error("a datagram of unknown kind {0}")]
    UnknownKind(u8),
    #[error("a part with a broken header")]
    BadPart,
    #[error("a message of {len} bytes, over the {limit}-byte limit")]
    TooLarge { len: usize, limit: usize },
    #[error("a message in parts where only whole ones are expected")]
    NotWhole,
}

/// The message a datagram carries whole: what a server expects of its clients, whose messages
/// on datagrams (inputs, acknowledgements) are small.
pub fn whole(datagram: &[u8]) -> Result<&[u8], DatagramError> {
    match datagram.split_first() {
        Some((&WHOLE, message)) => Ok(message),
        Some((&PART, _)) => Err(DatagramError::NotWhole),
        Some((&kind, _)) => Err(DatagramError::UnknownKind(kind)),
        None => Err(DatagramError::Empty),
    }
}

/// The datagrams carrying `message`, each at most `max_size` bytes: one when it fits, else up to
/// 255 parts of group `group`; `None` when even 255 parts cannot carry it.
pub fn datagrams(message: &[u8], max_size: usize, group: u16) -> Option<Vec<Vec<u8>>> {
    // The kind byte and the message.
    if message.len() < max_size {
        let mut whole = Vec::with_capacity(1 + message.len());
        whole.push(WHOLE);
        whole.extend_from_slice(message);
        return Some(vec![whole]);
    }
    let part_size = max_size.checked_sub(PART_HEADER).filter(|size| *size > 0)?;
    let count = u8::try_from(message.len().div_ceil(part_size)).ok()?;
    let parts = message
        .chunks(part_size)
        .enumerate()
        .map(|(index, part)| {
            let mut datagram = Vec::with_capacity(PART_HEADER + part.len());
            datagram.push(PART);
            datagram.extend_from_slice(&group.to_be_bytes());
            datagram.push(index as u8);
            datagram.push(count);
            datagram.extend_from_slice(part);
            datagram
        })
        .collect();
    Some(parts)
}

/// Puts messages back together from datagrams, refusing any over `limit`.
#[derive(Debug)]
pub struct Reassembler {
    limit: usize,
    groups: Vec<Group>,
}

#[derive(Debug)]
struct Group {
    id: u16,
    parts: Vec<Option<Vec<u8>>>,
    size: usize,
}

impl Reassembler {
    pub fn new(limit: usize) -> Self {
        Self { limit, groups: Vec::new() }
    }

    /// The message `datagram` completes, if any.
    pub fn push(&mut self, datagram: &[u8]) -> Result<Option<Vec<u8>>, DatagramError> {
        let (&kind, rest) = datagram.split_first().ok_or(DatagramError::Empty)?;
        match kind {
            WHOLE if rest.len() > self.limit => Err(DatagramError::TooLarge { len: rest.len(), limit: self.limit }),
            WHOLE => Ok(Some(rest.to_vec())),
            PART => self.part(rest),
            other => Err(DatagramError::UnknownKind(other)),
        }
    }

    fn part(&mut self, rest: &[u8]) -> Result<Option<Vec<u8>>, DatagramError> {
        let [g0, g1, index, count, part @ ..] = rest else { return Err(DatagramError::BadPart) };
        let (id, index, count) = (u16::from_be_bytes([*g0, *g1]), usize::from(*index), usize::from(*count));
        if count < 2 || index >= count {
            return Err(DatagramError::BadPart);
        }
        let at = match self.groups.iter().position(|g| g.id == id) {
            Some(at) => at,
            None => {
                if self.groups.len() == GROUPS_KEPT {
                    self.groups.remove(0);
                }
                self.groups.push(Group { id, parts: vec![None; count], size: 0 });
                self.groups.len() - 1
            }
        };
        let group = &mut self.groups[at];
        if group.parts.len() != count {
            return Err(DatagramError::BadPart);
        }
        if group.parts[index].is_none() {
            group.size += part.len();
            if group.size > self.limit {
                let len = group.size;
                self.groups.remove(at);
                return Err(DatagramError::TooLarge { len, limit: self.limit });
            }
            group.parts[index] = Some(part.to_vec());
        }
        if group.parts.iter().any(Option::is_none) {
            return Ok(None);
        }
        let group = self.groups.remove(at);
        Ok(Some(group.parts.into_iter().flatten().flatten().collect()))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_message_that_fits_goes_whole_and_a_larger_one_in_parts() {
        assert_eq!(datagrams(&[7; 99], 100, 1).unwrap().len(), 1);
        let parts = datagrams(&[7; 1000], 100, 1).unwrap();
        assert_eq!(parts.len(), 11, "95 bytes a part");
        assert!(parts.iter().all(|p| p.len() <= 100));
        assert_eq!(datagrams(&[7; 100_000], 100, 1), None, "over 255 parts");
    }

    #[test]
    fn a_message_missing_a_part_is_never_delivered_and_does_not_hold_up_later_ones() {
        let mut reassembler = Reassembler::new(10_000);
        let first = datagrams(&[1; 500], 100, 1).unwrap();
        let second = datagrams(&[2; 500], 100, 2).unwrap();
        for part in &first[1..] {
            assert_eq!(reassembler.push(part), Ok(None));
        }
        let mut delivered = None;
        for part in &second {
            delivered = reassembler.push(part).unwrap().or(delivered);
        }
        assert_eq!(delivered, Some(vec![2; 500]));
        for group in 3..10 {
            reassembler.push(&datagrams(&[3; 500], 100, group).unwrap()[0]).unwrap();
        }
        assert_eq!(reassembler.push(&first[0]), Ok(None), "the first group was pushed out long ago");
    }

    proptest! {
        #[test]
        fn parts_in_any_order_make_the_message(
            message in proptest::collection::vec(any::<u8>(), 0..3000),
            max in 8usize..1300,
            seed in any::<u64>(),
        ) {
            let Some(mut parts) = datagrams(&message, max, 9) else { return Ok(()) };
            // A deterministic shuffle.
            let mut state = seed | 1;
            for i in (1..parts.len()).rev() {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                parts.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let mut reassembler = Reassembler::new(4096);
            let mut out = None;
            for part in &parts {
                if let Some(message) = reassembler.push(part).unwrap() {
                    out = Some(message);
                }
            }
            prop_assert_eq!(out, Some(message));
        }

        #[test]
        fn no_datagram_makes_the_reassembler_panic(
            datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..60),
        ) {
            let mut reassembler = Reassembler::new(256);
            for datagram in &datagrams {
                let _ = reassembler.push(datagram);
            }
        }
    }
}
