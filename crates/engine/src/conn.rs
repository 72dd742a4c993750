//! One connection to a session host.
//!
//! A connection arrives either from the daemon with a client's socket attached (`Handoff`), or
//! directly (`Hello`: the daemon asking for status or closing the session, or a client reusing a
//! connection it was handed before). Either way it then serves requests until the peer closes
//! it: several invocations may run one after another on one connection, so a client that keeps
//! it skips the daemon on every later call.

use crate::driver;
use crate::requests::Requests;
use crate::session::Host;
use std::sync::Arc;
use tether_proto::host::HostRequest;
use tether_proto::{ErrorInfo, ErrorKind, InvokeSpec, Request, Response, State};
use tether_transport::{FrameReader, FrameWriter};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;

pub(crate) async fn handle(host: Arc<Host>, stream: UnixStream) {
    if !matches!(tether_transport::unix::peer_is_us(&stream), Ok(true)) {
        return;
    }
    // The first read goes through recvmsg: a daemon handing over a client's connection sends
    // the descriptor with its first bytes.
    let Ok((initial, passed)) = tether_transport::unix::recv_with_fd(&stream).await else {
        return;
    };
    let (r, w) = stream.into_split();
    let mut reader = FrameReader::new(std::io::Cursor::new(initial).chain(r));
    let mut writer = FrameWriter::new(w);
    let first = reader.read::<Request>().await;
    match (&first, passed) {
        (Ok(Some(Request::Handoff { spec, prefix })), Some(fd)) => {
            let resumes = resumes(&mut reader).await;
            let Some((reader, writer)) = handed(&host, fd, prefix).await else {
                return;
            };
            return serve(host, reader, writer, Some(spec.clone()), resumes).await;
        }
        (
            Ok(Some(Request::HandoffReceive {
                prefix,
                from,
                acked,
                client,
                keep_stdin,
                keep,
            })),
            Some(fd),
        ) => {
            let Some((reader, mut writer)) = handed(&host, fd, prefix).await else {
                return;
            };
            let mut requests = Requests::spawn(reader);
            // Only a relay resuming a stream takes over its stdin.
            requests.resumes = *keep_stdin;
            let how = crate::receive::Receiving {
                from: *from,
                acked: *acked,
                client: client.clone(),
                keep_stdin: *keep_stdin,
                keep: *keep,
            };
            if crate::receive::receive(&host, &mut requests, &mut writer, how).await {
                serve_requests(host, requests, writer, *acked).await;
            }
            return;
        }
        _ => {}
    }
    if !tether_transport::answer_hello(
        first,
        &mut writer,
        &tether_transport::Speaks::session_host(),
    )
    .await
    {
        return;
    }
    serve(host, reader, writer, None, false).await;
}

/// Whether the handed client may come back with a `Resume` and go on with stdin: the
/// `HandoffClient` frame the daemon writes after the `Handoff` (host protocol 7). A daemon
/// before 7 sends none and closes its end, which reads as "resumes", its own meaning.
async fn resumes<R: AsyncRead + Unpin>(daemon: &mut FrameReader<R>) -> bool {
    let next = tokio::time::timeout(std::time::Duration::from_secs(2), daemon.read::<Request>());
    !matches!(
        next.await,
        Ok(Ok(Some(Request::HandoffClient { resumes: false })))
    )
}

type HandedReader =
    FrameReader<tokio::io::Chain<std::io::Cursor<Vec<u8>>, tokio::net::unix::OwnedReadHalf>>;

/// The client connection the daemon passed, with the bytes it had already read put back first.
/// It must come from the session's owner or from the host's own user (its daemon, a bridge
/// of the same account): the host checks the kernel's word for it itself, so no mistake in
/// a daemon that serves several users can hand a session to a stranger.
async fn handed(
    host: &Host,
    fd: std::os::fd::OwnedFd,
    prefix: &[u8],
) -> Option<(HandedReader, FrameWriter<OwnedWriteHalf>)> {
    let client = tether_transport::unix::stream_from_fd(fd).ok()?;
    let peer = tether_transport::unix::peer_uid(&client).ok();
    let own = nix::unistd::getuid().as_raw();
    if !peer.is_some_and(|uid| uid == own || Some(uid) == host.spec.owner_uid) {
        tracing::warn!(
            "session {}: refused a connection from uid {peer:?}",
            host.spec.name
        );
        let (_r, w) = client.into_split();
        let msg = format!(
            "session {}: permission denied (the connection is not its owner's)",
            host.spec.name
        );
        let err = Response::Error(ErrorInfo::new(ErrorKind::Permission, msg));
        let _ = FrameWriter::new(w).send(&err).await;
        return None;
    }
    let (cr, cw) = client.into_split();
    let reader = FrameReader::new(std::io::Cursor::new(prefix.to_vec()).chain(cr));
    Some((reader, FrameWriter::new(cw)))
}

/// Serves requests on one connection until the peer closes it.
async fn serve<R: AsyncRead + Unpin + Send + 'static>(
    host: Arc<Host>,
    reader: FrameReader<R>,
    mut writer: FrameWriter<OwnedWriteHalf>,
    first: Option<InvokeSpec>,
    resumes: bool,
) {
    let mut requests = Requests::spawn(reader);
    requests.resumes = resumes;
    let mut acking = false;
    if let Some(spec) = first {
        acking = spec.acked;
        if !invoke(&host, spec, &mut requests, &mut writer).await {
            return;
        }
    } else if writer.flush().await.is_err() {
        return;
    }
    serve_requests(host, requests, writer, acking).await;
}

