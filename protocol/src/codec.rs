//! The one place the wire codec (bincode 2, serde) is configured: every decode is size-limited and
//! returns an error rather than panicking, whatever bytes arrive.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use serde::Serialize;

use crate::msg::{ClientMsg, ServerMsg};

/// Largest message a client may send: a whiteboard stroke of the maximum 1,024 points takes
/// 2 to 10 KB; inputs, pings and chat far less. The WebSocket layer enforces the same cap on
/// frames so an oversize message is refused before it is buffered.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 16 * 1024;

/// Largest message the server sends: a full snapshot of a crowded room fits with room to spare
/// (10,000 players × 20 bytes = 200 KB); boards travel in `BoardChunk`s of `BOARD_CHUNK_BYTES`.
pub const MAX_SERVER_MESSAGE_BYTES: usize = 1024 * 1024;

/// Bytes of encoded board per `BoardChunk` message.
pub const BOARD_CHUNK_BYTES: usize = 512 * 1024;

/// Largest stored or transferred board: 50,000 strokes of ordinary size fit many times over;
/// the cap only keeps a corrupt or hostile length prefix from allocating without bound.
pub const MAX_BOARD_BYTES: usize = 256 * 1024 * 1024;

type Limited<const N: usize> = Configuration<LittleEndian, Varint, Limit<N>>;

fn client_config() -> Limited<MAX_CLIENT_MESSAGE_BYTES> {
    bincode::config::standard().with_limit::<MAX_CLIENT_MESSAGE_BYTES>()
}

fn server_config() -> Limited<MAX_SERVER_MESSAGE_BYTES> {
    bincode::config::standard().with_limit::<MAX_SERVER_MESSAGE_BYTES>()
}

/// Why a byte string is not a valid message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("message is {len} bytes, over the {limit}-byte limit")]
    TooLarge { len: usize, limit: usize },
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("{0} unexpected bytes after the message")]
    TrailingBytes(usize),
}

/// Encodes any wire message. Encoding our own types cannot fail (no maps with non-string keys,
/// no unsized sequences); a failure would be a programming error, so it is reported as a panic
/// with the type named rather than as a network error.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(msg, bincode::config::standard())
        .unwrap_or_else(|e| panic!("encoding {} failed: {e}", std::any::type_name::<T>()))
}

/// Decodes a message from a client (untrusted bytes).
pub fn decode_client(bytes: &[u8]) -> Result<ClientMsg, DecodeError> {
    decode_limited(bytes, client_config(), MAX_CLIENT_MESSAGE_BYTES)
}

/// Decodes a message from the server.
pub fn decode_server(bytes: &[u8]) -> Result<ServerMsg, DecodeError> {
    decode_limited(bytes, server_config(), MAX_SERVER_MESSAGE_BYTES)
}

/// Decodes a board snapshot or a client's saved state (board-sized, untrusted bytes).
pub fn decode_board<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    decode_limited(bytes, bincode::config::standard().with_limit::<MAX_BOARD_BYTES>(), MAX_BOARD_BYTES)
}

/// Whether an encoded server message is a `Snapshot`, read from its first byte without decoding:
/// load generators count snapshots of every connection this way and decode only a sample.
pub fn is_snapshot(bytes: &[u8]) -> bool {
    // bincode writes the enum variant index first, as a varint; `Snapshot` is variant 1.
    bytes.first() == Some(&1)
}

/// bincode's variant indices of `ServerMsg::BoardOp` and `ServerMsg::BoardOps` (one byte each,
/// being under 251), checked by the tests against `encode`.
const BOARD_OP_VARIANT: u8 = 9;
const BOARD_OPS_VARIANT: u8 = 16;

/// Whether an encoded server message is a `BoardOp` relay, read from its first byte.
pub fn is_board_op(bytes: &[u8]) -> bool {
    bytes.first() == Some(&BOARD_OP_VARIANT)
}

