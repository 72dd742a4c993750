//! Frame header and payload codec: a 4-byte big-endian length, then a postcard payload.
//!
//! The length is checked against [`MAX_FRAME_LEN`] before anything is allocated, so a peer can
//! never make us reserve memory by lying about a size.

use serde::{Serialize, de::DeserializeOwned};

/// Bytes in a frame header.
pub const FRAME_HEADER_LEN: usize = 4;

/// Hard cap on one payload. Output is chunked far below it; anything larger is an attack or a bug.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Reads a frame header and validates the announced length.
pub fn frame_len(header: [u8; FRAME_HEADER_LEN]) -> Result<usize, DecodeError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_LEN {
        return Err(DecodeError::TooLarge(len));
    }
    Ok(len)
}

/// Encodes a message as a whole frame (header + payload), ready to write.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, DecodeError> {
    let mut buf = vec![0u8; FRAME_HEADER_LEN];
    let mut buf = postcard::to_extend(msg, std::mem::take(&mut buf))
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let len = buf.len() - FRAME_HEADER_LEN;
    if len > MAX_FRAME_LEN {
        return Err(DecodeError::TooLarge(len));
    }
    buf[..FRAME_HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf)
}

/// Decodes one payload (without its header). Trailing bytes are an error: a frame is one message.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    if payload.len() > MAX_FRAME_LEN {
        return Err(DecodeError::TooLarge(payload.len()));
    }
    let (msg, rest) =
        postcard::take_from_bytes(payload).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed(format!(
            "{} trailing bytes after message",
            rest.len()
        )));
    }
    Ok(msg)
}

/// Encodes the header of an `Output` frame whose payload ends with `len` data bytes, so a sender
/// can write the header and then the data straight from its own buffer, with no copy. The bytes
/// are exactly those [`encode`] produces for `Response::Output { stream, data }`.
pub fn output_frame_header(stream: crate::Stream, len: usize) -> Vec<u8> {
    // postcard: variant index (varint), stream variant (varint), byte length (varint), bytes.
    let stream = match stream {
        crate::Stream::Stdout => 0,
        crate::Stream::Stderr => 1,
    };
    bulk_frame_header(&[OUTPUT_VARIANT, stream], len)
}

/// As [`output_frame_header`], for `Request::Stdin` (a relay sends its data as it came).
pub fn stdin_frame_header(len: usize) -> Vec<u8> {
    bulk_frame_header(&[STDIN_VARIANT], len)
}

/// The frame header, `prefix` and the varint `len` of a message that ends with `len` bytes
/// (the bytes [`encode`] writes before them), for a sender that writes the bytes from its own
/// buffer.
pub fn bulk_frame_header(prefix: &[u8], len: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(16);
    body.extend_from_slice(prefix);
    let mut n = len;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            body.push(byte);
            break;
        }
        body.push(byte | 0x80);
    }
    let total = body.len() + len;
    let mut out = (total as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// Index of `Response::Output` in postcard's encoding (checked by a test).
const OUTPUT_VARIANT: u8 = 3;
/// Index of `Request::Stdin` in postcard's encoding (checked by a test).
const STDIN_VARIANT: u8 = 5;

/// Most bytes before the data in a bulk payload (`Output`: variant, stream, a 5-byte varint).
pub const BULK_PREFIX_MAX: usize = 7;

/// Where the data of a `Response::Output` payload of `total` bytes starts, and its stream,
/// read from its first bytes `head` (at most [`BULK_PREFIX_MAX`] are looked at). `None` for
/// any other message, or a prefix that does not add up to `total`. A reader then reads the
/// data straight into the buffer the message keeps, with no copy through a frame buffer.
pub fn output_prefix(head: &[u8], total: usize) -> Option<(crate::Stream, usize)> {
    let (&variant, rest) = head.split_first()?;
    let (&stream, rest) = rest.split_first()?;
    let stream = match (variant, stream) {
        (OUTPUT_VARIANT, 0) => crate::Stream::Stdout,
        (OUTPUT_VARIANT, 1) => crate::Stream::Stderr,
        _ => return None,
    };
    Some((stream, data_start(rest, 2, total)?))
}

/// As [`output_prefix`], for a `Request::Stdin` payload: where its data starts.
pub fn stdin_prefix(head: &[u8], total: usize) -> Option<usize> {
    bulk_start(head, &[STDIN_VARIANT], total)
}

/// Where the data of a payload of `total` bytes starts, when it is the postcard encoding of
/// a message that begins with the bytes `prefix` (its variant) and ends with a byte string
/// (`#[serde(with = "serde_bytes")]`), read from its first bytes `head`. For other
/// protocols in tether's framing (`tether copy`'s stream).
pub fn bulk_start(head: &[u8], prefix: &[u8], total: usize) -> Option<usize> {
    let rest = head.strip_prefix(prefix)?;
    data_start(rest, prefix.len(), total)
}

/// Reads the byte length (a varint) at the start of `rest`, which begins `used` bytes into a
/// payload of `total` bytes; the data's offset if the length is exactly what is left.
fn data_start(mut rest: &[u8], used: usize, total: usize) -> Option<usize> {
    let mut len = 0usize;
    for (i, shift) in (0..35).step_by(7).enumerate() {
        let (&b, r) = rest.split_first()?;
        rest = r;
        len |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            let start = used + i + 1;
            return (total.checked_sub(start)? == len).then_some(start);
        }
    }
    None
}

/// The data length of an `Response::Output` payload, read from its first bytes without
/// decoding it; `None` for any other message (or a payload that does not add up). A relay uses
/// it to count output bytes while passing frames on untouched.
pub fn output_data_len(payload: &[u8]) -> Option<usize> {
    let head = &payload[..payload.len().min(BULK_PREFIX_MAX)];
    output_prefix(head, payload.len()).map(|(_, start)| payload.len() - start)
}
