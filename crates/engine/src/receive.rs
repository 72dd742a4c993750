//! `receive` and resume: streaming what a session kept ([`crate::outbox`]) to a client that
//! comes back, then the live rest and the exit status (SPEC §3.11–13).

use crate::requests::Requests;
use crate::session::Host;
use std::sync::Arc;
use tether_proto::{ClientId, ErrorInfo, ErrorKind, Request, Response};
use tether_transport::FrameWriter;
use tokio::net::unix::OwnedWriteHalf;

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
            host.spec.name,
            ob.quota()
        );
        if writer.send(&Response::Notice(note)).await.is_err() {
            return left(host, requests, keep).await;
        }
    }
    let mut changed = ob.subscribe();
    // Stdin is queued, never waited for (see [`crate::fifos::StdinFeed`]).
    let mut freed = host.stdin.freed();
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
                ob.delivered();
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
            _ = freed.changed(), if !host.stdin.has_room() => {}
            req = requests.rx.recv(), if host.stdin.has_room() => match req {
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
                Some(Request::Stdin(data)) => host.stdin.push(data),
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
