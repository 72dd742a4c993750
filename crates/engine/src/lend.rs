//! Lending a command's stdout FIFO to its client (host protocol 8), so that a local CLI moves
//! the bytes into its own stdout with `splice` (pages moved, not copied) instead of through
//! the host and the socket: three copies and two wake-ups per chunk fewer.
//!
//! Only a client that reached the host straight (a local CLI, not a relay that may resume),
//! on a command without a terminal, may borrow it, and only while it is attached. The host
//! stops reading the FIFO while it is lent: at any moment exactly one of the two reads it, so
//! every byte goes one way, in order, once. The client gives it back (`Returned`) after
//! `Reclaim` (the command ended; it drains what is left first), when it is let go
//! (`disconnect`), or by leaving; a client that vanishes gives it back by closing its
//! connection, and the host reads on, keeping what follows for `receive`.
//!
//! A FIFO is lent only to the invocation's own client: the process at the other end of the
//! `Lend` connection (the kernel's word, `SO_PEERCRED`) must be the one at the other end of
//! the invocation's connection. Another client of the same user (a second CLI, a `receive`
//! connection handed over by the daemon) that names the invocation's number gets an `Error`:
//! a descriptor in its hands would read the command's output beside the owner's (or write
//! into its stdin between the owner's bytes), with no way for either to tell. (A process of
//! the same user could open the FIFO by its path anyway: this keeps a second client from
//! corrupting a stream through tether, it is no wall between processes of one user.) Other
//! users never get this far: a host serves no connection but its own user's and its owner's,
//! and the FIFOs are theirs alone (tests/it/lend_hostile.rs).

use crate::session::Host;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;
use tether_proto::{ErrorInfo, ErrorKind, Request, Response};
use tether_transport::FrameWriter;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Mutex, mpsc, oneshot};

/// A client's request for invocation `invocation`'s stdout, and where the answer goes.
pub(crate) struct Ask {
    pub invocation: u64,
    /// The asking process ([`peer_pid`]): only the invocation's own client is answered.
    pub pid: Option<i32>,
    pub reply: oneshot::Sender<Result<OwnedFd, String>>,
}

/// Requests to borrow the running command's stdout; the invocation that runs takes them.
pub(crate) struct Lends {
    tx: mpsc::Sender<Ask>,
    pub rx: Mutex<mpsc::Receiver<Ask>>,
}

impl Default for Lends {
    fn default() -> Lends {
        // A few at most: one client asks once per invocation; more wait for no one.
        let (tx, rx) = mpsc::channel(4);
        Lends {
            tx,
            rx: Mutex::new(rx),
        }
    }
}

/// How long a `Lend` waits for the invocation to answer: it answers between two reads of
/// output, so anything longer means it is gone.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// The process at the other end of `writer`'s connection, from the kernel (`SO_PEERCRED`):
/// who a lend is for. A connection the daemon handed over still names the client that
/// connected it, so an invocation's client and its `Lend` connection name the same process.
pub(crate) fn peer_pid(writer: &FrameWriter<OwnedWriteHalf>) -> Option<i32> {
    let stream: &tokio::net::UnixStream = writer.get_ref().as_ref();
    stream.peer_cred().ok()?.pid()
}

/// Whether a lend asked for by process `asker` may go to an invocation whose client is
/// `client`: the same process, known to both ends (an unknown one is nobody's).
fn same_client(asker: Option<i32>, client: Option<i32>) -> bool {
    asker.is_some() && asker == client
}

/// Serves `Lend` on a connection of its own: the descriptor travels with the `Ok` frame
/// (SCM_RIGHTS), or an `Error` says why not. Returns whether the connection may go on.
pub(crate) async fn serve(
    host: &Host,
    invocation: u64,
    writer: &mut FrameWriter<OwnedWriteHalf>,
) -> bool {
    let (reply, answer) = oneshot::channel();
    let ask = Ask {
        invocation,
        pid: peer_pid(writer),
        reply,
    };
    let refused = |why: String| {
        let msg = format!("session {}: {why}", host.spec.name);
        Response::Error(ErrorInfo::new(ErrorKind::Usage, msg))
    };
    if host.lends.tx.try_send(ask).is_err() {
        let err = refused("its output cannot be lent now".into());
        return writer.send(&err).await.is_ok();
    }
    let fd = match tokio::time::timeout(ANSWER_WITHIN, answer).await {
        Ok(Ok(Ok(fd))) => fd,
        Ok(Ok(Err(why))) => return writer.send(&refused(why)).await.is_ok(),
        _ => {
            let err = refused(format!("invocation {invocation} is not running"));
            return writer.send(&err).await.is_ok();
        }
    };
    send_fd(writer, fd).await
}

