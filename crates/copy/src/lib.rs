//! `tether copy`: files, directories and symbolic links through a session (issue 20).
//!
//! The sending side walks its paths and writes a stream of frames ([`Frame`], in tether's own
//! framing: a length, then postcard) to stdout; the receiving side reads it from stdin and
//! writes each file under a temporary name beside its destination, renaming it into place only
//! once it is whole, so no partly written file is ever in place. Both sides are tether's own
//! binary (`tether __copy send|recv`): one runs locally, the other in the session's shell, as
//! the session's user, through an ordinary invocation, so a copy goes wherever `invoke` goes
//! (local and remote sessions, temporary ones, system mode) over the session's own
//! connection, and a restricted configuration refuses it as it refuses any other command.

mod recv;
mod send;

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
    /// A regular file of `len` bytes, which follow as `Data` frames.
    File {
        path: String,
        len: u64,
        mode: u32,
        mtime: i64,
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
