//! WebSocket framing (RFC 6455) for the gateway, written for fan-out.
//!
//! A server frame is unmasked, so its bytes on the wire are the same for every socket that gets
//! it. [`WireFrame`] holds those bytes — header and payload in one shared buffer, the payload
//! serialised straight after room reserved for the header — so a room event is framed once and
//! every socket's writer hands the same buffer to a vectored write: no copy and no framing per
//! socket, only a reference count.
//!
//! [`FrameReader`] reads what clients send: masked text frames (fragmented or not), pings,
//! pongs and close frames, within a size limit. It parses from a buffer that starts small and
//! grows with the bytes that arrive (never by a frame's announced length), and gives a large
//! one back once it has been read. It checks text for UTF-8 fragment by fragment and close
//! frames as RFC 6455 §5.5.1 and §7.4 say, and counts unfinished messages against a budget
//! shared by every socket, with a timeout.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Close code for a frame that breaks RFC 6455 (unmasked, reserved bits, a bad opcode).
pub const PROTOCOL_ERROR: u16 = 1002;
/// Close code for a text message or close reason that is not UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// Close code for a message left unfinished too long, or one that would take the server past
/// its budget of unfinished messages (the client broke a policy of this server rather than the
/// protocol, and no single message was too big: 1008, not 1009).
pub const POLICY_VIOLATION: u16 = 1008;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// The longest server frame header: two bytes and a 64-bit length.
const HEAD_ROOM: usize = 10;

/// The header of an unmasked, final frame of `len` payload bytes; returns it and its length.
fn header(opcode: u8, len: usize) -> ([u8; HEAD_ROOM], usize) {
    let mut h = [0u8; HEAD_ROOM];
    h[0] = 0x80 | opcode;
    let n = if len < 126 {
        h[1] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (h, n)
}

/// A server frame as it goes on the wire, shared by every socket that sends it.
#[derive(Clone, Debug)]
pub struct WireFrame {
    wire: Bytes,
    head: u8,
}

impl WireFrame {
    /// Frames `buf`, whose first [`HEAD_ROOM`] bytes are reserved for the header: the payload
    /// is not copied.
    fn framed(mut buf: Vec<u8>, opcode: u8) -> WireFrame {
        let len = buf.len() - HEAD_ROOM;
        let (h, n) = header(opcode, len);
        let start = HEAD_ROOM - n;
        buf[start..HEAD_ROOM].copy_from_slice(&h[..n]);
        WireFrame {
            wire: Bytes::from(buf).slice(start..),
            head: n as u8,
        }
    }

    fn with_payload(opcode: u8, payload: &[u8]) -> WireFrame {
        let mut buf = WireFrame::buffer(payload.len());
        buf.extend_from_slice(payload);
        WireFrame::framed(buf, opcode)
    }

    /// An empty buffer with room for a frame's header, to write a payload into and frame with
    /// [`WireFrame::binary_in`].
    pub fn buffer(capacity: usize) -> Vec<u8> {
        let mut buf = Vec::with_capacity(HEAD_ROOM + capacity);
        buf.resize(HEAD_ROOM, 0);
        buf
    }

    /// A binary frame of what was written into `buf` after its header room (made by
    /// [`WireFrame::buffer`]).
    pub fn binary_in(buf: Vec<u8>) -> WireFrame {
        if buf.len() < HEAD_ROOM {
            return WireFrame::binary(&[]);
        }
        WireFrame::framed(buf, OP_BINARY)
    }

    /// A text frame holding `value` as JSON, serialised once into its final buffer.
    pub fn json<T: Serialize>(value: &T) -> Result<WireFrame, serde_json::Error> {
        let mut buf = WireFrame::buffer(246);
        serde_json::to_writer(&mut buf, value)?;
        Ok(WireFrame::framed(buf, OP_TEXT))
    }

    /// A text frame.
    pub fn text(text: &str) -> WireFrame {
        WireFrame::with_payload(OP_TEXT, text.as_bytes())
    }

    /// A binary frame.
    pub fn binary(payload: &[u8]) -> WireFrame {
        WireFrame::with_payload(OP_BINARY, payload)
    }

    /// A pong answering a ping with `payload`.
    pub fn pong(payload: &[u8]) -> WireFrame {
        WireFrame::with_payload(OP_PONG, payload)
    }

    /// A close frame with `code` and a short `reason` (cut to fit a control frame).
    pub fn close(code: u16, reason: &str) -> WireFrame {
        let mut payload = code.to_be_bytes().to_vec();
        let mut cut = reason.len().min(123);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        payload.extend_from_slice(&reason.as_bytes()[..cut]);
        WireFrame::with_payload(OP_CLOSE, &payload)
    }

    /// The payload (for a text frame, UTF-8 text).
    pub fn payload(&self) -> &[u8] {
        &self.wire[self.head as usize..]
    }

    /// The payload's length.
    pub fn len(&self) -> usize {
        self.wire.len() - self.head as usize
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole frame, header and payload.
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }
}

/// What a client sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A whole text message, checked to be UTF-8.
    Text(Bytes),
    /// A whole binary message.
    Binary(Bytes),
    /// A ping: answer with a pong carrying the same payload.
    Ping(Bytes),
    Pong,
    /// The client closes, with its code if it gave one (always one a client may send,
    /// [`close_code_may_be_sent`]; its reason was UTF-8).
    Close(Option<u16>),
}

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("socket read failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("message over {0} bytes")]
    TooBig(usize),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("invalid UTF-8 in a {0}")]
    InvalidUtf8(&'static str),
    #[error("a message still unfinished after {0:?}")]
    Unfinished(Duration),
    #[error("the server holds as many unfinished messages as it may")]
    OverBudget,
}

