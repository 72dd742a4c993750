//! An invocation on another computer, relayed frame by frame between the CLI and the link, and
//! carried across a broken connection without losing or repeating a byte (SPEC §3.13).
//!
//! The far host numbers the invocation's output bytes and, because the relay asks for it
//! (`InvokeSpec::acked`), keeps every byte until the relay acknowledges it (`Ack`, sent every
//! [`ACK_EVERY`] bytes and on a timer). When the link dies, the relay tells the CLI it is
//! reconnecting (`Notice`), retries about once a second for up to [`reconnect_for`], and then
//! asks for the stream again from the first byte the CLI has not seen (`Resume`). If the
//! computer stays away, the session is left Disconnected there and the user is told how to
//! collect its output later.

use super::far_writer::{FarWriter, ToFar};
use super::requests;
use super::stdin_log::StdinLog;
use super::urgent::Urgent;
use crate::state::{Daemon, Reader, Writer};
use futures_util::stream::StreamExt;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tether_proto::{ErrorInfo, ErrorKind, InvokeSpec, RemoteTarget, Request, Response};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot};

/// Acknowledge at least this often (bytes), so the far host's kept output stays small.
const ACK_EVERY: u64 = 256 * 1024;
const ACK_TICK: Duration = Duration::from_millis(200);
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// How long a broken connection is retried: `TETHER_RECONNECT_TIMEOUT` (seconds), else 4 min.
fn reconnect_for() -> Duration {
    tether_settings::get().reconnect_timeout
}

enum End {
    /// The stream is over (exit, error).
    Done,
    /// The CLI went away.
    CliGone,
    /// The link broke.
    Lost,
}

/// A frame from the far side: output is only measured (it is passed on as it came), anything
/// else is decoded.
enum Frame {
    Output(usize),
    Other(Response),
}

/// Reads one whole frame (header included), so it can be passed on without re-encoding.
async fn read_raw<R: AsyncRead + Unpin>(r: &mut R) -> Option<(Vec<u8>, Frame)> {
    let mut header = [0u8; tether_proto::FRAME_HEADER_LEN];
    r.read_exact(&mut header).await.ok()?;
    let len = tether_proto::frame_len(header).ok()?;
    let mut buf = Vec::with_capacity(header.len() + len);
    buf.extend_from_slice(&header);
    tether_transport::read_into(r, &mut buf, len).await.ok()?;
    let payload = &buf[header.len()..];
    let frame = match tether_proto::output_data_len(payload) {
        Some(n) => Frame::Output(n),
        None => Frame::Other(tether_proto::decode(payload).ok()?),
    };
    Some((buf, frame))
}

/// Queues an acknowledgement without waiting: acknowledgements are cumulative, so one that
/// finds the queue full is left for the next. `Err` once the writer has stopped.
fn ack(far: &FarWriter, upto: u64) -> Result<bool, ()> {
    use tokio::sync::mpsc::error::TrySendError;
    match far.tx.try_send(Request::Ack(upto).into()) {
        Ok(()) => Ok(true),
        Err(TrySendError::Full(_)) => Ok(false),
        Err(TrySendError::Closed(_)) => Err(()),
    }
}

