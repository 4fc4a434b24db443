//! Validation of the text people type: player names, room names and chat lines. Shared so the
//! client can refuse locally with the same words the server would use.

/// The longest player name, in characters.
pub const MAX_NAME_CHARS: usize = 24;
/// The longest room name, in characters.
pub const MAX_ROOM_CHARS: usize = 32;
/// The longest chat line, in characters.
pub const MAX_CHAT_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is longer than {max} characters")]
    TooLong { what: &'static str, max: usize },
    #[error("room names may use only letters, digits, '-' and '_'")]
    BadRoomCharacter,
}

/// A display name: trimmed, control characters removed, 1 to 24 characters.
pub fn clean_name(raw: &str) -> Result<String, TextError> {
    clean_line(raw, "name", MAX_NAME_CHARS)
}

/// A chat line: trimmed, control characters removed, 1 to 200 characters.
pub fn clean_chat(raw: &str) -> Result<String, TextError> {
    clean_line(raw, "chat message", MAX_CHAT_CHARS)
}

/// A room name: 1 to 32 of `[A-Za-z0-9_-]`, compared case-insensitively (stored lowercase), so
/// `?room=Lobby` and `?room=lobby` meet in one room.
pub fn clean_room(raw: &str) -> Result<String, TextError> {
    let room = raw.trim();
    if room.is_empty() {
        return Err(TextError::Empty { what: "room name" });
    }
    if room.chars().count() > MAX_ROOM_CHARS {
        return Err(TextError::TooLong { what: "room name", max: MAX_ROOM_CHARS });
    }
    if !room.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(TextError::BadRoomCharacter);
    }
    Ok(room.to_ascii_lowercase())
}

/// The WebSocket's query naming the room a connection is for (`?room=lobby`), appended to the
/// endpoint's URL: the server only uses it to place the connection beside the room's other
/// members (the `Hello` still joins). Room names are URL-safe (`clean_room`); any other name is
/// left out, and the connection is placed as one without the query.
pub fn room_query(room: &str) -> String {
    match clean_room(room) {
        Ok(room) => format!("?room={room}"),
        Err(_) => String::new(),
    }
}

fn clean_line(raw: &str, what: &'static str, max: usize) -> Result<String, TextError> {
    let line: String = raw.chars().filter(|c| !c.is_control()).collect();
    let line = line.trim();
    if line.is_empty() {
        return Err(TextError::Empty { what });
    }
    if line.chars().count() > max {
        return Err(TextError::TooLong { what, max });
    }
    Ok(line.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_stripped_of_control_characters() {
        assert_eq!(clean_name("  Ada\u{7}\n "), Ok("Ada".to_owned()));
    }

    #[test]
    fn empty_and_long_text_is_refused() {
        assert_eq!(clean_name(" \t"), Err(TextError::Empty { what: "name" }));
        assert!(matches!(clean_chat(&"x".repeat(201)), Err(TextError::TooLong { .. })));
        assert!(clean_chat(&"é".repeat(200)).is_ok(), "the limit counts characters, not bytes");
    }

    #[test]
    fn room_names_are_restricted_and_case_insensitive() {
        assert_eq!(clean_room("Lobby-1"), Ok("lobby-1".to_owned()));
        assert_eq!(clean_room("a b"), Err(TextError::BadRoomCharacter));
        assert_eq!(clean_room("<script>"), Err(TextError::BadRoomCharacter));
    }
}
