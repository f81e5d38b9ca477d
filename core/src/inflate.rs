//! Reading the server's messages within what the protocol can carry.
//!
//! With `compress=deflate` the server may send a binary message: raw DEFLATE of one or more JSON
//! frames joined by `\n` (docs/protocol.md §2). A few kilobytes of DEFLATE can inflate to
//! gigabytes, so a message is never inflated whole: [`Inflater`] inflates it in chunks of
//! [`CHUNK`] bytes and hands out one frame at a time, keeping only the frame being read. It
//! stops — a protocol violation that ends the connection — as soon as the message inflates
//! past [`MAX_MESSAGE_BYTES`] or one frame grows past [`MAX_FRAME_BYTES`]; nothing is allocated
//! up front, buffers grow as output arrives.
//!
//! **The bounds.** Every frame is at most `roam_proto::validate::MAX_FRAME_BYTES` (1 MiB) in
//! either direction, except that an event's envelope (`v`, `type`, `room`, `seq`, `at`, `actor`,
//! `kind`: at most about 500 bytes) may come on top of data as large as a 1 MiB request allowed,
//! hence [`FRAME_SLACK`]. The largest message the server sends is a catch-up page: up to 512
//! events whose stored data adds up to at most 1 MiB (a page holding a single event may hold one
//! event of any size, itself within a frame), plus their envelopes (512 × ~500 bytes ≈ 250 KiB).
//! A page from the server's memory of recent events is at most 1 MiB of encoded frames. So a
//! message is at most about 1.25 MiB inflated; [`MAX_MESSAGE_BYTES`] allows 2 MiB.

use std::io::{Cursor, Read};

use tokio_tungstenite::tungstenite::Bytes;

/// Room on top of the protocol's frame limit for an event's envelope.
pub(crate) const FRAME_SLACK: usize = 64 * 1024;

/// The longest single JSON frame the core reads: the protocol's frame limit plus an envelope.
pub(crate) const MAX_FRAME_BYTES: usize = roam_proto::validate::MAX_FRAME_BYTES + FRAME_SLACK;

/// The most a message from the server may hold (inflated when compressed): a catch-up page with
/// room to spare (see the module docs). It is also the WebSocket message and frame limit of the
/// connection, so no message, compressed or not, is read into memory past it.
pub(crate) const MAX_MESSAGE_BYTES: usize = 2 * roam_proto::validate::MAX_FRAME_BYTES;

/// Inflated bytes asked of the decoder at a time.
pub(crate) const CHUNK: usize = 16 * 1024;

/// Why a message from the server was refused. Each one ends the connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Violation {
    #[error("a compressed message from the server inflates past {limit} bytes")]
    MessageTooLarge { limit: usize },
    #[error("a frame from the server is longer than {limit} bytes")]
    FrameTooLarge { limit: usize },
    #[error("a compressed message from the server is corrupt: {0}")]
    Corrupt(#[from] std::io::Error),
    #[error("a message from the server is over the limit: {0}")]
    Oversized(tokio_tungstenite::tungstenite::error::CapacityError),
}

/// One compressed message being read, frame by frame.
pub(crate) struct Inflater {
    decoder: flate2::read::DeflateDecoder<Cursor<Bytes>>,
    /// Inflated bytes not handed out yet; `buf[start..]` is the rest of the current frame.
    buf: Vec<u8>,
    start: usize,
    /// `buf[start..scanned]` holds no `\n`.
    scanned: usize,
    /// Bytes inflated so far.
    inflated: usize,
    /// The decoder has no more output.
    ended: bool,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("inflated", &self.inflated)
            .field("buffered", &(self.buf.len() - self.start))
            .field("ended", &self.ended)
            .finish()
    }
}

impl Inflater {
    /// Starts reading `packed` (raw DEFLATE, RFC 1951). Nothing is inflated yet.
    pub(crate) fn new(packed: Bytes) -> Self {
        Inflater {
            decoder: flate2::read::DeflateDecoder::new(Cursor::new(packed)),
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            inflated: 0,
            ended: false,
        }
    }

    /// Bytes inflated so far: never more than [`MAX_MESSAGE_BYTES`] + [`CHUNK`].
    pub(crate) fn inflated(&self) -> usize {
        self.inflated
    }

    /// Compressed bytes read so far.
    #[cfg(test)]
    pub(crate) fn consumed(&self) -> u64 {
        self.decoder.total_in()
    }

