//! Counts the WebSocket frames a client sends as their bytes arrive, so that frames which are
//! not whole messages have a budget too. tungstenite answers pings itself and assembles
//! fragments before anything reaches the session, which counts messages: without this a client
//! could send pings, pongs or empty continuation frames as fast as its link allows, each one
//! parsed (and each ping answered) by the server.
//!
//! Sans-IO: fed the bytes read, in order, however they were split.

/// What a frame is to the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// The first (or only) frame of a text or binary message: the session counts the message.
    MessageStart,
    /// A continuation of a fragmented message.
    Continuation,
    /// Ping, pong or close.
    Control,
}

/// Where the meter stands in the client's byte stream.
#[derive(Debug)]
enum Position {
    /// Reading a frame header: `have` of its bytes so far (at most 14: 2 + 8 length + 4 mask).
    Header { have: usize, bytes: [u8; 14] },
    /// Skipping the payload of the current frame.
    Payload { left: u64 },
}

#[derive(Debug)]
pub struct FrameMeter {
    position: Position,
}

impl Default for FrameMeter {
    fn default() -> Self {
        Self { position: Position::Header { have: 0, bytes: [0; 14] } }
    }
}

impl FrameMeter {
    /// Reads `bytes`, the next bytes from the client, and calls `started` with the kind of every
    /// frame whose header they complete.
    pub fn feed(&mut self, mut bytes: &[u8], mut started: impl FnMut(FrameKind)) {
        while !bytes.is_empty() {
            match &mut self.position {
                Position::Payload { left } => {
                    let skipped = (*left).min(bytes.len() as u64);
                    *left -= skipped;
                    bytes = &bytes[skipped as usize..];
                    if *left == 0 {
                        self.position = Position::Header { have: 0, bytes: [0; 14] };
                    }
                }
                Position::Header { have, bytes: header } => {
                    header[*have] = bytes[0];
                    *have += 1;
                    bytes = &bytes[1..];
                    if let Some((kind, payload)) = parse_header(&header[..*have]) {
                        started(kind);
                        self.position = if payload == 0 {
                            Position::Header { have: 0, bytes: [0; 14] }
                        } else {
                            Position::Payload { left: payload }
                        };
                    }
                }
            }
        }
    }
}

/// The frame's kind and payload length once `header` holds all of its header, else `None`.
fn parse_header(header: &[u8]) -> Option<(FrameKind, u64)> {
    let [first, second, rest @ ..] = header else { return None };
    let extended = match second & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    if rest.len() < extended + mask {
        return None;
    }
    let payload = match extended {
        0 => u64::from(second & 0x7F),
        _ => rest[..extended].iter().fold(0u64, |len, &byte| len << 8 | u64::from(byte)),
    };
    let kind = match first & 0x0F {
        0 => FrameKind::Continuation,
        opcode if opcode >= 8 => FrameKind::Control,
        _ => FrameKind::MessageStart,
    };
    Some((kind, payload))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    use super::*;

    /// A client's frame as it is on the wire (masked), and what the meter should call it.
    fn frame(kind: u8, len: usize) -> (Vec<u8>, FrameKind) {
        let (mut frame, expected) = match kind % 4 {
            0 => (Frame::message(vec![7; len], OpCode::Data(Data::Binary), false), FrameKind::MessageStart),
            1 => (Frame::message(vec![7; len], OpCode::Data(Data::Continue), true), FrameKind::Continuation),
            2 => (Frame::ping(vec![7; len.min(125)]), FrameKind::Control),
            _ => (Frame::pong(vec![7; len.min(125)]), FrameKind::Control),
        };
        frame.header_mut().mask = Some([0x37, 0xFA, 0x21, 0x3D]);
        let mut bytes = Vec::new();
        frame.format(&mut bytes).unwrap();
        (bytes, expected)
    }

    #[test]
    fn every_frame_is_counted_once_by_kind_whatever_its_length_encoding() {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (kind, len) in [(0, 0), (1, 0), (2, 5), (1, 125), (0, 126), (1, 65_535), (0, 65_536), (3, 0)] {
            let (bytes, kind) = frame(kind, len);
            stream.extend(bytes);
            expected.push(kind);
        }
        let mut seen = Vec::new();
        FrameMeter::default().feed(&stream, |kind| seen.push(kind));
        assert_eq!(seen, expected);
    }

    proptest! {
        #[test]
        fn frames_are_counted_however_the_stream_is_split(
            frames in proptest::collection::vec((0u8..4, 0usize..300), 1..40),
            cuts in proptest::collection::vec(1usize..64, 1..200),
        ) {
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            for (kind, len) in frames {
                let (bytes, kind) = frame(kind, len);
                stream.extend(bytes);
                expected.push(kind);
            }
            let mut meter = FrameMeter::default();
            let mut seen = Vec::new();
            let mut rest = &stream[..];
            for cut in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (piece, after) = rest.split_at((*cut).min(rest.len()));
                meter.feed(piece, |kind| seen.push(kind));
                rest = after;
            }
            prop_assert_eq!(seen, expected);
        }
    }
}
