//! The opening handshake's checks (RFC 6455 §4.2.1) and the answer to a request that fails them
//! (§4.2.2): what makes a request a WebSocket upgrade Easel accepts.

use axum::http::{HeaderMap, StatusCode, Version, header};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The only WebSocket version there is (RFC 6455).
pub const WEBSOCKET_VERSION: &str = "13";

/// Why an upgrade request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this is the WebSocket endpoint: send a WebSocket upgrade")]
    NotAnUpgrade,
    #[error("a WebSocket upgrade needs HTTP/1.1 or later")]
    HttpVersion,
    #[error("unsupported WebSocket version: Easel speaks version 13")]
    WebSocketVersion,
    #[error("Sec-WebSocket-Key is missing")]
    MissingKey,
    #[error("Sec-WebSocket-Key must be 16 bytes in base64")]
    BadKey,
}

impl Refusal {
    /// The HTTP status that answers it: 426 Upgrade Required (with the version Easel speaks) for
    /// a version it does not, 400 for the rest.
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::WebSocketVersion => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// The `Sec-WebSocket-Accept` answering a valid upgrade request, or why it is not one.
pub fn accept_key(version: Version, headers: &HeaderMap) -> Result<String, Refusal> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err(Refusal::NotAnUpgrade);
    }
    if version < Version::HTTP_11 {
        return Err(Refusal::HttpVersion);
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v != WEBSOCKET_VERSION) {
        return Err(Refusal::WebSocketVersion);
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY).ok_or(Refusal::MissingKey)?;
    if !is_key(key.as_bytes()) {
        return Err(Refusal::BadKey);
    }
    Ok(derive_accept_key(key.as_bytes()))
}

/// Whether `key` is 16 bytes in canonical base64: 22 characters of the alphabet, the last of
/// them holding 2 bits of the key and 4 zero bits, then `==`.
fn is_key(key: &[u8]) -> bool {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let value = |c: &u8| ALPHABET.iter().position(|a| a == c);
    let [body @ .., last, b'=', b'='] = key else { return false };
    body.len() == 21 && body.iter().all(|c| value(c).is_some()) && value(last).is_some_and(|v| v & 0x0F == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(key: &str, version: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::SEC_WEBSOCKET_VERSION, version.parse().unwrap());
        h.insert(header::SEC_WEBSOCKET_KEY, key.parse().unwrap());
        h
    }

    #[test]
    fn the_handshake_is_answered_with_rfc_6455s_accept_key() {
        let headers = upgrade("dGhlIHNhbXBsZSBub25jZQ==", "13");
        assert_eq!(accept_key(Version::HTTP_11, &headers), Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_owned()));
    }

    #[test]
    fn each_broken_rule_has_its_refusal() {
        let good = "dGhlIHNhbXBsZSBub25jZQ==";
        assert_eq!(accept_key(Version::HTTP_11, &upgrade(good, "8")), Err(Refusal::WebSocketVersion));
        assert_eq!(Refusal::WebSocketVersion.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(accept_key(Version::HTTP_10, &upgrade(good, "13")), Err(Refusal::HttpVersion));
        for bad in ["x", "dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25jZR==", "dGhlIHNhbXBsZSBub25j*Q==", "AAAA"] {
            assert_eq!(accept_key(Version::HTTP_11, &upgrade(bad, "13")), Err(Refusal::BadKey), "{bad}");
        }
        let mut no_upgrade = upgrade(good, "13");
        no_upgrade.remove(header::UPGRADE);
        assert_eq!(accept_key(Version::HTTP_11, &no_upgrade), Err(Refusal::NotAnUpgrade));
    }
}
