//! Input rules and limits of protocol v1, checked by the server on every request and by the
//! client core before anything is queued.

use base64::Engine as _;
use serde_json::Value;

use crate::model::Attachment;

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

/// Longest push token (`push.register`), in bytes.
pub const MAX_PUSH_TOKEN_BYTES: usize = 4096;
/// Longest push app id (APNs topic, FCM or webhook app id), in bytes.
pub const MAX_PUSH_APP_ID_BYTES: usize = 255;
/// Longest push locale (a BCP-47 tag), in bytes.
pub const MAX_LOCALE_BYTES: usize = 35;

/// Longest attachment file name, in bytes.
pub const MAX_FILE_NAME_BYTES: usize = 255;
/// Longest attachment MIME type (`type/subtype`), in bytes.
pub const MAX_MIME_BYTES: usize = 255;
/// Largest attachment thumbnail, in bytes once decoded from base64.
pub const MAX_THUMBNAIL_BYTES: usize = 8 * 1024;

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

/// A message body when the message carries an attachment (a caption): at most 64 KiB, and
/// may be empty.
pub fn caption(s: &str) -> Result<(), Invalid> {
    if s.len() > MAX_BODY_BYTES {
        return Err(Invalid(format!(
            "body must be at most {MAX_BODY_BYTES} bytes"
        )));
    }
    Ok(())
}

/// A blob id: a SHA-256 as 64 lowercase hex digits.
pub fn blob_hash(what: &str, s: &str) -> Result<(), Invalid> {
    let ok = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !ok {
        return Err(Invalid(format!(
            "{what} must be a SHA-256 in 64 lowercase hex digits"
        )));
    }
    Ok(())
}

/// An attachment's file name: 1 to 255 bytes, not `.` or `..`, without `/`, `\\` or control
/// characters.
pub fn file_name(s: &str) -> Result<(), Invalid> {
    if s.is_empty() || s.len() > MAX_FILE_NAME_BYTES {
        return Err(Invalid(format!(
            "attachment name must be 1 to {MAX_FILE_NAME_BYTES} bytes long"
        )));
    }
    if s == "." || s == ".." {
        return Err(Invalid::new("attachment name must not be '.' or '..'"));
    }
    if s.chars().any(|c| c == '/' || c == '\\' || c.is_control()) {
        return Err(Invalid::new(
            "attachment name must not hold '/', '\\' or control characters",
        ));
    }
    Ok(())
}

/// A MIME type without parameters: `type/subtype`, each 1 to 127 characters of the restricted
/// names of RFC 6838 (ASCII letters and digits first, then also `!#$&-^_.+`).
pub fn mime(s: &str) -> Result<(), Invalid> {
    fn name_ok(n: &str) -> bool {
        n.len() <= 127
            && n.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    }
    let ok = s.len() <= MAX_MIME_BYTES
        && s.split_once('/')
            .is_some_and(|(t, sub)| name_ok(t) && name_ok(sub));
    if !ok {
        return Err(Invalid::new(
            "attachment mime must be a type/subtype such as image/jpeg, without parameters",
        ));
    }
    Ok(())
}

/// An inline thumbnail: standard base64 with padding of a JPEG, PNG or WebP image of at most
/// 8 KiB.
pub fn thumbnail(s: &str) -> Result<(), Invalid> {
    // Base64 of MAX_THUMBNAIL_BYTES is at most this long; refuse longer text before decoding.
    if s.len() > MAX_THUMBNAIL_BYTES.div_ceil(3) * 4 {
        return Err(Invalid(format!(
            "attachment thumbnail must be at most {MAX_THUMBNAIL_BYTES} bytes"
        )));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| Invalid::new("attachment thumbnail must be standard base64 with padding"))?;
    if bytes.len() > MAX_THUMBNAIL_BYTES {
        return Err(Invalid(format!(
            "attachment thumbnail must be at most {MAX_THUMBNAIL_BYTES} bytes"
        )));
    }
    let jpeg = bytes.starts_with(&[0xFF, 0xD8, 0xFF]);
    let png = bytes.starts_with(b"\x89PNG\r\n\x1a\n");
    let webp = bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP";
    if !(jpeg || png || webp) {
        return Err(Invalid::new(
            "attachment thumbnail must be a JPEG, PNG or WebP image",
        ));
    }
    Ok(())
}

