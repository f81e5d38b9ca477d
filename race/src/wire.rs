//! The bytes on the wire: message bodies, a few frame builders and a scanner that reads the
//! fields the harness needs from a server frame without parsing all of it (the load generator
//! shares the machine with the server under test, so it spends as little CPU per frame as it can).

/// Every body starts with this, so a receiver can find it in any framing.
pub const BODY_MARK: &str = "R|";

/// What a publisher puts in a body: who, which of theirs, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: u32,
    pub n: u64,
    pub sent_ns: u64,
}

/// `R|publisher|n|sent_ns|` padded with `.` to `len` bytes (longer when the fields need it).
pub fn body(stamp: Stamp, len: usize) -> String {
    let mut s = format!(
        "{BODY_MARK}{}|{}|{}|",
        stamp.publisher, stamp.n, stamp.sent_ns
    );
    while s.len() < len {
        s.push('.');
    }
    s
}

/// Reads a body written by [`body`].
pub fn parse_body(s: &str) -> Option<Stamp> {
    let rest = s.strip_prefix(BODY_MARK)?;
    let mut it = rest.splitn(4, '|');
    let publisher = it.next()?.parse().ok()?;
    let n = it.next()?.parse().ok()?;
    let sent_ns = it.next()?.parse().ok()?;
    it.next()?;
    Some(Stamp {
        publisher,
        n,
        sent_ns,
    })
}

/// The string value of the first `"key":"…"` in `frame` (values holding escapes are cut at the
/// first backslash-quote, which the harness's own names and bodies never contain).
pub fn str_field<'a>(frame: &'a str, key: &str) -> Option<&'a str> {
    let at = find_key(frame, key)?;
    let rest = frame[at..].trim_start();
    let rest = rest.strip_prefix('"')?;
    let end = rest.find('"')?;
    Some(&rest[..end])
}

/// The unsigned integer value of the first `"key":N` in `frame`.
pub fn u64_field(frame: &str, key: &str) -> Option<u64> {
    let at = find_key(frame, key)?;
    let rest = frame[at..].trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Byte offset just after `"key":`.
fn find_key(frame: &str, key: &str) -> Option<usize> {
    let bytes = frame.as_bytes();
    let k = key.as_bytes();
    let mut from = 0;
    while let Some(pos) = frame[from..].find(key) {
        let start = from + pos;
        let end = start + k.len();
        if start > 0 && bytes[start - 1] == b'"' && bytes.get(end) == Some(&b'"') {
            let mut i = end + 1;
            while bytes.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
                i += 1;
            }
            if bytes.get(i) == Some(&b':') {
                return Some(i + 1);
            }
        }
        from = end;
    }
    None
}

/// A JSON string literal.
pub fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_round_trip_and_padding() {
        let st = Stamp {
            publisher: 7,
            n: 42,
            sent_ns: 123_456_789,
        };
        let b = body(st, 64);
        assert_eq!(b.len(), 64);
        assert_eq!(parse_body(&b), Some(st));
        assert_eq!(parse_body("R|1|2|"), None);
        assert_eq!(parse_body("hello"), None);
        assert_eq!(parse_body("R|x|2|3|"), None);
    }

    #[test]
    fn fields_from_an_event_frame() {
        let f = r#"{"v":1,"type":"event","room":"r1","seq":44,"at":1,"actor":"a","kind":"message_created","data":{"id":"x","room":"r1","seq":44,"head_seq":9,"body":"R|1|2|3|..","deleted":false}}"#;
        assert_eq!(str_field(f, "type"), Some("event"));
        assert_eq!(str_field(f, "room"), Some("r1"));
        assert_eq!(u64_field(f, "seq"), Some(44));
        assert_eq!(str_field(f, "kind"), Some("message_created"));
        assert_eq!(str_field(f, "body"), Some("R|1|2|3|.."));
        assert_eq!(u64_field(f, "missing"), None);
        let g = r#"{"data":{"head_seq":9},"seq" : 5}"#;
        assert_eq!(u64_field(g, "seq"), Some(5), "head_seq is another key");
    }
}