/// Relays `first` (an `Invoke` with `acked`, or a `Resume`) and everything after it. When
/// `client_acks`, the client's own `Ack`s (sent once it has written output out) are passed on
/// and the relay sends none: the far host then keeps what the client has not delivered.
/// `given` is where a stdin the CLI gives arrives ([`super::given`]).
pub async fn relay(
    daemon: &Daemon,
    rt: RemoteTarget,
    first: Request,
    client_acks: bool,
    (reader, given): (Reader, Option<oneshot::Receiver<std::os::fd::OwnedFd>>),
    mut cli: Writer,
) {
    let c = rt.computer.clone();
    // The CLI's frames (stdin, Ctrl-C), and the stdin it may give, arrive through a task of
    // their own: reading a frame is not cancel-safe. Ctrl-C and leaving come apart, never
    // behind stdin ([`Urgent`]).
    let (cli_tx, mut cli_rx) = mpsc::channel::<Request>(16);
    let (urgent_tx, urgent_rx) = mpsc::channel::<Request>(4);
    super::given::read_cli(reader, (cli_tx, urgent_tx), given);
    let mut urgent = Urgent::new(urgent_rx, &rt, matches!(first, Request::Invoke(_)));
    let mut session = match &first {
        Request::Resume { session, .. } => Some(session.clone()),
        _ => None,
    };
    let mut req = first;
    let mut seq = 0u64;
    let mut started = false;
    let mut outage: Option<Instant> = None;
    // Stdin sent so far (for replay), and what the CLI sent while the link was down.
    let mut stdin = StdinLog::default();
    let mut held: Vec<Request> = Vec::new();
    // After a `Resume`, the CLI's frames wait until the far side says where its stdin stands.
    let mut resuming = false;
    // The CLI went away while the link was down. The link is still retried: once the far
    // side is back, it gets what the CLI sent and the end of its stdin ([`cli_gone`]), so a
    // command reading it ends instead of holding the session.
    let mut orphaned = false;
    loop {
        let opened = requests::open(daemon, &rt, &req, &[]).await;
        let (far_r, far_w) = match opened {
            Ok(pair) => pair,
            Err(e) => {
                let retry =
                    outage.is_some() && matches!(e.kind, ErrorKind::Connection | ErrorKind::Lost);
                if !retry {
                    let _ = cli.send(&Response::Error(e)).await;
                    return;
                }
                let since = outage.get_or_insert_with(Instant::now);
                let left = reconnect_for().saturating_sub(since.elapsed());
                if left.is_zero() {
                    // Named as this client names it, so the hint is a command that works.
                    let name = match &session {
                        Some(iid) => daemon
                            .registry
                            .lock()
                            .await
                            .remotes
                            .get(iid)
                            .map(|h| h.info.name.clone()),
                        None => None,
                    };
                    let _ = cli
                        .send(&Response::Error(gave_up(&c, session.as_deref(), name)))
                        .await;
                    return;
                }
                let note = format!(
                    "network connection to {c} interrupted; reconnecting ({}s left)…",
                    left.as_secs()
                );
                if cli.send(&Response::Notice(note)).await.is_err() {
                    orphaned = true;
                }
                let wake = tokio::time::Instant::now() + RETRY_EVERY;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(wake) => break,
                        r = cli_rx.recv(), if !stdin.full() && !orphaned => match r {
                            None => orphaned = true,
                            Some(r) => hold(&mut stdin, &mut held, r),
                        },
                        r = urgent.rx.recv(), if urgent.open => match r {
                            None => urgent.open = false,
                            Some(r) => hold(&mut stdin, &mut held, r),
                        },
                    }
                }
                continue;
            }
        };
        if outage.take().is_some() {
            let note = format!("network connection to {c} restored");
            if cli.send(&Response::Notice(note)).await.is_err() {
                orphaned = true;
            }
        }
        // No buffer of our own: the channel's reader holds what arrived, and each frame is
        // read from it straight into the buffer it is passed on in.
        let (far_r, leftover) = far_r.into_parts();
        let mut far_r = std::io::Cursor::new(leftover).chain(far_r);
        let (far_tx, mut far_rx) = mpsc::channel::<(Vec<u8>, Frame)>(32);
        let far_task = tokio::spawn(async move {
            while let Some(frame) = read_raw(&mut far_r).await {
                if far_tx.send(frame).await.is_err() {
                    return;
                }
            }
        });
        // What goes to the far side is written by a task of its own, so that waiting for the
        // link's credit never stops this loop from reading output (see [`super::far_writer`]);
        // here it waits in `pending`, in order, while the writer's queue is full.
        let far = FarWriter::spawn(far_w);
        let mut pending: VecDeque<ToFar> = VecDeque::new();
        let mut acked = seq;
        let mut tick = tokio::time::interval(ACK_TICK);
        let end = loop {
            tokio::select! {
                frame = far_rx.recv() => {
                    let Some((raw, frame)) = frame else { break End::Lost };
                    let exit = matches!(frame, Frame::Other(Response::Exit(_)));
                    let last = exit || matches!(frame, Frame::Other(Response::Error(_)));
                    match frame {
                        Frame::Other(Response::Started {
                            invocation,
                            session: s,
                            from,
                            stdin_from,
                        }) => {
                            urgent.started(&s, invocation);
                            session = Some(s);
                            if started {
                                // A resumed stream starts where we asked, or nothing is lost
                                // only if it starts no later.
                                if from > seq {
                                    let e = gap(&c, seq, from);
                                    let _ = cli.send(&Response::Error(e)).await;
                                    break End::Done;
                                }
                                // Stdin goes on from the far command's count, then whatever
                                // the CLI sent meanwhile.
                                let mut again = match stdin_from.map(|k| stdin.replay_from(k)) {
                                    Some(Ok(frames)) => frames,
                                    Some(Err(lost)) => {
                                        let e = stdin_gap(&c, lost);
                                        let _ = cli.send(&Response::Error(e)).await;
                                        break End::Done;
                                    }
                                    None => Vec::new(),
                                };
                                again.append(&mut held);
                                resuming = false;
                                pending.extend(again.into_iter().map(ToFar::from));
                                continue;
                            }
                            started = true;
                            seq = from;
                            acked = from;
                        }
                        Frame::Output(n) => seq += n as u64,
                        Frame::Other(_) => {}
                    }
                    if cli.write_raw(&raw).await.is_err() {
                        break End::CliGone;
                    }
                    if last {
                        let _ = cli.flush().await;
                        // Past the end: the exit arrived too and the far host may forget it
                        // all. After an error (say, the session was disconnected) exactly what
                        // was delivered, so a later `receive` starts after it.
                        if !client_acks {
                            let upto = if exit { seq + 1 } else { seq };
                            let last_ack = far.send(Request::Ack(upto).into());
                            let _ = tokio::time::timeout(DRAIN_FOR, last_ack).await;
                        }
                        break End::Done;
                    }
                    if far_rx.is_empty() && cli.flush().await.is_err() {
                        break End::CliGone;
                    }
                    if !client_acks && seq - acked >= ACK_EVERY {
                        match ack(&far, seq) {
                            Ok(true) => acked = seq,
                            Ok(false) => {}
                            Err(()) => break End::Lost,
                        }
                    }
                }
                // One frame of the CLI's at a time waits for the writer.
                req = cli_rx.recv(), if !resuming && pending.is_empty() => match req {
                    Some(Request::Stdin(d)) => {
                        // The CLI's buffer goes on as it is, after a header of its own, and
                        // the log keeps the same buffer (no copy).
                        let d = bytes::Bytes::from(d);
                        stdin.push(d.clone());
                        pending.push_back(ToFar::Stdin(d));
                    }
                    Some(r) => {
                        if matches!(r, Request::StdinEof) {
                            stdin.eof();
                        }
                        pending.push_back(r.into());
                    }
                    None => {
                        // What it said last (leaving) was read before its end.
                        while let Ok(r) = urgent.rx.try_recv() {
                            urgent.take(daemon, r, &mut pending);
                        }
                        break End::CliGone;
                    }
                },
                r = urgent.rx.recv(), if urgent.open => match r {
                    Some(r) => urgent.take(daemon, r, &mut pending),
                    None => urgent.open = false,
                },
                ended = urgent.calls.next(), if !urgent.calls.is_empty() => {
                    urgent.ended(matches!(ended, Some(Ok(true))));
                    if !pending.is_empty() {
                        urgent.flush(daemon);
                    }
                }
                room = far.tx.reserve(), if !pending.is_empty() => match room {
                    Ok(room) => {
                        if let Some(m) = pending.pop_front() {
                            room.send(m);
                        }
                    }
                    Err(_) => break End::Lost,
                },
                _ = tick.tick() => {
                    if !client_acks && seq > acked {
                        match ack(&far, seq) {
                            Ok(true) => acked = seq,
                            Ok(false) => {}
                            Err(()) => break End::Lost,
                        }
                    }
                    if !client_acks {
                        urgent.acked(daemon, seq, !pending.is_empty());
                    } else if !pending.is_empty() {
                        urgent.flush(daemon);
                    }
                }
            }
        };
        if matches!(end, End::CliGone) {
            // Before the far reader goes: dropping it resets the channel, and the far end
            // drops whatever arrives after the reset.
            let beside = super::urgent::finish(&mut urgent.calls);
            let in_band = super::given::cli_gone(
                (cli_rx, &mut urgent.rx, pending),
                &mut stdin,
                &far,
                &mut far_rx,
            );
            tokio::join!(beside, in_band);
            far.finish(DRAIN_FOR).await;
            far_task.abort();
            return;
        }
        if matches!(end, End::Done) {
            // The last acknowledgement goes out before the reset.
            far.finish(DRAIN_FOR).await;
        } else {
            // Stdin not written yet is replayed from the log; anything else waits for the
            // link, as what the CLI sends during the outage does.
            for m in pending {
                if let ToFar::Req(r) = m {
                    hold(&mut stdin, &mut held, *r);
                }
            }
            far.finish(Duration::ZERO).await;
        }
        far_task.abort();
        match (end, &session) {
            (End::Done | End::CliGone, _) => return,
            (End::Lost, None) => {
                let e = ErrorInfo::new(ErrorKind::Lost, format!("computer {c}: connection lost"));
                let _ = cli.send(&Response::Error(e)).await;
                return;
            }
            (End::Lost, Some(s)) => {
                if outage.is_none() {
                    let note = format!(
                        "network connection to {c} interrupted; reconnecting ({}s left)…",
                        reconnect_for().as_secs()
                    );
                    if cli.send(&Response::Notice(note)).await.is_err() {
                        orphaned = true;
                    }
                }
                outage.get_or_insert_with(Instant::now);
                req = Request::Resume {
                    session: s.clone(),
                    from: seq,
                    keep_stdin: true,
                    keep: matches!(&req, Request::Resume { keep: true, .. }),
                };
                resuming = true;
            }
        }
    }
}

