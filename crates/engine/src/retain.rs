//! Output of a command whose client went away (SPEC §3.11–12).
//!
//! When the client of a running command disconnects (`tether disconnect`, or its connection
//! simply ends), the command goes on and what it writes is kept here, in order, up to a quota
//! (`TETHER_OUTPUT_QUOTA` bytes, default 1 GiB). When the quota is full the host stops reading
//! the command's pipes, so the command blocks on its next write (`block` mode) and resumes as
//! `receive` drains. `receive` streams what was kept, then the live rest, then the exit status.
//!
//! Kept output lives in memory for now; spooling to a private file and the `drop` mode are the
//! next steps of issue 4.

use crate::conn::Requests;
use crate::host::Host;
use std::collections::VecDeque;
use std::sync::Arc;
use tether_proto::{ErrorInfo, ErrorKind, ExitInfo, Request, Response, Stream};
use tether_transport::FrameWriter;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::watch;

/// Default quota of kept output per session.
pub const DEFAULT_QUOTA: usize = 1 << 30;
/// Most bytes one `receive` step writes before checking for new requests.
const BATCH: usize = 1 << 20;

#[derive(Default)]
struct Kept {
    chunks: VecDeque<(Stream, Vec<u8>)>,
    bytes: usize,
    exit: Option<ExitInfo>,
    /// A detached command's output is (or was) being kept and has not been received whole.
    pending: bool,
}

pub(crate) struct Outbox {
    kept: std::sync::Mutex<Kept>,
    /// Bumped on every change, so waiters never miss one.
    version: watch::Sender<u64>,
    quota: usize,
}

impl Outbox {
    pub fn new() -> Outbox {
        let quota = std::env::var("TETHER_OUTPUT_QUOTA")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|q| *q > 0)
            .unwrap_or(DEFAULT_QUOTA);
        Outbox {
            kept: Default::default(),
            version: watch::channel(0).0,
            quota,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// From now on the running command's output is kept.
    pub fn begin(&self) {
        self.lock().pending = true;
        self.bump();
    }

    pub fn pending(&self) -> bool {
        self.lock().pending
    }

    /// Whether the command may write more before the quota is reached.
    pub fn room(&self) -> bool {
        self.lock().bytes < self.quota
    }

    pub fn push(&self, stream: Stream, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        {
            let mut k = self.lock();
            k.bytes += data.len();
            k.chunks.push_back((stream, data.to_vec()));
        }
        self.bump();
    }

    pub fn finish(&self, exit: ExitInfo) {
        self.lock().exit = Some(exit);
        self.bump();
    }

    /// Up to [`BATCH`] bytes from the front (copied: they are removed only once delivered), or
    /// the exit status once everything before it is delivered.
    fn peek(&self) -> (Vec<(Stream, Vec<u8>)>, Option<ExitInfo>) {
        let k = self.lock();
        let mut out = Vec::new();
        let mut size = 0;
        for (s, d) in &k.chunks {
            if size >= BATCH {
                break;
            }
            size += d.len();
            out.push((*s, d.clone()));
        }
        let exit = if k.chunks.is_empty() {
            k.exit.clone()
        } else {
            None
        };
        (out, exit)
    }

    fn consume(&self, n: usize) {
        {
            let mut k = self.lock();
            for _ in 0..n {
                if let Some((_, d)) = k.chunks.pop_front() {
                    k.bytes -= d.len();
                }
            }
        }
        self.bump();
    }

    fn clear(&self) {
        *self.lock() = Kept::default();
        self.bump();
    }
}

/// Serves `receive`: kept output, then live output, then the exit status. Returns whether the
/// connection can serve another request.
pub(crate) async fn receive(
    host: &Arc<Host>,
    requests: &mut Requests,
    writer: &mut FrameWriter<OwnedWriteHalf>,
) -> bool {
    let ob = &host.outbox;
    if !ob.pending() {
        let msg = format!(
            "session {}: no output to receive (no command ran while it was disconnected)",
            host.spec.name
        );
        let err = Response::Error(ErrorInfo::new(ErrorKind::NotFound, msg));
        return writer.send(&err).await.is_ok();
    }
    // Receiving reattaches the session (as Receive-PSSession connects it).
    host.set_connected();
    if writer
        .send(&Response::Started { invocation: 0 })
        .await
        .is_err()
    {
        return detached(host);
    }
    let mut changed = ob.subscribe();
    loop {
        changed.borrow_and_update();
        let (chunks, exit) = ob.peek();
        if !chunks.is_empty() {
            let n = chunks.len();
            for (stream, data) in chunks {
                if writer
                    .feed(&Response::Output { stream, data })
                    .await
                    .is_err()
                {
                    return detached(host);
                }
            }
            if writer.flush().await.is_err() {
                return detached(host);
            }
            ob.consume(n);
            continue;
        }
        if let Some(exit) = exit {
            ob.clear();
            return writer.send(&Response::Exit(exit)).await.is_ok();
        }
        tokio::select! {
            _ = changed.changed() => {}
            req = requests.rx.recv() => match req {
                // Ctrl-C of the receiving client stops the command, as for its invoker.
                Some(Request::Cancel) => host.remote_cancel.send_modify(|c| *c += 1),
                Some(_) => {}
                None => return detached(host),
            }
        }
    }
}

/// The receiving client went away before the end: the session is Disconnected again and keeps
/// what it has not delivered.
fn detached(host: &Arc<Host>) -> bool {
    host.set_disconnected();
    false
}
