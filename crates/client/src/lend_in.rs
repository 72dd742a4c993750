//! Lending the command's stdin FIFO (host protocol 9), the input side of [`crate::lend`]:
//! [`crate::Invocation::forward_stdin`]'s thread sends a megabyte of our stdin in frames, then
//! asks the host for a write end of the command's stdin FIFO (`LendStdin`) and splices the rest
//! into it (copies, from what the kernel does not splice). Everything here runs on that
//! thread, so it blocks.

use crate::lend::{LEND_AFTER, gather, readable, splice_once};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use tether_transport::stdin_read::{STDIN_CHUNK, input_ready, read_fresh};

/// Decodes the host's answer to a lend: its `Hello` reply, then `Ok`.
fn answered_ok(bytes: &[u8]) -> bool {
    use tether_proto::{FRAME_HEADER_LEN, Response};
    let mut rest = bytes;
    let mut replies = Vec::new();
    while rest.len() >= FRAME_HEADER_LEN && replies.len() < 2 {
        let mut header = [0u8; FRAME_HEADER_LEN];
        header.copy_from_slice(&rest[..FRAME_HEADER_LEN]);
        let Ok(len) = tether_proto::frame_len(header) else {
            return false;
        };
        let Some(payload) = rest.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
            return false;
        };
        match tether_proto::decode::<Response>(payload) {
            Ok(r) => replies.push(r),
            Err(_) => return false,
        }
        rest = &rest[FRAME_HEADER_LEN + len..];
    }
    matches!(replies.as_slice(), [Response::Hello { .. }, Response::Ok])
}

/// The stdin FIFO's write end, asked for from a thread (blocking): `after` bytes went in
/// frames. `None` on any refusal (stdin then goes on in frames).
pub(crate) fn ask_stdin(host: &std::path::Path, invocation: u64, after: u64) -> Option<OwnedFd> {
    use std::io::Write;
    use tether_proto::Request;
    let mut stream = std::os::unix::net::UnixStream::connect(host).ok()?;
    let mut frames = Vec::new();
    for req in [
        Request::Hello {
            version: LENDING_STDIN,
            agent: format!("tether-client/{}", env!("CARGO_PKG_VERSION")),
            client: None,
        },
        Request::LendStdin { invocation, after },
    ] {
        frames.extend(tether_proto::encode(&req).ok()?);
    }
    stream.write_all(&frames).ok()?;
    let mut got = Vec::new();
    for _ in 0..8 {
        let mut buf = vec![0u8; 8 * 1024];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 2]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = nix::sys::socket::recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .ok()?;
        let n = msg.bytes;
        let mut fds = Vec::new();
        for c in msg.cmsgs().ok()? {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(v) = c {
                // SAFETY: the kernel just made these descriptors ours.
                fds.extend(
                    v.into_iter()
                        .map(|fd| unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }),
                );
            }
        }
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        let fd: Option<OwnedFd> = fds.into_iter().next();
        if let Some(fd) = fd {
            return answered_ok(&got).then_some(fd);
        }
        if got.len() > 64 * 1024 {
            return None;
        }
    }
    None
}

/// The first host protocol version that lends stdin.
pub(crate) const LENDING_STDIN: u32 = 9;

/// Splices `input` (our stdin) into the command's stdin FIFO until its end. Returns false if
/// the command stopped reading (EPIPE) or something failed.
pub(crate) fn splice_in(input: &OwnedFd, fifo: &OwnedFd, stop: &OwnedFd) -> bool {
    // Both pipes wide, so that a megabyte can gather on our side while we wait (`gather`).
    tether_transport::widen_pipe(fifo);
    tether_transport::widen_pipe(input);
    loop {
        match splice_once(input, fifo) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR) => {}
                // Not something the kernel splices from (some devices): copied instead.
                Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => {
                    return copy_in(input, fifo, stop);
                }
                Some(libc::EAGAIN) => {
                    // Our stdin is empty or the FIFO is full: wait for the one that blocks.
                    let ready = if readable(input) {
                        poll_one(fifo, libc::POLLOUT)
                    } else {
                        let ready = input_ready(input, stop);
                        gather();
                        ready
                    };
                    if !ready {
                        return false;
                    }
                }
                _ => return false,
            },
        }
    }
}