    /// The next frame of the message (without its `\n`), or `None` once it is over. Empty
    /// frames (two `\n` in a row, a trailing `\n`) are skipped.
    pub(crate) fn next_frame(&mut self) -> Result<Option<&[u8]>, Violation> {
        loop {
            if let Some(i) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                let (from, to) = (self.start, self.scanned + i);
                if to - from > MAX_FRAME_BYTES {
                    return Err(Violation::FrameTooLarge {
                        limit: MAX_FRAME_BYTES,
                    });
                }
                self.start = to + 1;
                self.scanned = self.start;
                if to > from {
                    return Ok(Some(&self.buf[from..to]));
                }
                continue;
            }
            self.scanned = self.buf.len();
            if self.buf.len() - self.start > MAX_FRAME_BYTES {
                return Err(Violation::FrameTooLarge {
                    limit: MAX_FRAME_BYTES,
                });
            }
            if self.ended {
                if self.start == self.buf.len() {
                    return Ok(None);
                }
                let from = self.start;
                self.start = self.buf.len();
                self.scanned = self.start;
                return Ok(Some(&self.buf[from..]));
            }
            self.fill()?;
        }
    }

    /// Inflates up to one more [`CHUNK`] onto the current frame.
    fn fill(&mut self) -> Result<(), Violation> {
        // What was handed out goes; the current frame moves to the front.
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + CHUNK, 0);
        let read = self.decoder.read(&mut self.buf[len..]);
        let n = match read {
            Ok(n) => n,
            Err(err) => {
                self.buf.truncate(len);
                return Err(Violation::Corrupt(err));
            }
        };
        self.buf.truncate(len + n);
        if n == 0 {
            self.ended = true;
            return Ok(());
        }
        self.inflated += n;
        if self.inflated > MAX_MESSAGE_BYTES {
            return Err(Violation::MessageTooLarge {
                limit: MAX_MESSAGE_BYTES,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    pub(crate) fn deflate(data: &[u8]) -> Bytes {
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(data).expect("deflate");
        Bytes::from(enc.finish().expect("deflate"))
    }

    fn frames(inf: &mut Inflater) -> Result<Vec<String>, Violation> {
        let mut out = Vec::new();
        while let Some(f) = inf.next_frame()? {
            out.push(String::from_utf8_lossy(f).into_owned());
        }
        Ok(out)
    }

    #[test]
    fn hands_out_frames_in_order_across_chunks() {
        let lines: Vec<String> = (0..5000)
            .map(|i| format!("{{\"v\":1,\"type\":\"pong\",\"id\":\"p{i}\"}}"))
            .collect();
        let mut inf = Inflater::new(deflate(lines.join("\n").as_bytes()));
        assert_eq!(frames(&mut inf).expect("frames"), lines);
        // Empty frames are skipped; a trailing newline ends nothing.
        let mut inf = Inflater::new(deflate(b"a\n\nb\n"));
        assert_eq!(frames(&mut inf).expect("frames"), ["a", "b"]);
    }

    #[test]
    fn a_deflate_bomb_stops_at_the_bound_without_inflating_it_whole() {
        // 64 MiB of spaces: about 64 KB of DEFLATE.
        let bomb = deflate(&vec![b' '; 64 << 20]);
        assert!(bomb.len() < 100 * 1024, "{}", bomb.len());
        let packed_len = bomb.len() as u64;
        let mut inf = Inflater::new(bomb);
        let err = frames(&mut inf).expect_err("refused");
        // One long line: refused as a frame past the frame limit, long before the end.
        assert!(matches!(err, Violation::FrameTooLarge { .. }), "{err}");
        assert!(
            inf.inflated() <= MAX_FRAME_BYTES + CHUNK,
            "{}",
            inf.inflated()
        );
        assert!(
            inf.consumed() < packed_len / 4,
            "{} of {packed_len}",
            inf.consumed()
        );
        assert!(inf.buf.capacity() <= 2 * (MAX_FRAME_BYTES + CHUNK));

        // Many small frames: refused once the message passes its bound.
        let line = "{\"v\":1,\"type\":\"pong\",\"id\":\"p\"}\n";
        let bomb = deflate(line.repeat((64 << 20) / line.len()).as_bytes());
        let packed_len = bomb.len() as u64;
        let mut inf = Inflater::new(bomb);
        let mut n = 0usize;
        let err = loop {
            match inf.next_frame() {
                Ok(Some(_)) => n += 1,
                Ok(None) => panic!("a 64 MiB message was read to its end"),
                Err(err) => break err,
            }
        };
        assert!(matches!(err, Violation::MessageTooLarge { .. }), "{err}");
        assert!(
            inf.inflated() <= MAX_MESSAGE_BYTES + CHUNK,
            "{}",
            inf.inflated()
        );
        assert!(n <= MAX_MESSAGE_BYTES / line.len(), "{n}");
        assert!(
            inf.consumed() < packed_len / 4,
            "{} of {packed_len}",
            inf.consumed()
        );
        // Only the frame being read is kept.
        assert!(inf.buf.capacity() <= 4 * CHUNK, "{}", inf.buf.capacity());
    }

    #[test]
    fn a_message_at_the_bound_is_read_whole() {
        let line = format!("{}\n", "x".repeat(1000));
        let data = line.repeat(MAX_MESSAGE_BYTES / line.len());
        let mut inf = Inflater::new(deflate(data.as_bytes()));
        let got = frames(&mut inf).expect("within the bound");
        assert_eq!(got.len(), MAX_MESSAGE_BYTES / line.len());
        assert_eq!(inf.inflated(), data.len());
        // One frame at the frame limit.
        let big = "y".repeat(MAX_FRAME_BYTES);
        let mut inf = Inflater::new(deflate(big.as_bytes()));
        assert_eq!(frames(&mut inf).expect("within the bound"), [big]);
    }

    #[test]
    fn corrupt_deflate_is_refused() {
        let mut inf = Inflater::new(Bytes::from_static(&[0xff; 64]));
        assert!(matches!(frames(&mut inf), Err(Violation::Corrupt(_))));
    }
}
