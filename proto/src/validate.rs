//! Input rules and limits of protocol v1, checked by the server on every request and by the
//! client core before anything is queued.

use serde_json::Value;

/// The largest WebSocket frame either side accepts (1 MiB).
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Longest message body, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest document content, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 512 * 1024;
/// Longest room title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Largest serialised room metadata, in bytes.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Longest identifier (user id, idempotency key, request id, message id), in bytes.
pub const MAX_ID_BYTES: usize = 128;
/// Most messages in one `message.import`.
pub const MAX_IMPORT_BATCH: usize = 5_000;
/// Most ids in one call (`notification.read`, presence queries).
pub const MAX_IDS_PER_CALL: usize = 500;
/// Longest invitation lifetime: 30 days.
pub const MAX_INVITATION_TTL_SECS: u64 = 30 * 24 * 3600;
/// Default invitation lifetime: 7 days.
pub const DEFAULT_INVITATION_TTL_SECS: u64 = 7 * 24 * 3600;
/// Largest page size of any listing.
pub const MAX_PAGE_SIZE: u32 = 200;
/// Page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Most rooms in one `subscribe` frame.
pub const MAX_ROOMS_PER_SUBSCRIBE: usize = 500;

/// The largest sequence number or cursor the server stores (SQLite's signed 64-bit range);
/// a cursor above it (`u64::MAX` and its neighbours) is refused with `invalid_input`.
pub const MAX_SEQ: u64 = i64::MAX as u64;

/// Checks a sequence-number cursor (`since`, `after`, `before`, `inbox_since`).
pub fn cursor(what: &str, n: u64) -> Result<(), Invalid> {
    if n > MAX_SEQ {
        return Err(Invalid(format!("{what} must be at most {MAX_SEQ}")));
    }
    Ok(())
}

/// Why an input was refused; the text is meant for the developer who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    /// A refusal with this reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Invalid(reason.into())
    }
}

fn slug(what: &str, s: &str) -> Result<(), Invalid> {
    if s.is_empty() || s.len() > 64 {
        return Err(Invalid(format!("{what} must be 1 to 64 characters long")));
    }
    let first_ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !first_ok || !rest_ok {
        return Err(Invalid(format!(
            "{what} may hold only ASCII letters, digits, '-', '_' and '.', and must start with a letter or digit"
        )));
    }
    Ok(())
}

/// A room name: 1 to 64 ASCII letters, digits, `-`, `_` or `.`, starting with a letter or digit.
pub fn room_name(s: &str) -> Result<(), Invalid> {
    slug("room name", s)
}

/// A document name: the same rules as a room name.
pub fn document_name(s: &str) -> Result<(), Invalid> {
    slug("document name", s)
}

/// A user id (the token's `sub`): 1 to 128 bytes, no control characters or whitespace.
pub fn user_id(s: &str) -> Result<(), Invalid> {
    identifier("user id", s)
}

/// An opaque identifier: 1 to 128 bytes, printable, no whitespace.
pub fn identifier(what: &str, s: &str) -> Result<(), Invalid> {
    if s.is_empty() || s.len() > MAX_ID_BYTES {
        return Err(Invalid(format!(
            "{what} must be 1 to {MAX_ID_BYTES} bytes long"
        )));
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Invalid(format!(
            "{what} must not hold whitespace or control characters"
        )));
    }
    Ok(())
}

/// A message body: 1 byte to 64 KiB.
pub fn body(s: &str) -> Result<(), Invalid> {
    if s.is_empty() {
        return Err(Invalid::new("body must not be empty"));
    }
    if s.len() > MAX_BODY_BYTES {
        return Err(Invalid(format!(
            "body must be at most {MAX_BODY_BYTES} bytes"
        )));
    }
    Ok(())
}

/// A room title: at most 200 characters, no control characters.
pub fn title(s: &str) -> Result<(), Invalid> {
    if s.chars().count() > MAX_TITLE_CHARS {
        return Err(Invalid(format!(
            "title must be at most {MAX_TITLE_CHARS} characters"
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(Invalid::new("title must not hold control characters"));
    }
    Ok(())
}

/// Room metadata: a JSON object of at most 16 KiB.
pub fn metadata(v: &Value) -> Result<(), Invalid> {
    if !v.is_object() {
        return Err(Invalid::new("metadata must be a JSON object"));
    }
    if v.to_string().len() > MAX_METADATA_BYTES {
        return Err(Invalid(format!(
            "metadata must be at most {MAX_METADATA_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Document content: at most 512 KiB.
pub fn document_content(s: &str) -> Result<(), Invalid> {
    if s.len() > MAX_DOCUMENT_BYTES {
        return Err(Invalid(format!(
            "content must be at most {MAX_DOCUMENT_BYTES} bytes"
        )));
    }
    Ok(())
}

/// An idempotency key: 1 to 128 printable bytes (clients use UUIDv7).
pub fn idempotency_key(s: &str) -> Result<(), Invalid> {
    identifier("idempotency key", s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert!(room_name("general").is_ok());
        assert!(room_name("team_1.ops-x").is_ok());
        assert!(room_name("").is_err());
        assert!(room_name("-lead").is_err());
        assert!(room_name("a b").is_err());
        assert!(room_name("Robert'); DROP TABLE rooms;--").is_err());
        assert!(room_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn bodies_and_ids() {
        assert!(body("").is_err());
        assert!(body(&"x".repeat(MAX_BODY_BYTES + 1)).is_err());
        assert!(body("'; DELETE FROM messages; --").is_ok());
        assert!(user_id("alice@example.com").is_ok());
        assert!(user_id("a\nb").is_err());
    }
}