/// [`splice_in`] for an `input` the kernel does not splice from: read and written, a chunk
/// at a time.
fn copy_in(input: &OwnedFd, fifo: &OwnedFd, stop: &OwnedFd) -> bool {
    loop {
        if !input_ready(input, stop) {
            return false;
        }
        let data = match read_fresh(input, STDIN_CHUNK) {
            Ok(d) if d.is_empty() => return true,
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        let mut rest = &data[..];
        while !rest.is_empty() {
            // SAFETY: `rest` is valid for its length; `fifo` is open.
            let n = unsafe { libc::write(fifo.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
            if n >= 0 {
                rest = &rest[n as usize..];
                continue;
            }
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN) => {
                    if !poll_one(fifo, libc::POLLOUT) {
                        return false;
                    }
                }
                _ => return false,
            }
        }
    }
}

/// Waits for `events` on `fd`; false if poll failed.
fn poll_one(fd: &OwnedFd, events: libc::c_short) -> bool {
    let mut fds = [libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    }];
    loop {
        // SAFETY: one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 1, -1) };
        if r >= 0 {
            return true;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return false;
        }
    }
}

/// A socket, and what to name there: a host's and an invocation, or the daemon's and a relay's
/// token.
pub(crate) type Place = (PathBuf, u64);

/// What [`crate::Invocation::forward_stdin`]'s thread does: frames first; once [`LEND_AFTER`]
/// bytes went, with `lend` (the host's socket and the invocation) the rest is spliced into the
/// command's stdin FIFO instead, or with `give` (the daemon's socket and the relay's token)
/// our stdin is given to the relay ([`crate::give`]); then the end of stdin. Stops without
/// reading further once `stop` says the invocation is over.
pub(crate) fn forward(
    input: OwnedFd,
    tx: &tokio::sync::mpsc::Sender<crate::invocation::Control>,
    (mut lend, mut give): (Option<Place>, Option<Place>),
    stop: &OwnedFd,
) {
    use crate::invocation::Control;
    // Anything but a terminal (which is never forwarded) is lent or given: a pipe or a file
    // spliced, anything else (a device, a socket) copied. Then our frames never hold up a
    // Ctrl-C behind stdin the command does not read.
    let lendable = tether_transport::stdin_read::givable(&input);
    if !lendable || !cfg!(target_os = "linux") {
        lend = None;
    }
    if !tether_transport::stdin_read::givable(&input) {
        give = None;
    }
    let file = std::fs::File::from(input);
    let mut sent = 0u64;
    loop {
        if sent >= LEND_AFTER
            && let Some((host, invocation)) = lend.take()
            && let Some(fifo) = ask_stdin(&host, invocation, sent)
        {
            let input = OwnedFd::from(file);
            splice_in(&input, &fifo, stop);
            // Our write end closes first: the command sees end-of-file once the host's goes.
            drop(fifo);
            let _ = tx.blocking_send(Control::Eof);
            return;
        }
        if sent >= LEND_AFTER
            && let Some((daemon, token)) = give.take()
            && crate::give::give_stdin(&daemon, token, &file)
        {
            // The relay reads it from here on, and ends the command's stdin at its end.
            let _ = tx.blocking_send(Control::Given);
            return;
        }
        if !input_ready(&file, stop) {
            return;
        }
        match read_fresh(&file, STDIN_CHUNK) {
            Ok(data) if data.is_empty() => break,
            Ok(data) => {
                let n = data.len();
                if tx.blocking_send(Control::Stdin(data)).is_err() {
                    return;
                }
                sent += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = tx.blocking_send(Control::Eof);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn what_the_kernel_does_not_splice_is_copied_whole() {
        let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let (mut fifo_r, fifo_w) = std::io::pipe().unwrap();
        let (stop, _stop_w) = nix::unistd::pipe().unwrap();
        let all: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sent = all.clone();
        let writer = std::thread::spawn(move || {
            ours.write_all(&sent).unwrap();
            ours.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            fifo_r.read_to_end(&mut got).unwrap();
            got
        });
        let (input, fifo): (OwnedFd, OwnedFd) = (theirs.into(), fifo_w.into());
        assert!(copy_in(&input, &fifo, &stop), "copied to the end");
        drop(fifo);
        writer.join().unwrap();
        assert!(reader.join().unwrap() == all, "every byte, in order");
    }

    #[test]
    fn a_stopped_copy_reads_no_more() {
        let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let (_fifo_r, fifo_w) = std::io::pipe().unwrap();
        let (stop, stop_w) = nix::unistd::pipe().unwrap();
        drop(stop_w);
        ours.write_all(b"left").unwrap();
        let (input, fifo): (OwnedFd, OwnedFd) = (theirs.into(), fifo_w.into());
        assert!(!copy_in(&input, &fifo, &stop));
        let mut left = [0u8; 4];
        std::io::Read::read_exact(&mut &std::fs::File::from(input), &mut left).unwrap();
        assert_eq!(&left, b"left", "nothing swallowed");
    }
}