/// An attachment: every field by its rule ([`blob_hash`], [`file_name`], [`mime`],
/// [`thumbnail`]); `width`, `height` and `duration_ms` are at least 1 when given.
pub fn attachment(a: &Attachment) -> Result<(), Invalid> {
    blob_hash("attachment blob", &a.blob)?;
    file_name(&a.name)?;
    mime(&a.mime)?;
    if a.size > MAX_SEQ {
        return Err(Invalid(format!(
            "attachment size must be at most {MAX_SEQ}"
        )));
    }
    if a.width == Some(0) || a.height == Some(0) {
        return Err(Invalid::new(
            "attachment width and height must be at least 1 when given",
        ));
    }
    if a.duration_ms == Some(0) {
        return Err(Invalid::new(
            "attachment duration_ms must be at least 1 when given",
        ));
    }
    if let Some(t) = &a.thumbnail {
        thumbnail(t)?;
    }
    Ok(())
}

/// A push device id: an [`identifier`] (1 to 128 bytes, no whitespace or control characters).
pub fn push_device(s: &str) -> Result<(), Invalid> {
    identifier("device", s)
}

/// A push token: 1 to 4,096 bytes, without whitespace or control characters (APNs tokens are
/// hex, FCM tokens base64url with `:`, webhook tokens the deployment's own).
pub fn push_token(s: &str) -> Result<(), Invalid> {
    if s.is_empty() || s.len() > MAX_PUSH_TOKEN_BYTES {
        return Err(Invalid(format!(
            "token must be 1 to {MAX_PUSH_TOKEN_BYTES} bytes long"
        )));
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Invalid::new(
            "token must not hold whitespace or control characters",
        ));
    }
    Ok(())
}

/// A push app id (the APNs topic, that is the bundle id, or the FCM or webhook app id): 1 to
/// 255 bytes, without whitespace or control characters.
pub fn push_app_id(s: &str) -> Result<(), Invalid> {
    if s.is_empty() || s.len() > MAX_PUSH_APP_ID_BYTES {
        return Err(Invalid(format!(
            "app_id must be 1 to {MAX_PUSH_APP_ID_BYTES} bytes long"
        )));
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Invalid::new(
            "app_id must not hold whitespace or control characters",
        ));
    }
    Ok(())
}