/// `acking`: the last stream on this connection was one its client acknowledges (a relay's
/// or a resume), so a late `Ack` of its end still clears what is kept. On any other connection
/// an `Ack` that arrives after the stream ended (a `receive`'s, a look's) is stale and must
/// not trim output kept for someone else.
async fn serve_requests(
    host: Arc<Host>,
    mut requests: Requests,
    mut writer: FrameWriter<OwnedWriteHalf>,
    mut acking: bool,
) {
    while let Some(req) = requests.rx.recv().await {
        // What only its daemon asks, then the invocation stream of a client.
        let req = match HostRequest::try_from(req) {
            Ok(control) => {
                if !from_daemon(&host, control, &mut writer).await {
                    return;
                }
                continue;
            }
            Err(req) => req,
        };
        let ok = match req {
            Request::Invoke(spec) => {
                acking = spec.acked;
                invoke(&host, spec, &mut requests, &mut writer).await
            }
            Request::Ack(seq) => {
                if acking {
                    host.outbox.ack(seq);
                }
                true
            }
            // Stdin or Ctrl-C for an invocation that has already ended.
            Request::Stdin(_)
            | Request::StdinEof
            | Request::Cancel
            | Request::Abandon
            | Request::Returned => true,
            Request::Lend { invocation } => {
                crate::lend::serve(&host, invocation, &mut writer).await
            }
            Request::LendStdin { invocation, after } => {
                crate::lend::serve_stdin(&host, invocation, after, &mut writer).await
            }
            _ => {
                let msg = format!(
                    "session {}: request not valid for a session host",
                    host.spec.name
                );
                let err = Response::Error(ErrorInfo::new(ErrorKind::Usage, msg));
                writer.send(&err).await.is_ok()
            }
        };
        if !ok {
            return;
        }
    }
}

/// Serves a request of the host's daemon; false when the connection is done.
async fn from_daemon(
    host: &Arc<Host>,
    req: HostRequest,
    writer: &mut FrameWriter<OwnedWriteHalf>,
) -> bool {
    let sessions = |host: &Host| Response::Sessions(vec![host.info()]);
    match req {
        HostRequest::Info => writer.send(&sessions(host)).await.is_ok(),
        HostRequest::Disconnect(client) => {
            let reply = host.check_holder(&client).map(|()| {
                // A running command's client is let go (it goes on); an idle session is
                // marked.
                if host.lock_inner().busy {
                    host.detach.send_modify(|d| *d += 1);
                }
                host.set_disconnected();
                sessions(host)
            });
            let reply = reply.unwrap_or_else(Response::Error);
            writer.send(&reply).await.is_ok()
        }
        HostRequest::Connect(client) => {
            let reply = host.check_holder(&client).map(|()| {
                host.set_connected(&client);
                sessions(host)
            });
            let reply = reply.unwrap_or_else(Response::Error);
            writer.send(&reply).await.is_ok()
        }
        HostRequest::ClientGone(client) => {
            host.client_gone(&client);
            writer.send(&sessions(host)).await.is_ok()
        }
        HostRequest::PoolWatch => {
            // The first Ok says "subscribed": every later one, "free again".
            let mut free = host.pool_free.subscribe();
            if writer.send(&Response::Ok).await.is_err() {
                return false;
            }
            while free.changed().await.is_ok() {
                if writer.send(&Response::Ok).await.is_err() {
                    return false;
                }
            }
            false
        }
        HostRequest::Aside {
            client,
            invocation,
            what,
        } => {
            let reply = host.aside(&client, invocation, what).map(|()| Response::Ok);
            writer
                .send(&reply.unwrap_or_else(Response::Error))
                .await
                .is_ok()
        }
        HostRequest::Close => {
            host.finish(State::Closed, "removed".into());
            let _ = writer.send(&Response::Ok).await;
            false
        }
        // A hand-off comes only as a connection's first frame, with the client's connection.
        HostRequest::Handoff { .. } | HostRequest::HandoffReceive { .. } => {
            let msg = format!(
                "session {}: a hand-off without the client's connection",
                host.spec.name
            );
            let err = Response::Error(ErrorInfo::new(ErrorKind::Usage, msg));
            writer.send(&err).await.is_ok()
        }
    }
}

/// Runs one invocation; false when the connection cannot serve another.
async fn invoke(
    host: &Arc<Host>,
    spec: InvokeSpec,
    requests: &mut Requests,
    writer: &mut FrameWriter<OwnedWriteHalf>,
) -> bool {
    let alive = driver::invoke(host.clone(), spec, requests, writer).await;
    // A pooled host whose invocation ended cleanly was made free again before its `Exit`
    // (`driver::run`), and stays up for the next one.
    if host.spec.pooled && alive && !host.outbox.pending() && host.lock_inner().reason.is_none() {
        return alive;
    }
    // A temporary session serves exactly one invocation, then closes itself; one whose client
    // went away waits, Disconnected, for its output to be received (or its idle timeout).
    if host.spec.temporary && !host.outbox.pending() {
        host.finish(State::Closed, "temporary session finished".into());
        return false;
    }
    alive
}