impl ReadError {
    /// The close code to answer with, if the client is still there to read one.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            ReadError::Io(_) => None,
            ReadError::TooBig(_) => Some(roam_proto::close::TOO_BIG),
            ReadError::Protocol(_) => Some(PROTOCOL_ERROR),
            ReadError::InvalidUtf8(_) => Some(INVALID_PAYLOAD),
            ReadError::Unfinished(_) | ReadError::OverBudget => Some(POLICY_VIOLATION),
        }
    }
}

/// True for a close code a peer may send (RFC 6455 §7.4.1 and §7.4.2, with the codes IANA
/// registered since: 1012–1014): 1000–1003, 1007–1014 and 3000–4999. 1004 is reserved; 1005,
/// 1006 and 1015 must never be sent; 0–999, the rest of 1000–2999 and 5000 up are not codes.
pub fn close_code_may_be_sent(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Reads a close frame's payload (RFC 6455 §5.5.1): empty, or a code a peer may send followed
/// by a UTF-8 reason.
fn close_frame(payload: &[u8]) -> Result<Incoming, ReadError> {
    match payload.len() {
        0 => Ok(Incoming::Close(None)),
        1 => Err(ReadError::Protocol("a close payload of one byte")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !close_code_may_be_sent(code) {
                return Err(ReadError::Protocol("a close code that may not be sent"));
            }
            if std::str::from_utf8(&payload[2..]).is_err() {
                return Err(ReadError::InvalidUtf8("close reason"));
            }
            Ok(Incoming::Close(Some(code)))
        }
    }
}

/// Checks the bytes of a text message after `checked` and moves `checked` past what is valid.
/// A code point cut at the end is let through until the final fragment (it may be completed by
/// the next one); anything else that is not UTF-8 fails at once.
fn check_utf8(bytes: &[u8], checked: &mut usize, fin: bool) -> Result<(), ReadError> {
    match std::str::from_utf8(&bytes[*checked..]) {
        Ok(_) => {
            *checked = bytes.len();
            Ok(())
        }
        Err(e) if e.error_len().is_none() && !fin => {
            *checked += e.valid_up_to();
            Ok(())
        }
        Err(_) => Err(ReadError::InvalidUtf8("text message")),
    }
}

/// The bytes of unfinished messages (frames partly received, fragments of a message without
/// its final fragment) that every socket's reader together may hold, and how long a message
/// may stay unfinished. Shared by every socket's [`FrameReader`].
#[derive(Debug)]
pub struct PartialBudget {
    max: usize,
    used: AtomicUsize,
    timeout: Duration,
    metrics: Option<Arc<Metrics>>,
}

impl PartialBudget {
    pub fn new(max: usize, timeout: Duration, metrics: Arc<Metrics>) -> PartialBudget {
        PartialBudget {
            max,
            used: AtomicUsize::new(0),
            timeout,
            metrics: Some(metrics),
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    fn publish(&self, used: usize) {
        if let Some(m) = &self.metrics {
            m.ws_partial_bytes.set(used as i64);
        }
    }

    fn take(&self, n: usize) -> bool {
        let before = self.used.fetch_add(n, Ordering::AcqRel);
        if before.saturating_add(n) > self.max {
            self.used.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        self.publish(before + n);
        true
    }

    fn give(&self, n: usize) {
        let before = self.used.fetch_sub(n, Ordering::AcqRel);
        self.publish(before.saturating_sub(n));
    }
}

/// A fragmented message being gathered.
#[derive(Debug)]
struct Partial {
    opcode: u8,
    gathered: BytesMut,
    /// How much of a text message is checked UTF-8.
    checked: usize,
}

/// Reads client frames into whole messages.
///
/// The read buffer grows with the bytes that arrive, never by a frame's announced length: a
/// header announcing 1 MiB costs nothing until the bytes come. With a [`PartialBudget`], what
/// an unfinished message holds (past [`FREE_BYTES`] per socket) is counted against it, and a
/// message unfinished for longer than its timeout ends the socket, pings or not.
#[derive(Debug)]
pub struct FrameReader {
    buf: BytesMut,
    /// Boxed: it exists only while a fragmented message is gathered, and every idle socket's
    /// reader holds this field.
    partial: Option<Box<Partial>>,
    max: usize,
    /// `u32`s, like `held`: every idle socket's reader holds these.
    read_size: u32,
    budget: Option<Arc<PartialBudget>>,
    /// Bytes counted against the budget now.
    held: u32,
    /// When the current message began, while it is unfinished.
    unfinished_since: Option<Instant>,
}

/// A buffer this large or larger is dropped once empty, so a burst or a large message does not
/// stay with an idle socket.
const KEEP_AT_MOST: usize = 8 * 1024;

/// Unfinished bytes a socket holds without counting them against the [`PartialBudget`]: a
/// chat frame split across two reads costs no shared counter.
pub const FREE_BYTES: usize = 4 * 1024;

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

impl FrameReader {
    /// A reader of messages up to `max` bytes, reading `read_size` bytes at a time, with no
    /// budget or timeout for unfinished messages.
    pub fn new(max: usize, read_size: usize) -> FrameReader {
        FrameReader {
            buf: BytesMut::new(),
            partial: None,
            max,
            read_size: u32::try_from(read_size.max(16)).unwrap_or(u32::MAX),
            budget: None,
            held: 0,
            unfinished_since: None,
        }
    }

    /// A reader whose unfinished messages count against `budget` and its timeout.
    pub fn with_budget(max: usize, read_size: usize, budget: Arc<PartialBudget>) -> FrameReader {
        let mut r = FrameReader::new(max, read_size);
        r.budget = Some(budget);
        r
    }

    /// Reads the next message; `None` when the client closed the connection.
    pub async fn read<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
    ) -> Result<Option<Incoming>, ReadError> {
        loop {
            let got = self.parse()?;
            if self.buf.is_empty() && self.buf.capacity() >= KEEP_AT_MOST {
                self.buf = BytesMut::new();
            }
            if let Some(m) = got {
                return Ok(Some(m));
            }
            // Grow with what arrives: at most double what is held, never to a frame's
            // announced length.
            self.buf
                .reserve((self.read_size as usize).max(self.buf.len().min(self.max)));
            let n = if self.budget.is_some() && self.unfinished_since.is_some() {
                // Boxed: an idle socket's reader waits in the other branch, and a timer would
                // size its future.
                Box::pin(self.read_unfinished(io)).await?
            } else {
                io.read_buf(&mut self.buf).await?
            };
            if n == 0 {
                return Ok(None);
            }
        }
    }

    /// Reads more of an unfinished message, within what is left of its time.
    async fn read_unfinished<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
    ) -> Result<usize, ReadError> {
        let (Some(b), Some(since)) = (&self.budget, self.unfinished_since) else {
            return Ok(io.read_buf(&mut self.buf).await?);
        };
        let timeout = b.timeout;
        match tokio::time::timeout_at(since + timeout, io.read_buf(&mut self.buf)).await {
            Ok(n) => Ok(n?),
            Err(_) => Err(ReadError::Unfinished(timeout)),
        }
    }

    /// Takes one message out of what was read, if a whole one is there.
    pub fn parse(&mut self) -> Result<Option<Incoming>, ReadError> {
        if let (Some(b), Some(since)) = (&self.budget, self.unfinished_since) {
            if since.elapsed() >= b.timeout {
                return Err(ReadError::Unfinished(b.timeout));
            }
        }
        let got = self.take_frames()?;
        self.account(got.is_some())?;
        Ok(got)
    }

    /// Notes when the current message began and counts what unfinished messages hold against
    /// the budget.
    fn account(&mut self, completed: bool) -> Result<(), ReadError> {
        let pending = self.buf.len() + self.partial.as_ref().map_or(0, |p| p.gathered.len());
        if pending == 0 {
            self.unfinished_since = None;
        } else if (completed && self.partial.is_none()) || self.unfinished_since.is_none() {
            // What is left after a whole frame begins the next message.
            self.unfinished_since = Some(Instant::now());
        }
        let Some(budget) = &self.budget else {
            return Ok(());
        };
        let want = if pending > FREE_BYTES { pending } else { 0 };
        let held = self.held as usize;
        if want > held {
            if !budget.take(want - held) {
                return Err(ReadError::OverBudget);
            }
        } else if want < held {
            budget.give(held - want);
        }
        // At most two largest messages: fits.
        self.held = u32::try_from(want).unwrap_or(u32::MAX);
        Ok(())
    }

    /// Takes frames until one makes a message (or a control frame) or the buffer runs out.
    fn take_frames(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            let Some((fin, opcode, mask, at, len)) = self.header()? else {
                return Ok(None);
            };
            if self.buf.len() < at + len {
                // The rest comes read by read (see `read`).
                return Ok(None);
            }
            self.buf.advance(at);
            let mut payload = self.buf.split_to(len);
            unmask(&mut payload, mask);
            match opcode {
                OP_PING => return Ok(Some(Incoming::Ping(payload.freeze()))),
                OP_PONG => return Ok(Some(Incoming::Pong)),
                OP_CLOSE => return close_frame(&payload).map(Some),
                OP_CONTINUATION => {
                    let Some(p) = self.partial.as_mut() else {
                        return Err(ReadError::Protocol("continuation without a message"));
                    };
                    p.gathered.extend_from_slice(&payload);
                    if p.opcode == OP_TEXT {
                        check_utf8(&p.gathered, &mut p.checked, fin)?;
                    }
                    if !fin {
                        continue;
                    }
                    let Some(p) = self.partial.take() else {
                        continue;
                    };
                    return Ok(Some(message(p.opcode, p.gathered.freeze())));
                }
                _ => {
                    if self.partial.is_some() {
                        return Err(ReadError::Protocol("new message inside a fragmented one"));
                    }
                    let mut checked = 0;
                    if opcode == OP_TEXT {
                        check_utf8(&payload, &mut checked, fin)?;
                    }
                    if fin {
                        return Ok(Some(message(opcode, payload.freeze())));
                    }
                    self.partial = Some(Box::new(Partial {
                        opcode,
                        gathered: payload,
                        checked,
                    }));
                }
            }
        }
    }

    /// Reads the header at the front of the buffer: (final, opcode, mask, header length,
    /// payload length). Checks the rules a header alone can break, sizes included, before any
    /// of the payload is waited for.
    #[allow(clippy::type_complexity)]
    fn header(&self) -> Result<Option<(bool, u8, [u8; 4], usize, usize)>, ReadError> {
        let b = &self.buf[..];
        if b.len() < 2 {
            return Ok(None);
        }
        let fin = b[0] & 0x80 != 0;
        if b[0] & 0x70 != 0 {
            return Err(ReadError::Protocol("reserved bits set"));
        }
        let opcode = b[0] & 0x0F;
        if b[1] & 0x80 == 0 {
            return Err(ReadError::Protocol("client frames must be masked"));
        }
        let (len, at) = match b[1] & 0x7F {
            126 => {
                if b.len() < 4 {
                    return Ok(None);
                }
                (u16::from_be_bytes([b[2], b[3]]) as u64, 4)
            }
            127 => {
                if b.len() < 10 {
                    return Ok(None);
                }
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(n), 10)
            }
            n => (n as u64, 2),
        };
        match opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                if !fin || len > 125 {
                    return Err(ReadError::Protocol("control frames are final and short"));
                }
            }
            OP_CONTINUATION | OP_TEXT | OP_BINARY => {
                let before = self.partial.as_ref().map_or(0, |p| p.gathered.len() as u64);
                if before.saturating_add(len) > self.max as u64 {
                    return Err(ReadError::TooBig(self.max));
                }
            }
            _ => return Err(ReadError::Protocol("unknown opcode")),
        }
        if b.len() < at + 4 {
            return Ok(None);
        }
        let mask = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        Ok(Some((fin, opcode, mask, at + 4, len as usize)))
    }
}

