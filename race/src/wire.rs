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

/// The fields of a Roam server frame the harness reads, found in one pass over the frame.
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

/// Reads a frame's top-level `type`, `room`, `seq`, `kind` and `id`, and `body` inside `data`,
/// walking the object once (a receiver reads every event it gets: searching the frame once per
/// field cost the load generator more per Roam frame than per Socket.IO frame).
/// `None` for text that is not a JSON object.
pub fn fields(frame: &str) -> Option<Fields<'_>> {
    let b = frame.as_bytes();
    let mut out = Fields::default();
    let at = ws(b, 0);
    if b.get(at) != Some(&b'{') {
        return None;
    }
    object(frame, at, &mut |key, value| match key {
        "type" => out.kind_of_frame = value.as_str(frame),
        "room" => out.room = value.as_str(frame),
        "seq" => out.seq = frame[value.0..value.1].parse().ok(),
        "kind" => out.kind = value.as_str(frame),
        "id" => out.id = value.as_str(frame),
        "data" if b.get(value.0) == Some(&b'{') => {
            object(frame, value.0, &mut |k, v| {
                if k == "body" {
                    out.body = v.as_str(frame);
                }
            });
        }
        _ => {}
    })?;
    Some(out)
}

/// A value's byte range in the frame.
#[derive(Clone, Copy)]
struct Span(usize, usize);

impl Span {
    /// The contents of a string value.
    fn as_str(self, frame: &str) -> Option<&str> {
        let v = &frame[self.0..self.1];
        v.strip_prefix('"')?.strip_suffix('"')
    }
}

fn ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// Calls `each` with every key of the object starting at `at` and its value's span; returns the
/// offset after the object.
fn object(frame: &str, at: usize, each: &mut dyn FnMut(&str, Span)) -> Option<usize> {
    let b = frame.as_bytes();
    let mut i = ws(b, at + 1);
    if b.get(i) == Some(&b'}') {
        return Some(i + 1);
    }
    loop {
        let key_end = string_end(b, i)?;
        let key = &frame[i + 1..key_end - 1];
        i = ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let start = ws(b, i + 1);
        let end = value_end(b, start)?;
        each(key, Span(start, end));
        i = ws(b, end);
        match b.get(i) {
            Some(b',') => i = ws(b, i + 1),
            Some(b'}') => return Some(i + 1),
            _ => return None,
        }
    }
}

/// The offset after the string starting at `at` (its opening quote).
fn string_end(b: &[u8], at: usize) -> Option<usize> {
    if b.get(at) != Some(&b'"') {
        return None;
    }
    let mut i = at + 1;
    loop {
        match b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// The offset after the value starting at `at`.
fn value_end(b: &[u8], at: usize) -> Option<usize> {
    match b.get(at)? {
        b'"' => string_end(b, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match b.get(i)? {
                    b'"' => {
                        i = string_end(b, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let mut i = at;
            while b
                .get(i)
                .is_some_and(|c| !matches!(c, b',' | b'}' | b']') && !c.is_ascii_whitespace())
            {
                i += 1;
            }
            (i > at).then_some(i)
        }
    }
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
        let g = r#"{"data":{"head_seq":9},"seq" : 5}"#;
        assert_eq!(
            fields(g).and_then(|f| f.seq),
            Some(5),
            "head_seq is another key"
        );
    }

    #[test]
    fn one_pass_finds_the_same_fields() {
        let f = r#"{"v":1,"type":"event","room":"r1","seq":44,"at":1,"actor":"a","kind":"message_created","data":{"id":"x","room":"r9","seq":7,"tags":[{"a":"}"}],"note":"q\"}","body":"R|1|2|3|..","deleted":false}}"#;
        assert_eq!(
            fields(f),
            Some(Fields {
                kind_of_frame: Some("event"),
                room: Some("r1"),
                seq: Some(44),
                kind: Some("message_created"),
                id: None,
                body: Some("R|1|2|3|.."),
            })
        );
        let ack = r#"{"v":1,"type":"ack","id":"p7","result":{"seq":3,"room":"x"}}"#;
        let got = fields(ack).expect("an object");
        assert_eq!(got.kind_of_frame, Some("ack"));
        assert_eq!(got.id, Some("p7"));
        assert_eq!(got.seq, None, "only top-level fields");
        assert_eq!(got.room, None);
        assert_eq!(fields("2"), None);
        assert_eq!(fields(r#"{"type":"event","room""#), None, "cut short");
    }
}
