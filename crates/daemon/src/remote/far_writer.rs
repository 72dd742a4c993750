//! The relay's writes to the far side, on a task of their own. A write waits for the link's
//! credit (the far side's window, `tether_transport::mux::WINDOW`); were the relay to wait in
//! its own loop, it would read none of the far side's output meanwhile. A command that echoes
//! its input (`cat`, `gzip -c`) then fills both directions at once: the far host blocks
//! writing output nobody reads, so it reads no more stdin, so the credit the relay waits for
//! never comes. With the writes here, the relay's loop only queues (a few frames at most, so
//! memory stays bounded) and goes on reading output.

use bytes::Bytes;
use std::time::Duration;
use tether_proto::Request;
use tether_transport::mux::ChannelWriter;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A frame for the far side.
pub(super) enum ToFar {
    /// Boxed: most frames are stdin, and a `Request` is large.
    Req(Box<Request>),
    /// A `Stdin` frame's payload, sent after a header of its own (no copy).
    Stdin(Bytes),
}

impl From<Request> for ToFar {
    fn from(r: Request) -> ToFar {
        ToFar::Req(Box::new(r))
    }
}

/// Frames queued at most: 4 × 64 KiB of stdin.
const QUEUED: usize = 4;

pub(super) struct FarWriter {
    pub tx: mpsc::Sender<ToFar>,
    task: JoinHandle<()>,
}

async fn write(w: &mut ChannelWriter, m: ToFar) -> bool {
    match m {
        ToFar::Req(r) => match tether_proto::encode(&*r) {
            Ok(b) => w.send_vec(b).await.is_ok(),
            Err(_) => false,
        },
        ToFar::Stdin(d) => {
            let header = tether_proto::stdin_frame_header(d.len());
            w.send_vec(header).await.is_ok() && w.send_bytes(d).await.is_ok()
        }
    }
}

impl FarWriter {
    /// Writes what is queued to `far_w` in order until a write fails (the link or the channel
    /// is gone: the queue then closes, which the relay takes as the link lost) or the
    /// [`FarWriter`] is finished.
    pub fn spawn(mut far_w: ChannelWriter) -> FarWriter {
        let (tx, mut rx) = mpsc::channel(QUEUED);
        let task = tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if !write(&mut far_w, m).await {
                    return;
                }
            }
        });
        FarWriter { tx, task }
    }

    /// Queues `m`, waiting for room. False once the writer has stopped.
    pub async fn send(&self, m: ToFar) -> bool {
        self.tx.send(m).await.is_ok()
    }

    /// Takes no more and waits, at most `within`, for what is queued to be written; then the
    /// channel's write side closes.
    pub async fn finish(self, within: Duration) {
        let FarWriter { tx, mut task } = self;
        drop(tx);
        if tokio::time::timeout(within, &mut task).await.is_err() {
            task.abort();
        }
    }
}
