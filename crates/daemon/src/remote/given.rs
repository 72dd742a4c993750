//! A relay's side of the CLI: its frames, and the stdin it may give (`Request::GiveStdin`).
//!
//! For a command on another computer, stdin used to cross the CLI (read, framed, written to
//! the daemon's socket) and then the relay (read, passed on). A CLI whose stdin is not a
//! terminal now gives it to the relay once a megabyte went in frames: a thread here reads it
//! straight into frames for the link, in the same channel and order as the CLI's own frames,
//! so the relay's replay after a reconnection, its handling of a vanished CLI and its
//! backpressure are the same for both. The CLI's going still ends it: the thread stops reading (without
//! swallowing a chunk it cannot pass on) and the relay ends the command's stdin as before.

use super::far_writer::{FarWriter, ToFar};
use super::relay::DRAIN_FOR;
use super::stdin_log::StdinLog;
use crate::state::Reader;
use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use tether_proto::Request;
use tether_transport::stdin_read::{STDIN_CHUNK, givable, input_gathered, read_fresh, stopped};
use tokio::sync::{mpsc, oneshot};

/// Reads the CLI's frames into `tx` on a task of its own (reading a frame is not
/// cancel-safe). After `StdinGiven`, the given stdin goes into `tx` too, read by a thread;
/// the CLI's own stdin frames after that are dropped (it promised to send none). Ctrl-C,
/// leaving and acknowledgements go to `urgent` instead, which the relay always reads (and,
/// once the CLI has gone, reads together with `tx`): they never wait behind stdin the command
/// has not taken yet.
pub(super) fn read_cli(
    reader: Reader,
    (tx, urgent): (mpsc::Sender<Request>, mpsc::Sender<Request>),
    given: Option<oneshot::Receiver<OwnedFd>>,
) {
    tokio::spawn(async move {
        let mut reader = reader;
        let mut given = given;
        let mut gave = false;
        // The write end of the reading thread's stop pipe: it stops once the CLI has gone.
        let mut _stop = None;
        while let Ok(Some(r)) = reader.read::<Request>().await {
            match r {
                Request::StdinGiven if !gave => {
                    gave = true;
                    let fd = given.take().and_then(|mut g| g.try_recv().ok());
                    match fd.and_then(|fd| read_given(fd, tx.clone())) {
                        Some(stop) => _stop = Some(stop),
                        // Nothing given that we could read: no more stdin can come.
                        None => {
                            if tx.send(Request::StdinEof).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                Request::StdinGiven | Request::Stdin(_) | Request::StdinEof if gave => {}
                Request::Cancel | Request::Abandon | Request::Ack(_) => {
                    if urgent.send(r).await.is_err() {
                        return;
                    }
                }
                r => {
                    if tx.send(r).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
}

/// Starts reading the pipe `fd` into `Stdin` frames on a thread, then `StdinEof` at its end.
/// Returns the write end of its stop pipe: dropping it stops the thread before its next read.
/// The thread also stops, without reading, once the relay no longer takes frames.
fn read_given(fd: OwnedFd, tx: mpsc::Sender<Request>) -> Option<OwnedFd> {
    if !givable(&fd) {
        return None;
    }
    let (stop, stop_w) = nix::unistd::pipe().ok()?;
    // Room for a megabyte to gather while the link is busy: fewer, fuller frames.
    tether_transport::widen_pipe(&fd);
    // A pipe that runs dry is polled beside the stop pipe anyway; anything else is always
    // ready to read, so the stop pipe is looked at before each read.
    let always_ready = !tether_transport::stdin_read::is_fifo(&fd);
    std::thread::Builder::new()
        .name("tether-given-stdin".into())
        .spawn(move || {
            loop {
                if !input_gathered(&fd, &stop) || (always_ready && stopped(&stop)) || tx.is_closed()
                {
                    return;
                }
                match read_fresh(&fd, STDIN_CHUNK) {
                    Ok(data) if data.is_empty() => break,
                    Ok(data) => {
                        if tx.blocking_send(Request::Stdin(data)).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = tx.blocking_send(Request::StdinEof);
        })
        .ok()?;
    Some(stop_w)
}

/// The CLI went away (killed, or it left after an `Abandon` not passed on yet). What it sent
/// before going still goes to the far side, in order; then, as nothing more of its stdin can
/// come, the command reads the end of it, as it would from a CLI on its own computer: a `cat`
/// or a copy's side fed by a killed CLI ends instead of holding the session until someone runs
/// `receive`. Dropping the channel then lets the far command go on, Disconnected.
///
/// Meanwhile the far side's frames are read and dropped: a host blocked writing output reads
/// no requests.
pub(super) async fn cli_gone<T>(
    (mut cli_rx, urgent, pending): (
        mpsc::Receiver<Request>,
        &mut mpsc::Receiver<Request>,
        VecDeque<ToFar>,
    ),
    stdin: &mut StdinLog,
    far: &FarWriter,
    far_rx: &mut mpsc::Receiver<T>,
) {
    let last = async {
        for m in pending {
            if !far.send(m).await {
                return;
            }
        }
        // With what it sent apart (Ctrl-C, acknowledgements, its leaving), read together: its
        // reader waits to pass on either, and must never wait for the other.
        let (mut frames, mut apart) = (true, true);
        while frames || apart {
            let r = tokio::select! {
                r = cli_rx.recv(), if frames => r.ok_or(true),
                r = urgent.recv(), if apart => r.ok_or(false),
            };
            // Whichever ended, the other is read to its end.
            let r = match r {
                Ok(r) => r,
                Err(true) => {
                    frames = false;
                    continue;
                }
                Err(false) => {
                    apart = false;
                    continue;
                }
            };
            if matches!(r, Request::StdinEof) {
                stdin.eof();
            }
            let m = match r {
                Request::Stdin(d) => ToFar::Stdin(bytes::Bytes::from(d)),
                r => r.into(),
            };
            if !far.send(m).await {
                return;
            }
        }
        if !stdin.ended() {
            far.send(Request::StdinEof.into()).await;
        }
    };
    let dropped = async { while far_rx.recv().await.is_some() {} };
    let _ = tokio::time::timeout(DRAIN_FOR, async {
        tokio::select! {
            _ = last => {}
            // The far side ended: nothing more can reach it.
            _ = dropped => {}
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn a_given_pipe_is_read_to_its_end_and_ended_once() {
        let (r, mut w) = std::io::pipe().unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let _stop = read_given(r.into(), tx).expect("a pipe is read");
        let writer = std::thread::spawn(move || w.write_all(&vec![7u8; 300_000]).unwrap());
        let mut got = 0;
        loop {
            match rx.recv().await {
                Some(Request::Stdin(d)) => {
                    assert!(d.len() <= STDIN_CHUNK);
                    got += d.len();
                }
                Some(Request::StdinEof) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        writer.join().unwrap();
        assert_eq!(got, 300_000);
        assert!(rx.recv().await.is_none(), "nothing after the end");
    }

    #[tokio::test]
    async fn a_stopped_reader_leaves_the_rest_in_the_pipe() {
        let (r, mut w) = std::io::pipe().unwrap();
        let keep = r.try_clone().unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let stop = read_given(r.into(), tx).unwrap();
        w.write_all(b"first").unwrap();
        assert_eq!(rx.recv().await, Some(Request::Stdin(b"first".to_vec())));
        drop(stop);
        assert!(rx.recv().await.is_none(), "stopped without an end of stdin");
        w.write_all(b"rest").unwrap();
        drop(w);
        let mut left = String::new();
        std::io::Read::read_to_string(&mut &keep, &mut left).unwrap();
        assert_eq!(left, "rest", "nothing swallowed");
    }

    #[tokio::test]
    async fn a_given_file_is_read_to_its_end() {
        let path = std::env::temp_dir().join(format!("tether-given-{}", std::process::id()));
        std::fs::write(&path, vec![3u8; 200_000]).unwrap();
        let f: OwnedFd = std::fs::File::open(&path).unwrap().into();
        std::fs::remove_file(&path).unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let _stop = read_given(f, tx).expect("a file is read");
        let mut got = 0;
        while let Some(Request::Stdin(d)) = rx.recv().await {
            got += d.len();
        }
        assert_eq!(got, 200_000);
    }

    #[test]
    fn a_terminal_is_not_read() {
        let (tx, _rx) = mpsc::channel(1);
        // SAFETY: plain libc call; the descriptor is owned right after.
        let pty = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY) };
        assert!(pty >= 0, "a pseudo-terminal");
        // SAFETY: `pty` was just opened and is ours alone.
        let pty = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(pty) };
        assert!(read_given(pty, tx).is_none());
    }

    #[tokio::test]
    async fn a_device_is_read_to_its_end() {
        let (tx, mut rx) = mpsc::channel(1);
        let f: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
        let _stop = read_given(f, tx).expect("a device is read");
        assert_eq!(rx.recv().await, Some(Request::StdinEof));
    }
}