/// Serves `LendStdin` on a connection of its own: once the `after` bytes the client sent in
/// frames are in the FIFO, a write end of it travels with the `Ok` frame; the client splices
/// the rest of its stdin into it. The host's own write end stays open until the client's
/// `StdinEof` (or its leaving), so the command sees end-of-file only then.
pub(crate) async fn serve_stdin(
    host: &Host,
    invocation: u64,
    after: u64,
    writer: &mut FrameWriter<OwnedWriteHalf>,
) -> bool {
    let refused = |why: &str| {
        let msg = format!("session {}: {why}", host.spec.name);
        Response::Error(ErrorInfo::new(ErrorKind::Usage, msg))
    };
    let Some((path, mut written, client)) = host.stdin.fifo_of(invocation) else {
        let err = refused("its command's stdin cannot be lent now");
        return writer.send(&err).await.is_ok();
    };
    // Only to the invocation's own client: bytes of another would land between its own.
    if !same_client(peer_pid(writer), client) {
        let err = refused("its command's stdin is another client's");
        return writer.send(&err).await.is_ok();
    }
    // Ends early when stdin closes (the writer task ends and drops the sender).
    let caught_up = written.wait_for(|n| *n >= after).await.is_ok();
    if !caught_up {
        return writer
            .send(&refused("its command's stdin has ended"))
            .await
            .is_ok();
    }
    // A write end of our own to give: the command has the read end open (it read `after`
    // bytes), so a non-blocking open succeeds; it fails if the command closed it since.
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path);
    let Ok(file) = opened else {
        return writer
            .send(&refused("its command no longer reads stdin"))
            .await
            .is_ok();
    };
    send_fd(writer, OwnedFd::from(file)).await
}

/// Sends `Ok` with `fd` attached, after whatever is queued.
async fn send_fd(writer: &mut FrameWriter<OwnedWriteHalf>, fd: OwnedFd) -> bool {
    if writer.flush().await.is_err() {
        return false;
    }
    let Ok(frame) = tether_proto::encode(&Response::Ok) else {
        return false;
    };
    let stream: &tokio::net::UnixStream = writer.get_ref().as_ref();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // Our copy of the descriptor closes when `fd` drops; the client's lives on.
    tether_transport::unix::send_with_fd(stream, &frame, raw)
        .await
        .is_ok()
}

/// Answers one request to borrow invocation `id`'s stdout: `fd` is a duplicate of the FIFO's
/// read end, or `None` when it may not be lent (then the reason goes back). `client`: the
/// process of the invocation's own client ([`peer_pid`]), the only one that may borrow it.
/// Returns whether the FIFO is now lent; the `Lent` marker has been written after every
/// frame before it.
pub(crate) async fn grant(
    ask: Ask,
    (id, client): (u64, Option<i32>),
    fd: Result<OwnedFd, &'static str>,
    writer: &mut FrameWriter<OwnedWriteHalf>,
) -> Result<bool, tether_transport::TransportError> {
    if ask.invocation != id {
        let _ = ask
            .reply
            .send(Err(format!("invocation {} is not running", ask.invocation)));
        return Ok(false);
    }
    if !same_client(ask.pid, client) {
        let why = format!("invocation {id} is another client's");
        let _ = ask.reply.send(Err(why));
        return Ok(false);
    }
    let fd = match fd {
        Ok(fd) => fd,
        Err(why) => {
            let _ = ask.reply.send(Err(why.into()));
            return Ok(false);
        }
    };
    writer.send(&Response::Lent).await?;
    // A client that left meanwhile never gets it: the host reads on when its connection ends.
    let _ = ask.reply.send(Ok(fd));
    Ok(true)
}

/// Answers a request to borrow invocation `id`'s stdout while it is lent already.
pub(crate) fn refuse_lent(ask: Ask, id: u64) {
    let why = match ask.invocation == id {
        true => format!("invocation {id}'s output is lent to its client already"),
        false => format!("invocation {} is not running", ask.invocation),
    };
    let _ = ask.reply.send(Err(why));
}

/// Waits until the client gives the FIFO back: `Returned`, `Abandon`, or its connection's end
/// (`None`). Acknowledgements that arrive meanwhile are applied; anything else is moot now.
/// `within`: how long a client that was let go may take (it stops at once); `None` waits
/// for as long as the client drains (its stdout may be slow), which ends with it anyway.
pub(crate) async fn returned(
    host: &Host,
    requests: &mut mpsc::Receiver<Request>,
    within: Option<Duration>,
) -> Returned {
    let wait = async {
        loop {
            match requests.recv().await {
                Some(Request::Returned) => return Returned::Back,
                Some(Request::Ack(seq)) => host.outbox.ack(seq),
                Some(Request::Abandon) => return Returned::Abandoned,
                None => return Returned::Gone,
                Some(_) => {}
            }
        }
    };
    match within {
        Some(t) => tokio::time::timeout(t, wait)
            .await
            .unwrap_or(Returned::Back),
        None => wait.await,
    }
}

/// The command ended while its stdout was lent: asks for it back (`Reclaim`) and waits.
pub(crate) async fn reclaim(
    host: &Host,
    writer: &mut FrameWriter<OwnedWriteHalf>,
    requests: &mut mpsc::Receiver<Request>,
) -> Returned {
    match writer.send(&Response::Reclaim).await {
        Ok(()) => returned(host, requests, None).await,
        Err(_) => Returned::Gone,
    }
}

/// How a lent FIFO came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Returned {
    Back,
    Abandoned,
    Gone,
}
