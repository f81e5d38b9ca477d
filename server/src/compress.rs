//! Compression of large WebSocket frames (negotiated with `compress=deflate` on `/v1/ws`).
//!
//! A compressed frame is a binary WebSocket message holding raw DEFLATE (RFC 1951) of one or
//! more JSON frames separated by `\n`. Live events are compressed once and the result shared by
//! every socket that asked for it; a catch-up page is compressed as one message.

use std::io::Write;

use flate2::write::DeflateEncoder;
use flate2::Compression;

use crate::wsframe::WireFrame;

/// The value of the `compress` query parameter that turns compression on.
pub const DEFLATE: &str = "deflate";

/// A binary frame holding raw DEFLATE of `data` (compressed straight into the frame's buffer).
pub fn deflate(data: &[u8]) -> WireFrame {
    let mut enc = DeflateEncoder::new(WireFrame::buffer(data.len() / 3 + 64), Compression::new(5));
    // Writing into a Vec cannot fail.
    if enc.write_all(data).is_err() {
        return WireFrame::binary(&[]);
    }
    match enc.finish() {
        Ok(v) => WireFrame::binary_in(v),
        Err(_) => WireFrame::binary(&[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn round_trips_and_shrinks_json() {
        let json = r#"{"v":1,"type":"event","room":"general","seq":1}"#.repeat(100);
        let packed = deflate(json.as_bytes());
        assert_eq!(packed.wire()[0], 0x82, "a final binary frame");
        assert!(packed.len() * 3 < json.len());
        let mut out = String::new();
        flate2::read::DeflateDecoder::new(packed.payload())
            .read_to_string(&mut out)
            .expect("inflate");
        assert_eq!(out, json);
    }
}