/// One `ServerMsg::BoardOps` of the ops of `relays`, each an encoded `ServerMsg::BoardOp`
/// (others are skipped), made without decoding them: byte for byte what `encode` gives for
/// `ServerMsg::BoardOps` of their ops. A relay is encoded once for every member; this splices
/// its bytes after the variant index into the member's merged message.
pub fn board_ops<T: AsRef<[u8]>>(relays: &[T]) -> Vec<u8> {
    let bodies = || relays.iter().map(AsRef::as_ref).filter(|relay| is_board_op(relay)).map(|relay| &relay[1..]);
    let count = bodies().count() as u64;
    let mut message = Vec::with_capacity(10 + bodies().map(<[u8]>::len).sum::<usize>());
    message.push(BOARD_OPS_VARIANT);
    // A sequence's length, as serde writes it for a `Vec`: a u64 varint.
    message.extend(encode(&count));
    for body in bodies() {
        message.extend_from_slice(body);
    }
    message
}

/// The tick of an encoded `Snapshot`, read from its header without decoding the rest: load
/// generators acknowledge every snapshot this way.
pub fn snapshot_tick(bytes: &[u8]) -> Option<u32> {
    if !is_snapshot(bytes) {
        return None;
    }
    // bincode's varint: one byte below 251, else a marker and 2 or 4 little-endian bytes.
    match *bytes.get(1)? {
        small @ 0..=250 => Some(u32::from(small)),
        251 => Some(u32::from(u16::from_le_bytes(bytes.get(2..4)?.try_into().ok()?))),
        252 => Some(u32::from_le_bytes(bytes.get(2..6)?.try_into().ok()?)),
        _ => None,
    }
}

/// For a `Vec<u8>` field of a message (`#[serde(with = "crate::codec::byte_string")]`): on the
/// wire exactly what a plain `Vec<u8>` is (its length, then the bytes), but written and read as
/// one slice, where serde would otherwise make one call per byte (a snapshot is kilobytes, a
/// board chunk half a megabyte).
pub(crate) mod byte_string {
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(ByteString)
    }

    struct ByteString;

    impl<'de> Visitor<'de> for ByteString {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }
    }
}

