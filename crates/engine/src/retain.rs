//! Output of a command whose client went away (SPEC §3.11–12).
//!
//! When the client of a running command disconnects (`tether disconnect`, or its connection
//! simply ends), the command goes on and what it writes is kept here, in order, up to a quota
//! (`TETHER_OUTPUT_QUOTA` bytes, default 1 GiB). When the quota is full the host stops reading
//! the command's pipes, so the command blocks on its next write (`block` mode) and resumes as
//! `receive` drains. `receive` streams what was kept, then the live rest, then the exit status.
//!
//! Kept output lives in memory and then in a private spool file ([`crate::spool`]). In `drop`
//! mode a detached command never waits: its oldest kept output goes instead, and `receive`
//! says how much.

use crate::conn::Requests;
use crate::host::Host;
use crate::spool::Chunks;
use std::path::PathBuf;
use std::sync::Arc;
use tether_proto::{ClientId, ErrorInfo, ErrorKind, ExitInfo, Request, Response, Stream};
use tether_transport::FrameWriter;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::watch;

/// Default quota of kept output per session.
pub const DEFAULT_QUOTA: usize = 1 << 30;
/// Most bytes one `receive` step writes before checking for new requests.
const BATCH: usize = 1 << 20;

struct Kept {
    chunks: Chunks,
    /// Output byte number of the first kept byte (bytes of both streams, in order, from the
    /// start of the invocation).
    base: u64,
    exit: Option<ExitInfo>,
    /// A detached command's output is (or was) being kept and has not been received whole.
    pending: bool,
    /// Bytes dropped (`drop` mode) since the client went away.
    dropped: u64,
}

impl Kept {
    fn end(&self) -> u64 {
        self.base + self.chunks.len() as u64
    }

    /// Forgets everything before byte `seq`.
    fn trim_to(&mut self, seq: u64) {
        let cut = seq.saturating_sub(self.base).min(self.chunks.len() as u64);
        self.chunks.pop_front(cut as usize);
        self.base += cut;
    }

    /// Back to nothing kept, numbering from 0.
    fn clear(&mut self) {
        self.chunks.clear();
        self.base = 0;
        self.exit = None;
        self.pending = false;
        self.dropped = 0;
    }
}

/// Chunks to send, the byte number after them, and the exit once nothing precedes it.
type Batch = (Vec<(Stream, Vec<u8>)>, u64, Option<ExitInfo>);

pub(crate) struct Outbox {
    kept: std::sync::Mutex<Kept>,
    /// Bumped on every change, so waiters never miss one.
    version: watch::Sender<u64>,
    quota: usize,
    /// `drop` mode: while detached, the oldest output goes at the quota.
    drop_oldest: bool,
}

