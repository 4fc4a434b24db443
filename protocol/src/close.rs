//! WebSocket close codes (RFC 6455 §7.4.1) and the reasons Easel sends with them.

/// Normal closure: the peer asked to leave.
pub const NORMAL: u16 = 1000;
/// The server is shutting down (or the page is going away).
pub const GOING_AWAY: u16 = 1001;
/// The connection ended without a close frame (never sent; an endpoint reports it to itself).
pub const ABNORMAL: u16 = 1006;
/// Malformed frame, wrong protocol version, or a message out of order.
pub const PROTOCOL_ERROR: u16 = 1002;
/// A data type the endpoint does not accept: Easel speaks binary frames only.
pub const UNSUPPORTED_DATA: u16 = 1003;
/// Data inconsistent with its type: a text frame or close reason that is not UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// A rule was broken: rate limits, handshake timeout, invalid name or room.
pub const POLICY_VIOLATION: u16 = 1008;
/// A message larger than the configured cap.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// The server met a condition it cannot serve through (its random source failed).
pub const INTERNAL_ERROR: u16 = 1011;
/// The server is restarting (it drains for a deploy): join again, here or on another server.
pub const SERVICE_RESTART: u16 = 1012;
/// The server is overloaded or the client could not keep up: come back later.
pub const TRY_AGAIN_LATER: u16 = 1013;
