//! WebSocket framing of what the server sends (RFC 6455, 5.2): the server frames its messages
//! itself when the room writes snapshots straight to a socket, and the bots count the bytes the
//! frames add.

/// The header of an unmasked, final binary frame carrying `len` bytes: what a server puts
/// before each message it sends.
pub fn server_frame_header(len: usize) -> FrameHeader {
    const FIN_BINARY: u8 = 0x82;
    let mut bytes = [0u8; 10];
    bytes[0] = FIN_BINARY;
    let used = if len < 126 {
        bytes[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        bytes[1] = 126;
        bytes[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        bytes[1] = 127;
        bytes[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    FrameHeader { bytes, used }
}

/// A frame header: 2, 4 or 10 bytes.
pub struct FrameHeader {
    bytes: [u8; 10],
    used: usize,
}

impl FrameHeader {
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.used]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_headers_follow_rfc_6455() {
        assert_eq!(server_frame_header(125).as_slice().len(), 2);
        assert_eq!(server_frame_header(126).as_slice().len(), 4);
        assert_eq!(server_frame_header(70_000).as_slice().len(), 10);
    }
}
