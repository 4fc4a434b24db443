//! The bodies of the fuzz targets (`fuzz/`, run by `cargo xtask fuzz`), here so that an ordinary
//! `cargo test` on stable replays every committed corpus input and crasher through the very same
//! code (`tests/tests/fuzz_corpus.rs`): a bug a fuzzer found stays fixed.
//!
//! Each takes arbitrary bytes and must not panic; where a decoder accepts its input, what it
//! decoded must survive a round trip.

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue, Version};
use easel::config::Limits;
use easel::net::ws::handshake;
use easel::session::{Session, SessionEvent};
use easel_client::core::ClientCore;
use easel_protocol::board::{Board, BoardOp, Readiness};
use easel_protocol::{ServerMsg, codec, encode, snapshot};

/// A fuzz target's body: any bytes, no panic.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/` and `fuzz/corpus/` name them.
pub const TARGETS: [(&str, Target); 5] = [
    ("client_message", client_message),
    ("server_message", server_message),
    ("board", board),
    ("upgrade_request", upgrade_request),
    ("session", session),
];

/// What a client may send the server: decoded, and re-encoded to the same message.
pub fn client_message(data: &[u8]) {
    if let Ok(message) = codec::decode_client(data) {
        assert_eq!(codec::decode_client(&encode(&message)).ok(), Some(message), "a client message round-trips");
    }
}

/// What a compromised server could send a client: the raw snapshot decoder against no baseline
/// and against one, then the whole message through a joined client's core.
pub fn server_message(data: &[u8]) {
    let baseline = [snapshot::NetPlayer { id: 3, x: 80, y: 16, score: 2, last_input_seq: 9 }];
    let gap = u32::from(data.first().copied().unwrap_or(1));
    for base in [None, Some(&baseline[..])] {
        if let Ok(players) = snapshot::decode(data, base, gap) {
            let again = snapshot::decode(&snapshot::encode(&players, base, gap), base, gap);
            assert_eq!(again.ok(), Some(players), "a decoded snapshot round-trips");
        }
    }
    let mut core = joined_core();
    let _ = core.handle_message(1.0, data);
    let _ = core.poll_transmit(2.0);
    let _ = core.render_positions(3.0);
}

/// A stored board loaded, and ops applied as the server applies them: only when ready for
/// their author (the first byte picks it), each op a length-prefixed piece of the rest.
pub fn board(data: &[u8]) {
    if let Ok(loaded) = Board::decode(data) {
        let again = Board::decode(&loaded.encode()).map(|b| b.digest());
        assert_eq!(again.ok(), Some(loaded.digest()), "a decoded board round-trips");
    }
    let Some((&author, rest)) = data.split_first() else { return };
    let mut board = Board::default();
    for piece in pieces(rest) {
        if let Ok(op) = codec::decode_board::<BoardOp>(piece)
            && let Ok(Readiness::Ready) = board.readiness(&op, u32::from(author))
        {
            board.apply(op);
        }
    }
    let _ = board.digest();
}

/// An upgrade request's head: the first line picks the HTTP version, every other line of
/// `name: value` is a header.
pub fn upgrade_request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split("\r\n");
    let version = match lines.next().map(str::len).unwrap_or(0) % 4 {
        0 => Version::HTTP_10,
        1 => Version::HTTP_11,
        2 => Version::HTTP_2,
        _ => Version::HTTP_09,
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(name), Ok(value)) = (HeaderName::try_from(name.trim()), HeaderValue::try_from(value.trim()))
        {
            headers.append(name, value);
        }
    }
    if let Ok(accept) = handshake::accept_key(version, &headers) {
        assert_eq!(accept.len(), 28, "an accept key is a base64 SHA-1");
    }
}

/// A session fed a sequence of messages (length-prefixed pieces), each a few ms after the
/// last, joining when it asks to; it stops at the first close, as the connection does.
pub fn session(data: &[u8]) {
    let start = Instant::now();
    let mut session = Session::new(start, &Limits::default());
    for (i, piece) in pieces(data).enumerate() {
        let now = start + Duration::from_millis(i as u64 * 7);
        if session.handle_timeout(now).is_err() {
            return;
        }
        match session.handle_binary(now, piece) {
            Ok(Some(SessionEvent::Join { .. })) => session.joined(),
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// A client core that has joined a room, as the server's `Welcome` leaves it.
fn joined_core() -> ClientCore {
    let mut core = ClientCore::new("fuzz", "fuzz");
    core.hello();
    let welcome = ServerMsg::Welcome {
        player_id: 3,
        tick_rate: 30,
        rules: easel_protocol::game::Rules::GAME,
        view_distance: 0.0,
        players: Vec::new(),
        orbs: Vec::new(),
        identity: easel_protocol::Identity { author: 3, token: [0; 16] },
        board_chunks: 0,
        resume: [0; 16],
    };
    let _ = core.handle_message(0.0, &encode(&welcome));
    core
}

/// `data` cut into pieces, each prefixed by its length (one byte).
fn pieces(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (&len, rest) = data.split_first()?;
        let (piece, after) = rest.split_at(usize::from(len).min(rest.len()));
        data = after;
        Some(piece)
    })
}
