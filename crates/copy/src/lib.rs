//! `tether copy`: files, directories and symbolic links through a session (issue 20).
//!
//! The sending side walks its paths and writes a stream of frames ([`Frame`], in tether's own
//! framing: a length, then postcard) to stdout; the receiving side reads it from stdin and
//! writes each file under a temporary name beside its destination, renaming it into place only
//! once it is whole, so no partly written file is ever in place. The receiver answers on its
//! own stdout ([`Reply`]), read by the sender on its stdin: first which partial files an
//! interrupted copy left (so the sender sends only what is missing, see [`partial`]), last what
//! it wrote. Both sides are tether's own
//! binary (`tether __copy send|recv`): one runs locally, the other in the session's shell, as
//! the session's user, through an ordinary invocation, so a copy goes wherever `invoke` goes
//! (local and remote sessions, temporary ones, system mode) over the session's own
//! connection, and a restricted configuration refuses it as it refuses any other command.

pub mod partial;
mod recv;
mod recv_file;
mod send;

pub use partial::Partial;
pub use recv::{Progress, Quiet, Received, Receiver};
pub use send::{SendOptions, Sent, send, total_bytes};

use serde::{Deserialize, Serialize};

/// Most bytes of file data one frame carries.
pub const CHUNK: usize = 64 * 1024;

/// One frame of the stream.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Frame {
    /// A directory, created before its entries. `path` is relative (its first part is the
    /// name of a source), `/`-separated, never `..`, never absolute.
    Dir { path: String, mode: u32, mtime: i64 },
    /// A regular file of `len` bytes, of which those from `from` on follow as `Data` and
    /// `Hole` frames. `from` is 0, or the length of the receiver's partial file (as it said in
    /// [`Reply::Partials`]) whose hash matched the source's first `from` bytes: then a `Sum`
    /// of the whole file follows the data, and the receiver renames nothing that differs.
    File {
        path: String,
        len: u64,
        mode: u32,
        mtime: i64,
        from: u64,
    },
    /// File data (of the last `File`).
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A hole in the last `File`: this many zero bytes, which the receiver leaves unwritten
    /// (a sparse file stays sparse).
    Hole(u64),
    /// A symbolic link, copied as a link.
    Link { path: String, target: String },
    /// A source the sender could not read: the receiver reports it and goes on.
    Problem(String),
    /// First, when the sender was asked for it: how many bytes of file data follow in all
    /// (for a progress bar).
    Total(u64),
    /// The end of the stream.
    End,
    /// First: the names the sources go by in this stream (the first part of every path), so
    /// the receiver can look for partial files under them and answer [`Reply::Partials`]
    /// before anything else is sent. `recursive`: whether directories are copied (and so
    /// looked in).
    Names { names: Vec<String>, recursive: bool },
    /// SHA-256 of the whole file, after the data of a resumed `File` (one with `from > 0`).
    Sum([u8; 32]),
}

/// What the receiver says to the sender (on its stdout, the sender's stdin).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Reply {
    /// The answer to [`Frame::Names`]: the partial files it has, by stream path.
    Partials(Vec<Partial>),
    /// After [`Frame::End`]: what it wrote (the side on the user's computer prints it).
    Done(Received),
}

/// What went wrong, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{path}: {}", plain(source))]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Stream(String),
    #[error("{0}")]
    Usage(String),
    /// The other side went away (its own error, if any, says why).
    #[error("the other side of the copy ended: {0}")]
    Closed(String),
}

