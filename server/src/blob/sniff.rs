//! The content type of a blob, from its first bytes: the type a client declared is never served.
//!
//! Only formats with an unambiguous signature are named; everything else, text of any kind
//! (HTML, SVG and XML included), is `application/octet-stream`, so no upload is ever served as a
//! page a browser would run.

/// Bytes of a blob's start that [`content_type`] looks at.
pub const SNIFF_LEN: usize = 64;

/// The content type of a blob that starts with `head` (its first [`SNIFF_LEN`] bytes, or all of
/// it when shorter).
pub fn content_type(head: &[u8]) -> &'static str {
    let starts = |sig: &[u8]| head.starts_with(sig);
    let at = |offset: usize, sig: &[u8]| head.get(offset..offset + sig.len()) == Some(sig);
    if starts(b"\x89PNG\r\n\x1a\n") {
        return "image/png";
    }
    if starts(b"\xff\xd8\xff") {
        return "image/jpeg";
    }
    if starts(b"GIF87a") || starts(b"GIF89a") {
        return "image/gif";
    }
    if starts(b"RIFF") && at(8, b"WEBP") {
        return "image/webp";
    }
    if starts(b"RIFF") && at(8, b"WAVE") {
        return "audio/wav";
    }
    if at(4, b"ftyp") {
        return iso_media(head);
    }
    if starts(b"\x1a\x45\xdf\xa3") {
        // EBML: WebM names its doc type in the header; anything else is Matroska.
        return if head.windows(4).any(|w| w == b"webm") {
            "video/webm"
        } else {
            "video/x-matroska"
        };
    }
    if starts(b"%PDF-") {
        return "application/pdf";
    }
    if starts(b"OggS") {
        return "audio/ogg";
    }
    if starts(b"fLaC") {
        return "audio/flac";
    }
    if starts(b"ID3")
        || (head.len() >= 2 && head[0] == 0xff && matches!(head[1], 0xfb | 0xf3 | 0xf2))
    {
        return "audio/mpeg";
    }
    if starts(b"PK\x03\x04") {
        return "application/zip";
    }
    OCTET_STREAM
}

/// The type of nothing recognisable.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// ISO base media files (`ftyp` box): HEIF images, AVIF, MP4 and QuickTime video, M4A audio,
/// by the major brand.
fn iso_media(head: &[u8]) -> &'static str {
    match head.get(8..12) {
        Some(b"heic" | b"heix" | b"heim" | b"heis") => "image/heic",
        Some(b"mif1" | b"msf1" | b"heif") => "image/heif",
        Some(b"avif" | b"avis") => "image/avif",
        Some(b"qt  ") => "video/quicktime",
        Some(b"M4A " | b"M4B ") => "audio/mp4",
        Some(b"3gp4" | b"3gp5" | b"3gp6" | b"3g2a") => "video/3gpp",
        Some(_) => "video/mp4",
        None => OCTET_STREAM,
    }
}

/// Whether a browser may show this type inline: images, audio and video only.
pub fn inline(content_type: &str) -> bool {
    ["image/", "audio/", "video/"]
        .iter()
        .any(|p| content_type.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_signatures() {
        let cases: &[(&[u8], &str)] = &[
            (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "image/png"),
            (b"\xff\xd8\xff\xe0\0\x10JFIF", "image/jpeg"),
            (b"GIF89a\x01\0", "image/gif"),
            (b"RIFF\x24\0\0\0WEBPVP8 ", "image/webp"),
            (b"RIFF\x24\0\0\0WAVEfmt ", "audio/wav"),
            (b"\0\0\0\x18ftypheic\0\0\0\0", "image/heic"),
            (b"\0\0\0\x18ftypmif1\0\0\0\0", "image/heif"),
            (b"\0\0\0\x1cftypavif\0\0\0\0", "image/avif"),
            (b"\0\0\0\x20ftypisom\0\0\x02\0", "video/mp4"),
            (b"\0\0\0\x14ftypqt  \0\0\0\0", "video/quicktime"),
            (b"\0\0\0\x20ftypM4A \0\0\0\0", "audio/mp4"),
            (
                b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm",
                "video/webm",
            ),
            (b"%PDF-1.7\n", "application/pdf"),
            (b"OggS\0\x02", "audio/ogg"),
            (b"fLaC\0\0\0\x22", "audio/flac"),
            (b"ID3\x04\0", "audio/mpeg"),
            (b"PK\x03\x04\x14\0", "application/zip"),
        ];
        for (head, want) in cases {
            assert_eq!(content_type(head), *want, "{head:?}");
        }
    }

    #[test]
    fn text_of_any_kind_is_an_octet_stream() {
        for head in [
            &b"<!DOCTYPE html><html><script>alert(1)</script>"[..],
            b"<svg xmlns=\"http://www.w3.org/2000/svg\" onload=\"alert(1)\">",
            b"<?xml version=\"1.0\"?>",
            b"hello",
            b"",
            b"\0\0\0\x18ftyp",
        ] {
            assert_eq!(content_type(head), OCTET_STREAM, "{head:?}");
        }
        assert!(inline("image/png") && inline("video/mp4") && inline("audio/ogg"));
        assert!(!inline(OCTET_STREAM) && !inline("application/pdf"));
    }
}
