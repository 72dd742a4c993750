//! Where an invocation's output goes, decided in one place ([`Route::chunk`]) for the three
//! ways output arrives: read live from the FIFOs ([`forward`]), drained from them once the
//! command is done ([`drain`]), and what an EXIT trap wrote to the shell's own streams.
//!
//! While the client is attached the bytes go to it; once it is gone (or was let go) they are
//! kept in the outbox for `receive`; a client that acknowledges what it gets (a relay, a
//! resume) has everything kept as well until it does. A chunk whose write fails is kept: the
//! client just went away, and `receive` will want it.

use crate::fifos::{DRAIN_LIMIT, OutFifo};
use crate::outbox::Outbox;
use tether_proto::{Response, Stream};
use tether_transport::FrameWriter;
use tokio::net::unix::OwnedWriteHalf;

/// Where output goes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route {
    /// The client went away or was let go: output is kept for `receive`.
    pub gone: bool,
    /// The client acknowledges what it receives: output is kept until it does.
    pub acked: bool,
}

impl Route {
    /// Passes one chunk on (and keeps it, when acknowledged or gone). `now`: one write per
    /// chunk, as it comes; otherwise buffered until the next flush. Returns false when
    /// writing to the client just failed: it is gone (`self.gone` is set), and the chunk kept.
    pub async fn chunk(
        &mut self,
        outbox: &Outbox,
        writer: &mut FrameWriter<OwnedWriteHalf>,
        stream: Stream,
        data: bytes::Bytes,
        now: bool,
    ) -> bool {
        if self.acked || self.gone {
            outbox.push_bytes(stream, data.clone());
        }
        if self.gone {
            return true;
        }
        let sent = if now {
            writer.send_output(stream, &data).await
        } else {
            let msg = Response::Output {
                stream,
                data: data.to_vec(),
            };
            writer.feed(&msg).await
        };
        if sent.is_ok() {
            return true;
        }
        self.gone = true;
        if !self.acked {
            outbox.push_bytes(stream, data);
        }
        false
    }
}

/// Passes a read of a FIFO on; at its end the FIFO is let go. Returns false when writing to
/// the client just failed.
pub(crate) async fn forward(
    route: &mut Route,
    outbox: &Outbox,
    f: &mut OutFifo,
    n: std::io::Result<usize>,
    writer: &mut FrameWriter<OwnedWriteHalf>,
) -> bool {
    match n {
        Ok(0) | Err(_) => {
            f.let_go();
            true
        }
        Ok(_) => route.chunk(outbox, writer, f.stream, f.take(), true).await,
    }
}

/// Reads what is left in a FIFO once the command is done (at most [`DRAIN_LIMIT`]: a
/// background job that floods its inherited stdout must not keep an invocation from ending).
pub(crate) async fn drain(
    route: &mut Route,
    outbox: &Outbox,
    f: &mut OutFifo,
    writer: &mut FrameWriter<OwnedWriteHalf>,
) {
    let mut total = 0;
    while total < DRAIN_LIMIT {
        match f.read_now() {
            Some(Ok(0)) => {
                f.eof = true;
                break;
            }
            Some(Ok(n)) => {
                total += n;
                route.chunk(outbox, writer, f.stream, f.take(), false).await;
            }
            Some(Err(_)) | None => break,
        }
    }
}