/// How long what a CLI sent before it went away may take to read.
pub(super) const DRAIN_FOR: Duration = Duration::from_secs(5);

/// A frame from the CLI while the link is down: stdin goes to the log (it is replayed from
/// the far command's count); anything else waits for the link.
fn hold(stdin: &mut StdinLog, held: &mut Vec<Request>, r: Request) {
    match r {
        Request::Stdin(d) => stdin.push(bytes::Bytes::from(d)),
        Request::StdinEof => stdin.eof(),
        // Only the newest acknowledgement matters.
        Request::Ack(_) => {
            held.retain(|h| !matches!(h, Request::Ack(_)));
            held.push(r);
        }
        // A Ctrl-C pressed again changes nothing (and a hostile CLI's thousand take no room).
        other if held.contains(&other) => {}
        other => held.push(other),
    }
}

fn stdin_gap(c: &str, lost: u64) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::Lost,
        format!("computer {c}: {lost} bytes of standard input were lost while reconnecting"),
    )
}

fn gave_up(c: &str, session: Option<&str>, name: Option<String>) -> ErrorInfo {
    let how = match (session, name) {
        (Some(_), Some(n)) => {
            format!("; the session is Disconnected there: 'tether receive {n}' collects its output")
        }
        (Some(_), None) => {
            "; the session is Disconnected there: 'tether receive' collects its output".into()
        }
        (None, _) => String::new(),
    };
    ErrorInfo::new(
        ErrorKind::Lost,
        format!(
            "computer {c}: connection lost and not restored within {}s{how}",
            reconnect_for().as_secs()
        ),
    )
}

