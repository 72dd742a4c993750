//! A connection's incoming frames, read by a task of their own, with Ctrl-C and hang-up
//! raised where they can be watched while no frame is being consumed.

use tether_proto::Request;
use tether_transport::FrameReader;
use tokio::io::AsyncRead;
use tokio::sync::{mpsc, watch};

/// How many Ctrl-Cs the client has sent, and whether it has hung up.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Stop {
    pub cancels: u64,
    pub hung_up: bool,
}

/// The client's frames, read by a task of their own (reading a frame is not cancel-safe), plus
/// a signal raised on Ctrl-C or hang-up that can be watched while no frame is being consumed
/// (waiting for a busy session).
pub(crate) struct Requests {
    pub rx: mpsc::Receiver<Request>,
    pub stop: watch::Receiver<Stop>,
    /// The client may come back with a `Resume` (a relay): an acknowledged command's stdin
    /// then outlives this connection. A local CLI's ends with it.
    pub resumes: bool,
}

impl Requests {
    pub(crate) fn spawn<R: AsyncRead + Unpin + Send + 'static>(
        mut reader: FrameReader<R>,
    ) -> Requests {
        let (tx, rx) = mpsc::channel::<Request>(16);
        let (stop_tx, stop) = watch::channel(Stop::default());
        tokio::spawn(async move {
            // Reads until the client closes, so the connection is never closed with unread
            // frames in it (that would reset it before our last reply arrives).
            while let Ok(Some(req)) = reader.read::<Request>().await {
                if matches!(req, Request::Cancel | Request::Abandon) {
                    stop_tx.send_modify(|s| s.cancels += 1);
                }
                let _ = tx.send(req).await;
            }
            stop_tx.send_modify(|s| s.hung_up = true);
        });
        Requests {
            rx,
            stop,
            resumes: false,
        }
    }
}