impl CopyError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> CopyError {
        CopyError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// An I/O error as people read it: "Permission denied", without "(os error 13)".
pub(crate) fn plain(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rsplit_once(" (os error ") {
        Some((head, _)) => head.to_string(),
        None => text,
    }
}

/// Writes one frame (tether's framing: a length, then postcard).
pub(crate) fn write_frame<T: Serialize>(
    out: &mut (impl std::io::Write + ?Sized),
    f: &T,
) -> Result<(), CopyError> {
    let bytes = tether_proto::encode(f).map_err(|e| CopyError::Stream(e.to_string()))?;
    out.write_all(&bytes)
        .map_err(|e| CopyError::Closed(format!("cannot send: {}", plain(&e))))
}

/// Index of `Frame::Data` in postcard's encoding (checked by a test).
const DATA_VARIANT: u8 = 2;

/// Writes one `Frame::Data` from the caller's buffer: the frame's first bytes, then `data`
/// itself (not copied into a frame first).
pub(crate) fn write_data(
    out: &mut (impl std::io::Write + ?Sized),
    data: &[u8],
) -> Result<(), CopyError> {
    let header = tether_proto::bulk_frame_header(&[DATA_VARIANT], data.len());
    out.write_all(&header)
        .and_then(|()| out.write_all(data))
        .map_err(|e| CopyError::Closed(format!("cannot send: {}", plain(&e))))
}

/// A message of the stream or of the answers. `Frame::Data`'s bytes are read straight into
/// the buffer it keeps (not zeroed first, not copied out of a frame buffer).
pub(crate) trait Message: serde::de::DeserializeOwned {
    /// Where the data starts, when the payload of `total` bytes beginning `head` is `Data`.
    fn data_start(_head: &[u8], _total: usize) -> Option<usize> {
        None
    }
    fn from_data(_data: Vec<u8>) -> Option<Self> {
        None
    }
}

impl Message for Frame {
    fn data_start(head: &[u8], total: usize) -> Option<usize> {
        tether_proto::bulk_start(head, &[DATA_VARIANT], total)
    }
    fn from_data(data: Vec<u8>) -> Option<Self> {
        Some(Frame::Data(data))
    }
}

impl Message for Reply {}

/// Reads one frame, bounded by the framing's own limit (a peer cannot make us allocate more).
/// The end of the input, or an error reading it, is `on_cut`'s error.
pub(crate) fn read_frame<T: Message>(
    input: &mut (impl std::io::Read + ?Sized),
    on_cut: fn(String) -> CopyError,
) -> Result<T, CopyError> {
    use std::io::Read;
    let mut header = [0u8; tether_proto::FRAME_HEADER_LEN];
    input
        .read_exact(&mut header)
        .map_err(|e| on_cut(plain(&e)))?;
    let len = tether_proto::frame_len(header).map_err(|e| CopyError::Stream(e.to_string()))?;
    let mut head = [0u8; tether_proto::BULK_PREFIX_MAX];
    let h = len.min(head.len());
    input
        .read_exact(&mut head[..h])
        .map_err(|e| on_cut(plain(&e)))?;
    let start = T::data_start(&head[..h], len);
    let mut payload = Vec::with_capacity(len - start.unwrap_or(0));
    payload.extend_from_slice(&head[start.unwrap_or(0)..h]);
    let rest = (len - h) as u64;
    match input.take(rest).read_to_end(&mut payload) {
        Ok(n) if n as u64 == rest => {}
        Ok(_) => return Err(on_cut("the stream ended in the middle of a frame".into())),
        Err(e) => return Err(on_cut(plain(&e))),
    }
    if start.is_some() {
        return T::from_data(payload).ok_or_else(|| CopyError::Stream("not a copy stream".into()));
    }
    tether_proto::decode(&payload).map_err(|e| CopyError::Stream(format!("not a copy stream: {e}")))
}

/// A relative path from the stream, checked: no empty, `.` or `..` part, not absolute. A
/// sender on another computer is trusted no more than any peer: it cannot make the receiver
/// write outside its destination.
pub(crate) fn checked(path: &str) -> Result<std::path::PathBuf, CopyError> {
    let bad = || CopyError::Stream(format!("the stream names an unsafe path {path:?}"));
    if path.is_empty() || path.starts_with('/') || path.contains('\0') {
        return Err(bad());
    }
    let mut out = std::path::PathBuf::new();
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(bad());
        }
        out.push(part);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_resume;