/// A BCP-47 language tag as a push locale: at most 35 bytes of subtags of 1 to 8 ASCII letters
/// or digits joined by `-`, the first of 2 to 8 letters (`en`, `pt-BR`, `zh-Hant-TW`).
pub fn locale(s: &str) -> Result<(), Invalid> {
    let bad = || {
        Invalid::new(format!(
            "locale must be a BCP-47 tag such as en or pt-BR, at most {MAX_LOCALE_BYTES} bytes"
        ))
    };
    if s.is_empty() || s.len() > MAX_LOCALE_BYTES {
        return Err(bad());
    }
    let mut parts = s.split('-');
    let lang = parts.next().unwrap_or_default();
    if !(2..=8).contains(&lang.len()) || !lang.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(bad());
    }
    if !parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric())) {
        return Err(bad());
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
    fn push_fields() {
        assert!(push_device("0190d1c4-7a00-7000-8000-000000000001").is_ok());
        assert!(push_device("").is_err());
        assert!(push_device("a b").is_err());
        assert!(push_device(&"d".repeat(129)).is_err());
        assert!(push_token(&"ab".repeat(32)).is_ok());
        assert!(push_token(&"t".repeat(MAX_PUSH_TOKEN_BYTES)).is_ok());
        assert!(push_token(&"t".repeat(MAX_PUSH_TOKEN_BYTES + 1)).is_err());
        assert!(push_token("").is_err());
        assert!(push_token("a\nb").is_err());
        assert!(push_app_id("com.example.roam").is_ok());
        assert!(push_app_id(&"a".repeat(256)).is_err());
        assert!(push_app_id("").is_err());
        for good in ["en", "pt-BR", "zh-Hant-TW", "de-CH-1996"] {
            assert!(locale(good).is_ok(), "{good:?} refused");
        }
        for bad in [
            "",
            "e",
            "en_US",
            "en-",
            "-en",
            "12",
            "en-toolongsubtag",
            &"en-a".repeat(10),
        ] {
            assert!(locale(bad).is_err(), "{bad:?} accepted");
        }
    }

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
        assert!(caption("").is_ok());
        assert!(caption(&"x".repeat(MAX_BODY_BYTES + 1)).is_err());
    }

    fn photo() -> Attachment {
        Attachment {
            blob: "ab".repeat(32),
            name: "IMG_0001.jpg".into(),
            mime: "image/jpeg".into(),
            size: 1234,
            width: Some(640),
            height: Some(480),
            duration_ms: None,
            thumbnail: None,
        }
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn attachments() {
        assert_eq!(attachment(&photo()), Ok(()));
        let with = |f: fn(&mut Attachment)| {
            let mut a = photo();
            f(&mut a);
            attachment(&a)
        };
        assert!(with(|a| a.blob = "AB".repeat(32)).is_err());
        assert!(with(|a| a.blob = "ab".repeat(31)).is_err());
        assert!(with(|a| a.blob = format!("{}zz", "ab".repeat(31))).is_err());
        for bad in ["", ".", "..", "a/b", "a\\b", "a\nb", "a\u{7f}"] {
            assert!(with_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(with_name(&"n".repeat(255)).is_ok());
        assert!(with_name(&"n".repeat(256)).is_err());
        assert!(with_name("Résumé final (2).pdf").is_ok());
        for good in [
            "image/jpeg",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "audio/x-m4a",
            "image/svg+xml",
        ] {
            assert!(mime(good).is_ok(), "{good:?} refused");
        }
        for bad in [
            "",
            "image",
            "image/",
            "/jpeg",
            "text/plain; charset=utf-8",
            "image/jpeg/x",
            "ima ge/jpeg",
            "-x/y",
        ] {
            assert!(mime(bad).is_err(), "{bad:?} accepted");
        }
        assert!(with(|a| a.width = Some(0)).is_err());
        assert!(with(|a| a.height = Some(0)).is_err());
        assert!(with(|a| a.duration_ms = Some(0)).is_err());
        assert!(with(|a| a.size = u64::MAX).is_err());
        assert!(with(|a| a.size = 0).is_ok());
    }

    fn with_name(name: &str) -> Result<(), Invalid> {
        let mut a = photo();
        a.name = name.to_owned();
        attachment(&a)
    }

    #[test]
    fn thumbnails() {
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0];
        jpeg.resize(MAX_THUMBNAIL_BYTES, 0);
        assert_eq!(thumbnail(&b64(&jpeg)), Ok(()));
        jpeg.push(0);
        assert!(thumbnail(&b64(&jpeg)).is_err(), "one byte over 8 KiB");
        assert_eq!(thumbnail(&b64(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")), Ok(()));
        assert_eq!(thumbnail(&b64(b"RIFF\x10\0\0\0WEBPVP8 ")), Ok(()));
        assert!(thumbnail(&b64(b"GIF89a......")).is_err());
        assert!(thumbnail(&b64(b"RIFF\x10\0\0\0WAVEfmt ")).is_err());
        assert!(thumbnail("not base64!").is_err());
        assert!(thumbnail(b64(&[0xFF, 0xD8, 0xFF, 0xE0]).trim_end_matches('=')).is_err());
        assert!(thumbnail("").is_err());
    }
}