impl Drop for FrameReader {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            if self.held > 0 {
                b.give(self.held as usize);
            }
        }
    }
}

fn message(opcode: u8, payload: Bytes) -> Incoming {
    if opcode == OP_TEXT {
        Incoming::Text(payload)
    } else {
        Incoming::Binary(payload)
    }
}

/// Most slices handed to one vectored write.
const MAX_SLICES: usize = 64;

/// Writes every chunk in `chunks` (in order) with vectored writes, removing what was written;
/// on an error what is left stays in `chunks`.
pub async fn write_chunks<W: AsyncWrite + Unpin>(
    io: &mut W,
    chunks: &mut std::collections::VecDeque<Bytes>,
) -> std::io::Result<()> {
    while !chunks.is_empty() {
        let n = std::future::poll_fn(|cx| poll_write_some(Pin::new(&mut *io), cx, chunks)).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let mut left = n;
        while left > 0 {
            let Some(front) = chunks.front_mut() else {
                break;
            };
            if front.len() <= left {
                left -= front.len();
                chunks.pop_front();
            } else {
                front.advance(left);
                left = 0;
            }
        }
    }
    Ok(())
}

fn poll_write_some<W: AsyncWrite>(
    io: Pin<&mut W>,
    cx: &mut Context<'_>,
    chunks: &std::collections::VecDeque<Bytes>,
) -> Poll<std::io::Result<usize>> {
    let mut slices = [IoSlice::new(&[]); MAX_SLICES];
    let mut n = 0;
    for (slot, c) in slices.iter_mut().zip(chunks.iter()) {
        *slot = IoSlice::new(c);
        n += 1;
    }
    io.poll_write_vectored(cx, &slices[..n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use tokio::io::AsyncWriteExt;

    /// A client frame as a client would mask it.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= u16::MAX as usize {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn reader_with(bytes: &[u8]) -> FrameReader {
        let mut r = FrameReader::new(1 << 20, 512);
        r.buf.extend_from_slice(bytes);
        r
    }

    #[test]
    fn server_frames_carry_the_shortest_header_before_the_payload() {
        for len in [0usize, 125, 126, 65_535, 65_536] {
            let text = "x".repeat(len);
            let f = WireFrame::text(&text);
            let w = f.wire();
            assert_eq!(w[0], 0x81, "final text frame");
            let head = match len {
                0..=125 => {
                    assert_eq!(w[1] as usize, len);
                    2
                }
                126..=65_535 => {
                    assert_eq!(w[1], 126);
                    assert_eq!(u16::from_be_bytes([w[2], w[3]]) as usize, len);
                    4
                }
                _ => {
                    assert_eq!(w[1], 127);
                    10
                }
            };
            assert_eq!(w.len(), head + len);
            assert_eq!(f.payload(), text.as_bytes());
            assert_eq!(f.len(), len);
        }
        let j = WireFrame::json(&serde_json::json!({"a": 1})).expect("json");
        assert_eq!(j.payload(), br#"{"a":1}"#);
        assert_eq!(&j.wire()[..2], &[0x81, 7]);
        let c = WireFrame::close(4008, "slow consumer");
        assert_eq!(c.wire()[0], 0x88);
        assert_eq!(&c.payload()[..2], &4008u16.to_be_bytes());
        assert_eq!(&c.payload()[2..], b"slow consumer");
    }

    #[test]
    fn masked_frames_become_messages_and_fragments_are_joined() {
        let mut bytes = client_frame(true, OP_TEXT, b"hello");
        bytes.extend(client_frame(false, OP_TEXT, b"frag"));
        bytes.extend(client_frame(true, OP_PING, b"hb"));
        bytes.extend(client_frame(false, OP_CONTINUATION, b"men"));
        bytes.extend(client_frame(true, OP_CONTINUATION, b"ted"));
        bytes.extend(client_frame(true, OP_BINARY, &[1, 2, 3]));
        bytes.extend(client_frame(true, OP_CLOSE, &1000u16.to_be_bytes()));
        let mut r = reader_with(&bytes);
        let got: Vec<Incoming> = std::iter::from_fn(|| r.parse().expect("valid")).collect();
        assert_eq!(
            got,
            vec![
                Incoming::Text(Bytes::from_static(b"hello")),
                Incoming::Ping(Bytes::from_static(b"hb")),
                Incoming::Text(Bytes::from_static(b"fragmented")),
                Incoming::Binary(Bytes::from_static(&[1, 2, 3])),
                Incoming::Close(Some(1000)),
            ]
        );
    }

    #[test]
    fn a_partial_frame_waits_for_the_rest() {
        let payload = "y".repeat(300);
        let bytes = client_frame(true, OP_TEXT, payload.as_bytes());
        for cut in [1, 2, 3, 5, 8, bytes.len() - 1] {
            let mut r = reader_with(&bytes[..cut]);
            assert_eq!(r.parse().expect("valid so far"), None, "cut at {cut}");
            r.buf.extend_from_slice(&bytes[cut..]);
            assert_eq!(
                r.parse().expect("valid"),
                Some(Incoming::Text(Bytes::from(payload.clone())))
            );
        }
    }

    #[test]
    fn broken_frames_are_refused_with_the_right_code() {
        let unmasked = [0x81u8, 0x01, b'a'];
        let reserved = {
            let mut f = client_frame(true, OP_TEXT, b"a");
            f[0] |= 0x40;
            f
        };
        let long_ping = client_frame(true, OP_PING, &[0u8; 126]);
        let fragmented_ping = client_frame(false, OP_PING, b"p");
        let stray = client_frame(true, OP_CONTINUATION, b"x");
        let unknown = client_frame(true, 0x3, b"x");
        let mut nested = client_frame(false, OP_TEXT, b"a");
        nested.extend(client_frame(true, OP_TEXT, b"b"));
        for (name, bytes) in [
            ("unmasked", &unmasked[..]),
            ("reserved", &reserved[..]),
            ("long ping", &long_ping[..]),
            ("fragmented ping", &fragmented_ping[..]),
            ("stray continuation", &stray[..]),
            ("unknown opcode", &unknown[..]),
            ("nested", &nested[..]),
        ] {
            let mut r = reader_with(bytes);
            let err = loop {
                match r.parse() {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("{name}: accepted"),
                    Err(e) => break e,
                }
            };
            assert_eq!(err.close_code(), Some(PROTOCOL_ERROR), "{name}: {err}");
        }
    }

    #[test]
    fn a_message_over_the_limit_is_refused_from_its_header() {
        let mut r = FrameReader::new(100, 512);
        // Only the header of a 101-byte frame: refused before its payload comes.
        let f = client_frame(true, OP_TEXT, &[b'a'; 101]);
        r.buf.extend_from_slice(&f[..6]);
        assert_eq!(
            r.parse().expect_err("too big").close_code(),
            Some(roam_proto::close::TOO_BIG)
        );
        // Fragments that only add up to too much.
        let mut r = FrameReader::new(100, 512);
        r.buf.extend(client_frame(false, OP_TEXT, &[b'a'; 60]));
        r.buf
            .extend(client_frame(true, OP_CONTINUATION, &[b'a'; 60]));
        assert!(matches!(r.parse(), Err(ReadError::TooBig(100))));
        // Exactly the limit is fine.
        let mut r = FrameReader::new(100, 512);
        r.buf.extend(client_frame(true, OP_TEXT, &[b'a'; 100]));
        assert!(matches!(r.parse(), Ok(Some(Incoming::Text(t))) if t.len() == 100));
    }

    #[tokio::test]
    async fn reads_across_socket_reads_and_gives_a_large_buffer_back() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let big = "z".repeat(20_000);
        let frames = [
            client_frame(true, OP_TEXT, big.as_bytes()),
            client_frame(true, OP_TEXT, b"small"),
        ];
        let writer = tokio::spawn(async move {
            for f in frames {
                client.write_all(&f).await.expect("write");
            }
            client
        });
        let mut r = FrameReader::new(1 << 20, 512);
        let first = r.read(&mut server).await.expect("read");
        assert_eq!(first, Some(Incoming::Text(Bytes::from(big))));
        let second = r.read(&mut server).await.expect("read");
        assert_eq!(second, Some(Incoming::Text(Bytes::from_static(b"small"))));
        assert!(
            r.buf.capacity() < KEEP_AT_MOST,
            "the large buffer went back"
        );
        drop(writer.await.expect("writer"));
        assert_eq!(r.read(&mut server).await.expect("eof"), None);
    }

    /// The first error parsing `bytes` gives (panics if they are all accepted).
    fn first_error(bytes: &[u8]) -> ReadError {
        let mut r = reader_with(bytes);
        loop {
            match r.parse() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("accepted: {bytes:?}"),
                Err(e) => return e,
            }
        }
    }

    #[test]
    fn close_frames_are_checked_as_rfc_6455_says() {
        // A one-byte payload cannot hold a code.
        let e = first_error(&client_frame(true, OP_CLOSE, &[0x03]));
        assert_eq!(e.close_code(), Some(PROTOCOL_ERROR), "{e}");
        // Codes that may not be sent.
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            let e = first_error(&client_frame(true, OP_CLOSE, &code.to_be_bytes()));
            assert_eq!(e.close_code(), Some(PROTOCOL_ERROR), "code {code}: {e}");
        }
        // A reason that is not UTF-8.
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(&[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xff]);
        let e = first_error(&client_frame(true, OP_CLOSE, &payload));
        assert_eq!(e.close_code(), Some(INVALID_PAYLOAD), "{e}");
        // Codes a client may send, with or without a reason; and no code at all.
        for code in [
            1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend_from_slice("κόσμε".as_bytes());
            let mut r = reader_with(&client_frame(true, OP_CLOSE, &payload));
            assert_eq!(r.parse().expect("valid"), Some(Incoming::Close(Some(code))));
        }
        let mut r = reader_with(&client_frame(true, OP_CLOSE, &[]));
        assert_eq!(r.parse().expect("valid"), Some(Incoming::Close(None)));
    }

    #[test]
    fn invalid_utf8_fails_on_the_fragment_that_brings_it() {
        // The first fragment is already not UTF-8: refused before any other comes.
        let e = first_error(&client_frame(false, OP_TEXT, &[b'a', 0xff]));
        assert_eq!(e.close_code(), Some(INVALID_PAYLOAD), "{e}");
        // A bad continuation byte right after a cut code point, in the next fragment.
        let mut bytes = client_frame(false, OP_TEXT, &[b'a', 0xe2]);
        bytes.extend(client_frame(false, OP_CONTINUATION, &[0x28]));
        let e = first_error(&bytes);
        assert_eq!(e.close_code(), Some(INVALID_PAYLOAD), "{e}");
        // A code point cut at the end of the final fragment.
        let mut bytes = client_frame(false, OP_TEXT, b"ok");
        bytes.extend(client_frame(true, OP_CONTINUATION, &[0xe2, 0x82]));
        let e = first_error(&bytes);
        assert_eq!(e.close_code(), Some(INVALID_PAYLOAD), "{e}");
        // One frame, not fragmented.
        let e = first_error(&client_frame(true, OP_TEXT, &[0xc0, 0xaf]));
        assert_eq!(e.close_code(), Some(INVALID_PAYLOAD), "{e}");
        // A code point split over three fragments is fine.
        let euro = "€".as_bytes();
        let mut bytes = client_frame(false, OP_TEXT, &[b'[', euro[0]]);
        bytes.extend(client_frame(false, OP_CONTINUATION, &euro[1..2]));
        bytes.extend(client_frame(true, OP_CONTINUATION, &[euro[2], b']']));
        let mut r = reader_with(&bytes);
        assert_eq!(
            r.parse().expect("valid"),
            Some(Incoming::Text(Bytes::from("[€]")))
        );
    }

    #[tokio::test]
    async fn the_buffer_grows_with_what_arrives_not_with_the_announced_length() {
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let frame = client_frame(true, OP_TEXT, &vec![b'a'; 1 << 20]);
        // The header and 100 bytes of a 1 MiB frame, then nothing more for now.
        client.write_all(&frame[..14 + 100]).await.expect("write");
        let mut r = FrameReader::new(1 << 20, 512);
        let read = tokio::time::timeout(Duration::from_millis(200), r.read(&mut server));
        assert!(read.await.is_err(), "the frame is not whole yet");
        assert!(
            r.buf.capacity() < 16 * 1024,
            "{} bytes reserved for 114 received",
            r.buf.capacity()
        );
        // The rest comes and the message is whole.
        let rest = frame[14 + 100..].to_vec();
        tokio::spawn(async move {
            client.write_all(&rest).await.expect("write");
            client
        });
        let got = r.read(&mut server).await.expect("read");
        assert!(matches!(got, Some(Incoming::Text(t)) if t.len() == 1 << 20));
    }

    fn budget(max: usize, timeout_ms: u64) -> Arc<PartialBudget> {
        Arc::new(PartialBudget::new(
            max,
            Duration::from_millis(timeout_ms),
            Arc::new(Metrics::new()),
        ))
    }

    #[test]
    fn unfinished_messages_share_one_budget() {
        let b = budget(20_000, 60_000);
        let mut first = FrameReader::with_budget(1 << 20, 512, Arc::clone(&b));
        first
            .buf
            .extend(client_frame(false, OP_TEXT, &[b'a'; 12_000]));
        assert_eq!(first.parse().expect("within the budget"), None);
        assert!(b.used() >= 12_000, "{} counted", b.used());
        // A second socket's fragment that would pass the budget ends that socket.
        let mut second = FrameReader::with_budget(1 << 20, 512, Arc::clone(&b));
        second
            .buf
            .extend(client_frame(false, OP_TEXT, &[b'a'; 12_000]));
        let e = second.parse().expect_err("over the budget");
        assert_eq!(e.close_code(), Some(POLICY_VIOLATION), "{e}");
        drop(second);
        // Finishing the message gives its bytes back; so does a reader that goes away.
        first
            .buf
            .extend(client_frame(true, OP_CONTINUATION, b"end"));
        assert!(matches!(first.parse(), Ok(Some(Incoming::Text(_)))));
        assert_eq!(b.used(), 0);
        first
            .buf
            .extend(client_frame(false, OP_TEXT, &[b'a'; 12_000]));
        assert_eq!(first.parse().expect("within the budget"), None);
        assert!(b.used() > 0);
        drop(first);
        assert_eq!(b.used(), 0);
        // A chat frame split over two reads costs nothing shared.
        let mut small = FrameReader::with_budget(1 << 20, 512, Arc::clone(&b));
        small
            .buf
            .extend_from_slice(&client_frame(true, OP_TEXT, &[b'a'; 300])[..100]);
        assert_eq!(small.parse().expect("valid so far"), None);
        assert_eq!(b.used(), 0);
    }

    #[tokio::test]
    async fn a_message_left_unfinished_times_out_whatever_pings_come() {
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let mut r = FrameReader::with_budget(1 << 20, 512, budget(1 << 24, 300));
        client
            .write_all(&client_frame(false, OP_TEXT, b"{\"v\":"))
            .await
            .expect("write");
        let mut pongs = 0;
        let err = loop {
            assert!(pongs < 200, "still open after {pongs} pings");
            client
                .write_all(&client_frame(true, OP_PING, b"hb"))
                .await
                .expect("write");
            match r.read(&mut server).await {
                Ok(Some(Incoming::Ping(_))) => pongs += 1,
                Ok(other) => panic!("unexpected {other:?}"),
                Err(e) => break e,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(matches!(err, ReadError::Unfinished(_)), "{err}");
        assert_eq!(err.close_code(), Some(POLICY_VIOLATION));
        assert!(pongs > 0, "pings were answered meanwhile");
        // A reader waiting for the rest of a frame times out too, with no pings.
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let mut r = FrameReader::with_budget(1 << 20, 512, budget(1 << 24, 200));
        client
            .write_all(&client_frame(true, OP_TEXT, b"{}")[..4])
            .await
            .expect("write");
        let e = r.read(&mut server).await.expect_err("timed out");
        assert!(matches!(e, ReadError::Unfinished(_)), "{e}");
    }

    #[tokio::test]
    async fn chunks_go_out_whole_and_in_order_through_short_writes() {
        let (mut a, mut b) = tokio::io::duplex(7);
        let mut chunks: VecDeque<Bytes> =
            (0..200u32).map(|i| Bytes::from(format!("<{i}>"))).collect();
        let expected: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.expect("read");
            got
        });
        write_chunks(&mut a, &mut chunks).await.expect("write");
        assert!(chunks.is_empty());
        drop(a);
        assert_eq!(reader.await.expect("reader"), expected);
    }
}
