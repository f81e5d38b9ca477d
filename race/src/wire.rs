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

/// The fields of a Roam server frame the harness reads (see [`fields`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fields<'a> {
    pub kind_of_frame: Option<&'a str>,
    pub room: Option<&'a str>,
    pub seq: Option<u64>,
    pub kind: Option<&'a str>,
    pub id: Option<&'a str>,
    /// `data.body`, raw (the harness's bodies hold no escapes).
    pub body: Option<&'a str>,
}

/// Reads a frame's `type`, `room`, `seq`, `kind`, `id` and `body` (the first of each: in Roam's
/// frames the top-level ones come before `data`, and `body` is only in `data`). Roam's frames are
/// compact JSON, so each key is looked for as `"key":` with a searcher built once for the
/// process (searching with `str::find` set one up per call and per field: more CPU per Roam frame
/// than the load generator spends per Socket.IO frame). `None` for text that is not an object.
pub fn fields(frame: &str) -> Option<Fields<'_>> {
    use memchr::memmem::Finder;
    use std::sync::LazyLock;
    struct Keys {
        kind_of_frame: Finder<'static>,
        room: Finder<'static>,
        seq: Finder<'static>,
        kind: Finder<'static>,
        id: Finder<'static>,
        body: Finder<'static>,
    }
    static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
        kind_of_frame: Finder::new(r#""type":"#),
        room: Finder::new(r#""room":"#),
        seq: Finder::new(r#""seq":"#),
        kind: Finder::new(r#""kind":"#),
        id: Finder::new(r#""id":"#),
        body: Finder::new(r#""body":"#),
    });
    if !frame.starts_with('{') {
        return None;
    }
    let b = frame.as_bytes();
    let value = |f: &Finder<'static>| f.find(b).map(|at| at + f.needle().len());
    let string = |f: &Finder<'static>| {
        let at = value(f)?;
        let rest = frame.get(at..)?.strip_prefix('"')?;
        let end = memchr::memchr(b'"', rest.as_bytes())?;
        Some(&rest[..end])
    };
    let k = &*KEYS;
    Some(Fields {
        kind_of_frame: string(&k.kind_of_frame),
        room: string(&k.room),
        seq: value(&k.seq).and_then(|at| {
            let digits = &b[at..];
            let end = digits
                .iter()
                .position(|c| !c.is_ascii_digit())
                .unwrap_or(digits.len());
            frame[at..at + end].parse().ok()
        }),
        kind: string(&k.kind),
        id: string(&k.id),
        body: string(&k.body),
    })
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
        assert_eq!(str_field(f, "kind"), Some("message_created"));
        assert_eq!(str_field(f, "body"), Some("R|1|2|3|.."));
        assert_eq!(str_field(f, "missing"), None);
    }

    #[test]
    fn one_search_per_field_finds_the_frames_fields() {
        let f = r#"{"v":1,"type":"event","room":"r1","seq":44,"at":1,"actor":"a","kind":"message_created","data":{"id":"x","room":"r9","seq":7,"head_seq":9,"body":"R|1|2|3|..","deleted":false}}"#;
        assert_eq!(
            fields(f),
            Some(Fields {
                kind_of_frame: Some("event"),
                room: Some("r1"),
                seq: Some(44),
                kind: Some("message_created"),
                id: Some("x"),
                body: Some("R|1|2|3|.."),
            })
        );
        let ack = r#"{"v":1,"type":"ack","id":"p7","result":{"ok":true}}"#;
        let got = fields(ack).expect("an object");
        assert_eq!(got.kind_of_frame, Some("ack"));
        assert_eq!(got.id, Some("p7"));
        assert_eq!(got.seq, None);
        let g = r#"{"data":{"head_seq":9},"seq":5}"#;
        assert_eq!(
            fields(g).and_then(|f| f.seq),
            Some(5),
            "head_seq is another key"
        );
        assert_eq!(fields("2"), None);
        assert_eq!(
            fields(r#"{"type":"ev"#).map(|f| f.kind_of_frame),
            Some(None),
            "cut short"
        );
    }
}
