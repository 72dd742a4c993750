//! Reading the bulk messages (`Output`, `Stdin`) with no copy of their bytes: a frame's data
//! is read from the socket straight into the `Vec` the message keeps, never zeroed first and
//! never copied out of a frame buffer (docs/PROFILES.md §6: these copies were a quarter of
//! the CPU of every tether process on the remote data path).

use tether_proto::{Request, Response};
use tokio::io::{AsyncRead, AsyncReadExt};

/// A message [`crate::FrameReader`] reads. Bulk messages say where their data starts, so the
/// reader can read it into the message's own buffer; every other message is decoded whole.
pub trait Message: serde::de::DeserializeOwned {
    /// Where the data of a bulk payload of `total` bytes starts, from its first bytes (at
    /// most [`tether_proto::BULK_PREFIX_MAX`]); `None` when the payload is not bulk.
    fn bulk_start(head: &[u8], total: usize) -> Option<usize>;
    /// The message of a bulk payload whose first bytes are `head` and data `data`.
    fn from_bulk(head: &[u8], data: Vec<u8>) -> Option<Self>;
}

impl Message for Response {
    fn bulk_start(head: &[u8], total: usize) -> Option<usize> {
        tether_proto::output_prefix(head, total).map(|(_, start)| start)
    }

    fn from_bulk(head: &[u8], data: Vec<u8>) -> Option<Self> {
        let total = head.len() + data.len();
        let (stream, _) = tether_proto::output_prefix(head, total)?;
        Some(Response::Output { stream, data })
    }
}

impl Message for Request {
    fn bulk_start(head: &[u8], total: usize) -> Option<usize> {
        tether_proto::stdin_prefix(head, total)
    }

    fn from_bulk(_head: &[u8], data: Vec<u8>) -> Option<Self> {
        Some(Request::Stdin(data))
    }
}

/// Appends exactly `n` bytes read from `r` to `buf`, into its spare capacity (nothing is
/// zeroed first; a reader with an empty buffer of its own reads straight into `buf`).
/// `UnexpectedEof` if the stream ends first.
pub async fn read_into<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    n: usize,
) -> std::io::Result<()> {
    buf.reserve_exact(n);
    let end = buf.len() + n;
    while buf.len() < end {
        let want = (end - buf.len()) as u64;
        if (&mut *r).take(want).read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}