impl Outbox {
    /// `spool` is the private file kept output spills into once its memory share is full.
    pub fn new(quota: Option<u64>, drop_oldest: bool, spool: Option<PathBuf>) -> Outbox {
        let quota = quota
            .map(|q| q as usize)
            .or(Some(tether_settings::get().output_quota))
            .filter(|q| *q > 0)
            .unwrap_or(DEFAULT_QUOTA);
        Outbox {
            kept: std::sync::Mutex::new(Kept {
                chunks: Chunks::new(spool),
                base: 0,
                exit: None,
                pending: false,
                dropped: 0,
            }),
            version: watch::channel(0).0,
            quota,
            drop_oldest,
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

    /// A new invocation starts: output numbering restarts at 0 and leftovers of an earlier,
    /// fully delivered one are dropped.
    pub fn reset(&self) {
        self.lock().clear();
        self.bump();
    }

    /// From now on the running command's output is kept for `receive`.
    pub fn begin(&self) {
        self.lock().pending = true;
        self.bump();
    }

    pub fn pending(&self) -> bool {
        self.lock().pending
    }

    /// Whether the command may write more before the quota is reached. In `drop` mode a
    /// detached command never waits: its oldest kept output goes instead.
    pub fn room(&self) -> bool {
        let k = self.lock();
        k.chunks.len() < self.quota || (self.drop_oldest && k.pending)
    }

    pub fn push(&self, stream: Stream, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        {
            let mut k = self.lock();
            k.chunks.push(stream, data);
            if self.drop_oldest && k.pending && k.chunks.len() > self.quota {
                let over = (k.chunks.len() - self.quota) as u64;
                let to = k.base + over;
                k.trim_to(to);
                k.dropped += over;
            }
        }
        self.bump();
    }

    /// Drops whatever is kept (output of a command whose client went away for good): the
    /// bytes dropped and the command's exit status, if there was anything.
    pub fn discard(&self) -> Option<(u64, Option<i32>)> {
        let what = {
            let mut k = self.lock();
            if !k.pending && k.chunks.len() == 0 && k.exit.is_none() {
                return None;
            }
            let what = (k.chunks.len() as u64, k.exit.as_ref().map(|e| e.code));
            k.clear();
            what
        };
        self.bump();
        Some(what)
    }

    pub fn finish(&self, exit: ExitInfo) {
        self.lock().exit = Some(exit);
        self.bump();
    }

    /// The client has everything before `seq`; past the end it also has the exit, and nothing
    /// is left to keep.
    pub fn ack(&self, seq: u64) {
        {
            let mut k = self.lock();
            if seq > k.end() && k.exit.is_some() {
                k.clear();
            } else {
                k.trim_to(seq);
            }
        }
        self.bump();
    }

    /// The client was told to let go while connected: everything sent so far reaches it
    /// before that notice, so only what follows is kept for `receive`.
    pub fn forget_sent(&self) {
        {
            let mut k = self.lock();
            let end = k.end();
            k.trim_to(end);
        }
        self.bump();
    }

    /// Up to [`BATCH`] bytes from byte `from` on (copied: they stay until acknowledged or
    /// consumed), or the exit status once everything before it is out.
    fn read_from(&self, from: u64) -> std::io::Result<Batch> {
        let k = self.lock();
        let skip = from.saturating_sub(k.base) as usize;
        let out = k.chunks.read(skip, BATCH)?;
        let size: usize = out.iter().map(|(_, d)| d.len()).sum();
        let next = from.max(k.base) + size as u64;
        let exit = if next >= k.end() {
            k.exit.clone()
        } else {
            None
        };
        Ok((out, next, exit))
    }

    fn base(&self) -> u64 {
        self.lock().base
    }

    fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    fn has_anything(&self) -> bool {
        let k = self.lock();
        k.pending || k.chunks.len() > 0 || k.exit.is_some()
    }
}

/// What a `receive` or resume asks for.
pub(crate) struct Receiving {
    /// `None`: a user's `receive`, from the first kept byte; `Some`: a resume from that byte.
    pub from: Option<u64>,
    /// Kept until acknowledged (a resume), rather than consumed as sent.
    pub acked: bool,
    pub client: ClientId,
    /// The invocation's own client is back and goes on with stdin; otherwise stdin ends.
    pub keep_stdin: bool,
    /// `receive --keep`: a look that changes nothing. Nothing is consumed, the session is not
    /// reattached, stdin is left alone, and the receiver's Ctrl-C only ends its look.
    pub keep: bool,
}

/// Serves `receive` (from the first kept byte, consuming as it delivers) or a resume (from
/// byte `from`, keeping what it sends until the client acknowledges it). Returns whether the
/// connection can serve another request.
pub(crate) async fn receive(
    host: &Arc<Host>,
    requests: &mut Requests,
    writer: &mut FrameWriter<OwnedWriteHalf>,
    how: Receiving,
) -> bool {
    let Receiving {
        from,
        acked,
        client,
        keep_stdin,
        keep,
    } = how;
    if let Err(e) = host.check_holder(&client) {
        return writer.send(&Response::Error(e)).await.is_ok();
    }
    let ob = &host.outbox;
    // A user's `receive` is for output a detached command left; a resume continues any
    // stream whose end the client has not acknowledged.
    let available = match from {
        Some(_) => ob.has_anything(),
        None => ob.pending(),
    };
    if !available {
        let msg = format!(
            "session {}: no output to receive (no command ran while it was disconnected)",
            host.spec.name
        );
        let err = Response::Error(ErrorInfo::new(ErrorKind::NotFound, msg));
        return writer.send(&err).await.is_ok();
    }
    let mut next = from.unwrap_or_else(|| ob.base()).max(ob.base());
    // Receiving reattaches the session (as Receive-PSSession connects it); a look does not.
    if !keep {
        host.set_connected(&client);
    }
    if !keep_stdin && !keep {
        host.stdin.close();
    }
    let started = Response::Started {
        invocation: 0,
        session: host.spec.instance_id.clone(),
        from: next,
        stdin_from: host.stdin.received(),
    };
    if writer.send(&started).await.is_err() {
        return left(host, requests, keep).await;
    }
    let dropped = ob.dropped();
    // A user's receive (here, or relayed from another computer, which never feeds stdin) is
    // told what was dropped; a client resuming its own stream was attached when it happened.
    if dropped > 0 && (from.is_none() || !keep_stdin) {
        let note = format!(
            "session {}: {dropped} bytes of output were dropped while disconnected \
             (output mode drop, quota {} bytes)",
            host.spec.name, ob.quota
        );
        if writer.send(&Response::Notice(note)).await.is_err() {
            return left(host, requests, keep).await;
        }
    }
    let mut changed = ob.subscribe();
    loop {
        changed.borrow_and_update();
        let (chunks, upto, exit) = match ob.read_from(next) {
            Ok(batch) => batch,
            Err(e) => {
                // Kept, not lost: a later receive may read it once the disk is back.
                let msg = format!(
                    "session {}: cannot read its spooled output: {e}",
                    host.spec.name
                );
                let _ = writer
                    .send(&Response::Error(ErrorInfo::new(ErrorKind::Internal, msg)))
                    .await;
                return left(host, requests, keep).await;
            }
        };
        if !chunks.is_empty() {
            for (stream, data) in chunks {
                if writer
                    .feed(&Response::Output { stream, data })
                    .await
                    .is_err()
                {
                    return left(host, requests, keep).await;
                }
            }
            if writer.flush().await.is_err() {
                return left(host, requests, keep).await;
            }
            next = upto;
            if !acked && !keep {
                ob.ack(next);
            }
            continue;
        }
        if let Some(exit) = exit {
            if keep {
                // Everything stays for the next receive. The look's connection ends here:
                // nothing it sends later (a late `Ack`) may touch what is kept.
                let _ = writer.send(&Response::Exit(exit)).await;
                return false;
            }
            if acked {
                // Delivered to a live client: no longer waiting to be received, but kept for a
                // resume until acknowledged or the next command.
                ob.lock().pending = false;
            } else {
                ob.reset();
            }
            let ok = writer.send(&Response::Exit(exit)).await.is_ok();
            if host.spec.temporary {
                host.finish(
                    tether_proto::State::Closed,
                    "temporary session finished".into(),
                );
                return false;
            }
            return ok;
        }
        tokio::select! {
            _ = changed.changed() => {}
            req = requests.rx.recv() => match req {
                // A look's Ctrl-C (or leaving) ends only the look.
                Some(Request::Cancel | Request::Abandon) | None if keep => return false,
                Some(_) if keep => {}
                // Ctrl-C of the receiving client stops the command, as for its invoker.
                Some(Request::Cancel) => host.remote_cancel.send_modify(|c| *c += 1),
                // Leaving for good: the command stops and nothing is kept, for anyone.
                Some(Request::Abandon) => {
                    host.remote_abandon.send_modify(|c| *c += 1);
                    return false;
                }
                Some(Request::Ack(seq)) => ob.ack(seq),
                Some(Request::Stdin(data)) => host.stdin.feed(data).await,
                Some(Request::StdinEof) => host.stdin.close(),
                Some(_) => {}
                None => return detached(host),
            }
        }
    }
}

/// The receiving client went away before the end. Its last words may still be on their way
/// (it closes right after them): an `Abandon` means the command stops and nothing is kept;
/// otherwise the session is Disconnected again and keeps what was not delivered. A look
/// (`keep`) that ends early leaves everything as it was.
async fn left(host: &Arc<Host>, requests: &mut Requests, keep: bool) -> bool {
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
    while let Ok(Some(req)) = tokio::time::timeout_at(until, requests.rx.recv()).await {
        if matches!(req, Request::Abandon) && !keep {
            host.remote_abandon.send_modify(|c| *c += 1);
            return false;
        }
    }
    if keep { false } else { detached(host) }
}

/// The receiving client went away before the end: the session is Disconnected again and keeps
/// what it has not delivered.
fn detached(host: &Arc<Host>) -> bool {
    host.set_disconnected();
    false
}