fn gap(c: &str, have: u64, from: u64) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::Lost,
        format!("computer {c}: output bytes {have}..{from} were lost while reconnecting"),
    )
}

/// Runs an invocation on another computer: in the session `spec.session` names there (an
/// instance id), or in a temporary one when it is empty. `giver` is the CLI's process when
/// it may give this relay its stdin (a CLI of this release forwarding stdin).
pub async fn invoke(
    daemon: &Daemon,
    rt: RemoteTarget,
    mut spec: InvokeSpec,
    (reader, giver): (Reader, Option<i32>),
    mut writer: Writer,
) {
    spec.remote = None;
    spec.env.clear();
    spec.cwd = None;
    // The far host keeps output until acknowledged, so a broken link can resume. A client that
    // acknowledges what it delivered (the CLI does) is relayed; otherwise the relay
    // acknowledges what it passed on.
    let client_acks = spec.acked;
    spec.acked = true;
    let mut given = None;
    let mut _place = None;
    if let Some(pid) = giver.filter(|_| spec.stdin) {
        let (place, rx) = daemon.gifts.register(pid);
        if writer
            .feed(&Response::Relayed { token: place.token })
            .await
            .is_err()
        {
            return;
        }
        (_place, given) = (Some(place), Some(rx));
    }
    relay(
        daemon,
        rt,
        Request::Invoke(spec),
        client_acks,
        (reader, given),
        writer,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(rs: &[Response]) -> Vec<u8> {
        rs.iter()
            .flat_map(|r| tether_proto::encode(r).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn output_frames_are_measured_and_passed_on_whole_and_others_decoded() {
        let out = Response::Output {
            stream: tether_proto::Stream::Stdout,
            data: b"hello".to_vec(),
        };
        let exit = Response::Exit(Default::default());
        let bytes = frames(&[out.clone(), exit.clone()]);
        let mut r = &bytes[..];
        let (raw, f) = read_raw(&mut r).await.unwrap();
        assert!(matches!(f, Frame::Output(5)));
        assert_eq!(
            raw,
            tether_proto::encode(&out).unwrap(),
            "passed on as it came"
        );
        let (_, f) = read_raw(&mut r).await.unwrap();
        assert!(matches!(f, Frame::Other(e) if e == exit));
        assert!(read_raw(&mut r).await.is_none(), "the end of the stream");
    }

    #[tokio::test]
    async fn a_cut_or_garbled_frame_ends_the_stream() {
        let bytes = frames(&[Response::Notice("n".into())]);
        let mut cut = &bytes[..bytes.len() - 1];
        assert!(read_raw(&mut cut).await.is_none());
        let mut junk: &[u8] = &[0, 0, 0, 2, 0xff, 0xff];
        assert!(read_raw(&mut junk).await.is_none());
        let mut huge: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(
            read_raw(&mut huge).await.is_none(),
            "a length past the limit"
        );
    }

    #[test]
    fn while_the_link_is_down_stdin_is_logged_and_only_the_newest_ack_waits() {
        let (mut log, mut held) = (StdinLog::default(), Vec::new());
        hold(&mut log, &mut held, Request::Stdin(b"ab".to_vec()));
        hold(&mut log, &mut held, Request::Ack(5));
        hold(&mut log, &mut held, Request::Cancel);
        hold(&mut log, &mut held, Request::Stdin(b"c".to_vec()));
        hold(&mut log, &mut held, Request::Ack(9));
        hold(&mut log, &mut held, Request::StdinEof);
        assert_eq!(held, vec![Request::Cancel, Request::Ack(9)]);
        assert_eq!(
            log.replay_from(1).unwrap(),
            vec![Request::Stdin(b"bc".to_vec()), Request::StdinEof]
        );
    }
}
