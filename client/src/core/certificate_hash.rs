//! The SHA-256 certificate hashes `/webtransport` gives as hex, read the same way by both fronts.

/// A 32-byte hash from its hex (`None` for anything else).
pub fn from_hex(hex: &str) -> Option<[u8; 32]> {
    let bytes: Vec<u8> =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect::<Option<_>>()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_come_as_hex() {
        let hex: String = (0..32u8).map(|b| format!("{b:02x}")).collect();
        assert_eq!(from_hex(&hex), Some(std::array::from_fn(|i| i as u8)));
        assert_eq!(from_hex("abc"), None);
    }
}