fn decode_limited<T: serde::de::DeserializeOwned, const N: usize>(
    bytes: &[u8],
    config: Limited<N>,
    limit: usize,
) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge { len: bytes.len(), limit });
    }
    let (msg, used) =
        bincode::serde::decode_from_slice(bytes, config).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes(bytes.len() - used));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::{BoardOp, Point, Stroke, StrokeId};
    use crate::msg::*;
    use proptest::prelude::*;

    fn any_text() -> impl Strategy<Value = String> {
        proptest::string::string_regex(".{0,40}").unwrap()
    }

    fn any_client_msg() -> impl Strategy<Value = ClientMsg> {
        prop_oneof![
            (any::<u16>(), any_text(), any_text(), any::<Option<(u32, [u8; 16])>>()).prop_map(
                |(version, name, room, id)| ClientMsg::Hello {
                    version,
                    name,
                    room,
                    identity: id.map(|(author, token)| Identity { author, token }),
                    resume: id.map(|(_, token)| token),
                    seat: id.map(|(_, token)| token.to_vec()),
                }
            ),
            (any::<u64>(), any::<u32>(), any::<u32>(), proptest::collection::vec(any::<(i16, i16)>(), 1..40)).prop_map(
                |(client_seq, author, counter, points)| ClientMsg::Board {
                    client_seq,
                    op: BoardOp::Add {
                        dot: crdts::Dot::new(author, u64::from(counter)),
                        stroke: Stroke {
                            id: StrokeId { author, seq: counter },
                            color: counter,
                            width: 3,
                            points: points.into_iter().map(|(x, y)| Point { x, y }).collect(),
                        },
                    },
                }
            ),
            (any::<Option<(i16, i16)>>(), proptest::collection::vec(any::<(i16, i16)>(), 0..20)).prop_map(
                |(cursor, points)| ClientMsg::Presence(Presence {
                    cursor: cursor.map(|(x, y)| Point { x, y }),
                    drawing: (!points.is_empty()).then(|| Preview {
                        color: 1,
                        width: 2,
                        points: points.into_iter().map(|(x, y)| Point { x, y }).collect(),
                    }),
                })
            ),
            Just(ClientMsg::BoardSync),
            (any::<u32>(), any::<u32>(), proptest::collection::vec(any::<(i8, i8)>(), 1..=4))
                .prop_map(|(seq, ack, dirs)| ClientMsg::Input { seq, ack, dirs }),
            any::<u32>().prop_map(|tick| ClientMsg::Ack { tick }),
            any::<u32>().prop_map(|newest| ClientMsg::SnapshotLost { newest }),
            any_text().prop_map(|text| ClientMsg::Chat { text }),
            any::<u32>().prop_map(|nonce| ClientMsg::Ping { nonce }),
        ]
    }

    fn any_server_msg() -> impl Strategy<Value = ServerMsg> {
        prop_oneof![
            (any::<u32>(), any::<u32>(), proptest::collection::vec(any::<u8>(), 0..200))
                .prop_map(|(tick, baseline, entities)| ServerMsg::Snapshot { tick, baseline, entities }),
            (any::<u32>(), any_text(), any::<u32>())
                .prop_map(|(id, name, color)| { ServerMsg::PlayerJoined(PlayerInfo { id, name, color }) }),
            any::<u32>().prop_map(|id| ServerMsg::PlayerLeft { id }),
            (any::<u32>(), any_text(), any_text()).prop_map(|(from, name, text)| ServerMsg::Chat { from, name, text }),
            (any::<u32>(), any::<u32>(), -1e4f32..1e4, -1e4f32..1e4)
                .prop_map(|(by, id, x, y)| ServerMsg::OrbCollected { by, orb: OrbState { id, x, y } }),
            any_text().prop_map(|reason| ServerMsg::Rejected { reason }),
            (any::<u32>(), any::<u32>(), proptest::collection::vec(any::<u8>(), 0..64))
                .prop_map(|(index, total, bytes)| ServerMsg::BoardChunk { index, total, bytes }),
            any::<u64>().prop_map(|client_seq| ServerMsg::BoardAck { client_seq }),
            (any::<u32>(), any::<u32>()).prop_map(|(from_seq, wait_us)| ServerMsg::InputWait { from_seq, wait_us }),
            any_text().prop_map(|text| ServerMsg::Notice { text }),
            (any::<u32>(), proptest::collection::vec(any::<(i16, i16)>(), 1..8), 0usize..4).prop_map(
                |(author, points, count)| ServerMsg::BoardOps(
                    (0..count as u32)
                        .map(|seq| BoardOp::Add {
                            dot: crdts::Dot::new(author, u64::from(seq) + 1),
                            stroke: Stroke {
                                id: StrokeId { author, seq },
                                color: seq,
                                width: 1,
                                points: points.iter().map(|&(x, y)| Point { x, y }).collect(),
                            },
                        })
                        .collect()
                )
            ),
        ]
    }

    proptest! {
        #[test]
        fn client_messages_round_trip(msg in any_client_msg()) {
            prop_assert_eq!(decode_client(&encode(&msg)), Ok(msg));
        }

        #[test]
        fn server_messages_round_trip(msg in any_server_msg()) {
            prop_assert_eq!(decode_server(&encode(&msg)), Ok(msg));
        }

        #[test]
        fn no_byte_string_makes_the_decoders_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            // Either outcome is fine; reaching this line without a panic is the property.
            let _ = decode_client(&bytes);
            let _ = decode_server(&bytes);
        }

        #[test]
        fn truncated_messages_are_rejected(msg in any_client_msg(), cut in 1usize..8) {
            let bytes = encode(&msg);
            let keep = bytes.len().saturating_sub(cut);
            prop_assert!(decode_client(&bytes[..keep]).is_err(), "a cut-short message must not decode");
        }
    }

    #[test]
    fn a_huge_declared_length_is_refused_without_allocating_it() {
        // Variant 2 (Chat) followed by a varint length of u64::MAX: the limit must stop it.
        let bytes = [2u8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert!(matches!(decode_client(&bytes), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn byte_strings_are_on_the_wire_as_plain_byte_vectors_and_their_lengths_are_checked() {
        let entities: Vec<u8> = (0..=255).collect();
        let snapshot = ServerMsg::Snapshot { tick: 70_000, baseline: 69_999, entities: entities.clone() };
        // Variant index 1, then the fields, the bytes as serde writes any `Vec<u8>`.
        assert_eq!(encode(&snapshot), encode(&(1u32, 70_000u32, 69_999u32, entities)));
        // A snapshot of tick 5, baseline 0, declaring u64::MAX bytes of entities.
        let bytes = [1u8, 5, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert!(matches!(decode_server(&bytes), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn oversize_input_is_refused_before_decoding() {
        let bytes = vec![0u8; MAX_CLIENT_MESSAGE_BYTES + 1];
        assert_eq!(
            decode_client(&bytes),
            Err(DecodeError::TooLarge { len: MAX_CLIENT_MESSAGE_BYTES + 1, limit: MAX_CLIENT_MESSAGE_BYTES })
        );
    }

    #[test]
    fn snapshots_are_recognised_by_their_first_byte() {
        assert!(is_snapshot(&encode(&ServerMsg::Snapshot { tick: 9, baseline: 0, entities: vec![] })));
        assert!(!is_snapshot(&encode(&ServerMsg::Pong { nonce: 1 })));
        for tick in [0, 9, 250, 251, 65_535, 65_536, u32::MAX] {
            let bytes = encode(&ServerMsg::Snapshot { tick, baseline: 3, entities: vec![1, 2] });
            assert_eq!(snapshot_tick(&bytes), Some(tick));
        }
        assert!(!is_snapshot(&encode(&ServerMsg::PlayerLeft { id: 1 })));
        assert!(!is_snapshot(&[]));
    }

    #[test]
    fn relays_spliced_into_one_message_are_what_encoding_their_ops_gives() {
        let op = |seq: u32| BoardOp::Add {
            dot: crdts::Dot::new(7, u64::from(seq) + 1),
            stroke: Stroke {
                id: StrokeId { author: 7, seq },
                color: seq,
                width: 2,
                points: (0..(seq % 40) as i16 + 1).map(|i| Point { x: i * 3, y: -i }).collect(),
            },
        };
        let erase = BoardOp::Erase {
            clock: crdts::VClock::from(crdts::Dot::new(7, 3)),
            ids: vec![StrokeId { author: 7, seq: 1 }],
        };
        // Counts either side of 250, where the length's varint grows to three bytes.
        for count in [0, 1, 2, 250, 251, 300] {
            let ops: Vec<BoardOp> = (0..count).map(op).chain((count > 0).then(|| erase.clone())).collect();
            let relays: Vec<Vec<u8>> = ops.iter().map(|op| encode(&ServerMsg::BoardOp(op.clone()))).collect();
            assert!(relays.iter().all(|relay| is_board_op(relay)));
            let merged = board_ops(&relays);
            assert_eq!(merged, encode(&ServerMsg::BoardOps(ops.clone())), "{count} ops");
            assert_eq!(decode_server(&merged), Ok(ServerMsg::BoardOps(ops)));
        }
        let others = [encode(&ServerMsg::BoardAck { client_seq: 3 }), encode(&ServerMsg::BoardOp(op(1)))];
        assert!(!is_board_op(&others[0]));
        assert_eq!(board_ops(&others), encode(&ServerMsg::BoardOps(vec![op(1)])), "only relays are spliced");
    }

    #[test]
    fn trailing_garbage_is_refused() {
        let mut bytes = encode(&ClientMsg::Ping { nonce: 7 });
        bytes.push(0);
        assert_eq!(decode_client(&bytes), Err(DecodeError::TrailingBytes(1)));
    }
}
