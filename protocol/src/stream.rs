//! Framing of a WebTransport session's reliable stream, where WebSocket has its frames: each
//! frame is a message (an encoded `ClientMsg` or `ServerMsg`) or the close, with a code and a
//! reason as a WebSocket close has them, since closing a WebTransport session tells the browser
//! neither.
//!
//! A frame is `length: u32 big-endian` (of what follows), `kind: u8`, then the body. Sans-IO:
//! `FrameReader` is fed the bytes as they arrive, however they were split.

/// A frame's kind byte.
const MESSAGE: u8 = 0;
const CLOSE: u8 = 1;
/// Bytes a frame adds to its body: the length and the kind.
pub const FRAME_HEADER_BYTES: usize = 5;

/// One frame of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFrame {
    Message(Vec<u8>),
    /// The sender closes the session (a WebSocket close code and reason).
    Close {
        code: u16,
        reason: String,
    },
}

/// Why the stream's bytes are not frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("a frame of {len} bytes, over the {limit}-byte limit")]
    TooLarge { len: usize, limit: usize },
    #[error("a frame of unknown kind {0}")]
    UnknownKind(u8),
    #[error("an empty frame")]
    Empty,
    #[error("a close frame without a code, or with a reason that is not UTF-8")]
    BadClose,
}

/// The bytes of a message frame carrying `message`.
pub fn message_frame(message: &[u8]) -> Vec<u8> {
    frame(MESSAGE, &[message])
}

/// The bytes of a close frame (the reason is cut to 123 bytes, as a WebSocket close's is).
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    frame(CLOSE, &[&code.to_be_bytes(), &reason.as_bytes()[..end]])
}

fn frame(kind: u8, parts: &[&[u8]]) -> Vec<u8> {
    let body: usize = parts.iter().map(|p| p.len()).sum();
    let mut bytes = Vec::with_capacity(FRAME_HEADER_BYTES + body);
    bytes.extend_from_slice(&(body as u32 + 1).to_be_bytes());
    bytes.push(kind);
    for part in parts {
        bytes.extend_from_slice(part);
    }
    bytes
}

/// Reads frames from a stream's bytes, refusing any whose body is over `limit`.
#[derive(Debug)]
pub struct FrameReader {
    buffer: Vec<u8>,
    limit: usize,
}

impl FrameReader {
    pub fn new(limit: usize) -> Self {
        Self { buffer: Vec::new(), limit }
    }

    /// The next bytes of the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole frame, if its bytes have all arrived. A frame announced over the limit is
    /// an error as soon as its length is read, before its body is buffered.
    pub fn next_frame(&mut self) -> Result<Option<StreamFrame>, StreamError> {
        let Some(length) = self.buffer.first_chunk::<4>().map(|l| u32::from_be_bytes(*l) as usize) else {
            return Ok(None);
        };
        if length == 0 {
            return Err(StreamError::Empty);
        }
        // The kind byte is not part of the message.
        if length - 1 > self.limit {
            return Err(StreamError::TooLarge { len: length - 1, limit: self.limit });
        }
        if self.buffer.len() < 4 + length {
            return Ok(None);
        }
        let kind = self.buffer[4];
        let body = self.buffer[5..4 + length].to_vec();
        self.buffer.drain(..4 + length);
        match kind {
            MESSAGE => Ok(Some(StreamFrame::Message(body))),
            CLOSE => {
                let (code, reason) = body.split_first_chunk::<2>().ok_or(StreamError::BadClose)?;
                let reason = String::from_utf8(reason.to_vec()).map_err(|_| StreamError::BadClose)?;
                Ok(Some(StreamFrame::Close { code: u16::from_be_bytes(*code), reason }))
            }
            other => Err(StreamError::UnknownKind(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_frame_over_the_limit_is_refused_from_its_length_alone() {
        let mut reader = FrameReader::new(16);
        reader.push(&(1_000_000u32).to_be_bytes());
        assert_eq!(reader.next_frame(), Err(StreamError::TooLarge { len: 999_999, limit: 16 }));
    }

    #[test]
    fn a_close_carries_its_code_and_a_reason_cut_on_a_character() {
        let mut reader = FrameReader::new(1024);
        reader.push(&close_frame(1008, &"é".repeat(100)));
        let Ok(Some(StreamFrame::Close { code, reason })) = reader.next_frame() else { panic!("a close") };
        assert_eq!(code, 1008);
        assert_eq!(reason.len(), 122, "cut to 123 bytes at most, on a character boundary");
    }

    proptest! {
        #[test]
        fn frames_come_out_as_they_went_in_however_the_bytes_are_split(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..20),
            cut in 1usize..50,
        ) {
            let stream: Vec<u8> = messages.iter().flat_map(|m| message_frame(m)).collect();
            let mut reader = FrameReader::new(300);
            let mut out = Vec::new();
            for piece in stream.chunks(cut) {
                reader.push(piece);
                while let Some(frame) = reader.next_frame().unwrap() {
                    out.push(frame);
                }
            }
            let expected: Vec<StreamFrame> = messages.into_iter().map(StreamFrame::Message).collect();
            prop_assert_eq!(out, expected);
        }

        #[test]
        fn no_bytes_make_the_reader_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut reader = FrameReader::new(64);
            reader.push(&bytes);
            while let Ok(Some(_)) = reader.next_frame() {}
        }
    }
}
