//! Borrowing a local command's stdout FIFO from its host (host protocol 8) and moving its
//! bytes into our stdout with `splice(2)`: the pages move from pipe to pipe, with no copy
//! through the host, the socket or this process (docs/PROFILES.md §4).
//!
//! A caller opts in with [`crate::Invocation::splice_stdout`] (its stdout must be a pipe);
//! the library asks only after [`LEND_AFTER`] bytes came the ordinary way, so short outputs
//! pay nothing, and only of a host it reached straight that speaks protocol 8. The host's
//! `Lent` marks where the frames end and the FIFO begins; its `Reclaim` (the command ended)
//! has us drain the FIFO and say `Returned`. The splicing runs on a thread of its own, woken
//! through a pipe, so that the frames of the invocation (stderr, Ctrl-C's effects, the exit)
//! go on meanwhile.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

/// Bytes of stdout that come in frames before the FIFO is asked for.
pub const LEND_AFTER: u64 = 1 << 20;

/// The first host protocol version that lends.
pub(crate) const LENDING_HOSTS: u32 = 8;

/// Most bytes read from the FIFO after `Reclaim`: a background job that floods the
/// command's stdout must not keep the invocation from ending (as the host's own drain).
const DRAIN_LIMIT: u64 = 4 << 20;

/// How the splicing ended.
#[derive(Debug)]
pub(crate) enum End {
    /// Every writer closed the FIFO.
    Eof,
    /// Stopped as asked (after draining, if asked to drain).
    Stopped,
    /// Our stdout's reader went away (EPIPE).
    Closed,
    /// Something else failed; the host reads on once the FIFO is returned.
    Failed,
}

/// Where lending stands for one invocation.
pub(crate) enum Lending {
    /// Counting stdout bytes that came in frames.
    Waiting {
        host: PathBuf,
        out: OwnedFd,
        counted: u64,
    },
    /// The FIFO was asked for on a connection of its own.
    Asked {
        out: OwnedFd,
        answer: tokio::task::JoinHandle<Option<OwnedFd>>,
    },
    Active(Splicer),
    Over,
}

impl Lending {
    pub(crate) fn new(host: PathBuf, out: OwnedFd) -> Lending {
        Lending::Waiting {
            host,
            out,
            counted: 0,
        }
    }

    /// Counts `n` stdout bytes that came in a frame; asks for the FIFO once there were enough.
    pub(crate) fn counted(&mut self, n: usize, invocation: u64) {
        let Lending::Waiting { counted, .. } = self else {
            return;
        };
        *counted += n as u64;
        if *counted < LEND_AFTER {
            return;
        }
        if let Lending::Waiting { host, out, .. } = std::mem::replace(self, Lending::Over) {
            let answer = tokio::spawn(ask(host, invocation));
            *self = Lending::Asked { out, answer };
        }
    }

    /// The host's `Lent`: starts splicing if the FIFO came. False if it did not (the caller
    /// gives it back at once so that the host reads on).
    pub(crate) async fn lent(&mut self) -> bool {
        match std::mem::replace(self, Lending::Over) {
            Lending::Asked { out, answer } => match answer.await.ok().flatten() {
                Some(fifo) => match Splicer::start(fifo, out) {
                    Ok(s) => {
                        *self = Lending::Active(s);
                        true
                    }
                    Err(_) => false,
                },
                None => false,
            },
            _ => false,
        }
    }
}

/// Asks the host for the FIFO; `None` on any refusal or failure (output then keeps coming in
/// frames, as if never asked).
async fn ask(host: PathBuf, invocation: u64) -> Option<OwnedFd> {
    use tether_proto::{Request, Response};
    let stream = tokio::net::UnixStream::connect(&host).await.ok()?;
    let mut frames = Vec::new();
    for req in [
        Request::Hello {
            version: LENDING_HOSTS,
            agent: format!("tether-client/{}", env!("CARGO_PKG_VERSION")),
            client: None,
        },
        Request::Lend { invocation },
    ] {
        frames.extend(tether_proto::encode(&req).ok()?);
    }
    let mut stream = stream;
    tokio::io::AsyncWriteExt::write_all(&mut stream, &frames)
        .await
        .ok()?;
    // The `Hello` answer and then the `Ok` that carries the descriptor: a few reads at most,
    // each through recvmsg so that the descriptor is not dropped.
    let mut got = Vec::new();
    for _ in 0..8 {
        let (bytes, fd) = tether_transport::unix::recv_with_fd(&stream).await.ok()?;
        if bytes.is_empty() {
            return None;
        }
        got.extend_from_slice(&bytes);
        if let Some(fd) = fd {
            let mut reader = tether_transport::FrameReader::new(std::io::Cursor::new(got));
            let hello = reader.read::<Response>().await.ok()?;
            let answer = reader.read::<Response>().await.ok()?;
            return match (hello, answer) {
                (Some(Response::Hello { .. }), Some(Response::Ok)) => Some(fd),
                _ => None,
            };
        }
        if got.len() > 64 * 1024 {
            return None;
        }
    }
    None
}

/// The thread that splices, and the pipe that tells it to stop.
pub(crate) struct Splicer {
    stop: OwnedFd,
    done: Option<tokio::sync::oneshot::Receiver<End>>,
}

impl Splicer {
    fn start(fifo: OwnedFd, out: OwnedFd) -> std::io::Result<Splicer> {
        let (stop_r, stop_w) = nix::unistd::pipe().map_err(std::io::Error::from)?;
        let (tx, done) = tokio::sync::oneshot::channel();
        // Wider pipes on both sides: each of the three processes on the path (the command,
        // this thread, our reader) then wakes once a megabyte instead of once per 64 KiB.
        // The FIFO is the session's and lives on: it is narrowed again when we are done, as
        // a user's pipes all count against one limit (`pipe-user-pages-soft`).
        tether_transport::widen_pipe(&fifo);
        tether_transport::widen_pipe(&out);
        std::thread::Builder::new()
            .name("tether-splice".into())
            .spawn(move || {
                let _ = tx.send(splice_loop(&fifo, &out, &stop_r));
                narrow_pipe(&fifo);
            })?;
        Ok(Splicer {
            stop: stop_w,
            done: Some(done),
        })
    }

    /// Waits for the splicing to end by itself (end of file, a closed stdout, a failure).
    pub(crate) async fn ended(&mut self) -> End {
        match self.done.as_mut() {
            Some(done) => {
                let end = done.await.unwrap_or(End::Stopped);
                self.done = None;
                end
            }
            None => std::future::pending().await,
        }
    }

    /// Tells the thread to drain what is left (`drain`) or to stop now, and waits for it.
    pub(crate) async fn finish(&mut self, drain: bool) -> End {
        let _ = nix::unistd::write(&self.stop, if drain { b"d" } else { b"n" });
        match self.done.take() {
            Some(done) => done.await.unwrap_or(End::Stopped),
            None => End::Stopped,
        }
    }
}

impl Drop for Splicer {
    fn drop(&mut self) {
        // A thread still running stops at its next wake-up; the write wakes it.
        let _ = nix::unistd::write(&self.stop, b"n");
    }
}

/// Back to the default 64 KiB (refused, harmlessly, while more than that is buffered).
fn narrow_pipe(fd: &OwnedFd) {
    #[cfg(target_os = "linux")]
    {
        let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(64 * 1024));
    }
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
}

#[cfg(target_os = "linux")]
fn splice_once(fifo: &OwnedFd, out: &OwnedFd) -> std::io::Result<usize> {
    // SAFETY: both descriptors are open for the call; no offsets are passed (pipes).
    let n = unsafe {
        libc::splice(
            fifo.as_raw_fd(),
            std::ptr::null_mut(),
            out.as_raw_fd(),
            std::ptr::null_mut(),
            1 << 20,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(not(target_os = "linux"))]
fn splice_once(_: &OwnedFd, _: &OwnedFd) -> std::io::Result<usize> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// Waits until `fd` is ready for `events` or the stop pipe has a word; returns that word.
fn wait(fd: &OwnedFd, events: libc::c_short, stop: &OwnedFd, timeout_ms: i32) -> Option<u8> {
    let mut fds = [
        libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: `fds` is a valid array of two pollfd for the duration of the call.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
    if r > 0 && fds[1].revents != 0 {
        let mut word = [0u8; 1];
        return match nix::unistd::read(stop, &mut word) {
            Ok(1) => Some(word[0]),
            _ => Some(b'n'),
        };
    }
    None
}

/// Whether the FIFO has bytes (or no writers) right now.
fn readable(fifo: &OwnedFd) -> bool {
    let mut fds = [libc::pollfd {
        fd: fifo.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: one valid pollfd, no wait.
    unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) > 0 }
}

/// How long a woken splicer lets bytes gather before it moves them. Commands write in small
/// pieces (`head` and `cat` 4-8 KiB at a time) and a pipe wakes its reader on every write into
/// an empty pipe, so a splicer that moved each piece at once would wake half a million times
/// per 2 GiB, as would our own stdout's reader. A tenth of a millisecond lets up to a
/// megabyte gather (the FIFO is widened to that) at the price of at most that much latency,
/// and only for commands that already wrote a megabyte.
const GATHER: std::time::Duration = std::time::Duration::from_micros(100);

fn gather() {
    std::thread::sleep(GATHER);
}

fn splice_loop(fifo: &OwnedFd, out: &OwnedFd, stop: &OwnedFd) -> End {
    let mut draining = false;
    let mut drained = 0u64;
    loop {
        match splice_once(fifo, out) {
            Ok(0) => return End::Eof,
            Ok(n) => {
                if draining {
                    drained += n as u64;
                    if drained >= DRAIN_LIMIT {
                        return End::Stopped;
                    }
                }
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EPIPE) => return End::Closed,
                Some(libc::EAGAIN) => {
                    // Either the FIFO is empty or our stdout is full: wait for the one that
                    // blocks, or for a word from the stop pipe.
                    let word = if readable(fifo) {
                        wait(out, libc::POLLOUT, stop, -1)
                    } else if draining {
                        return End::Stopped;
                    } else {
                        let word = wait(fifo, libc::POLLIN, stop, -1);
                        if word.is_none() {
                            gather();
                        }
                        word
                    };
                    match word {
                        Some(b'd') => draining = true,
                        Some(_) => return End::Stopped,
                        None => {}
                    }
                }
                _ => return End::Failed,
            },
        }
    }
}

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
pub(crate) fn splice_in(input: &OwnedFd, fifo: &OwnedFd) -> bool {
    // Both pipes wide, so that a megabyte can gather on our side while we wait (`gather`).
    tether_transport::widen_pipe(fifo);
    tether_transport::widen_pipe(input);
    loop {
        match splice_once(input, fifo) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN) => {
                    // Our stdin is empty or the FIFO is full: wait for the one that blocks.
                    let ready = if readable(input) {
                        poll_one(fifo, libc::POLLOUT)
                    } else {
                        let ready = poll_one(input, libc::POLLIN);
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

/// What [`crate::Invocation::forward_stdin`]'s thread does: frames first; with `lend` (the
/// host's socket and the invocation), once [`LEND_AFTER`] bytes went, a pipe or a file is
/// spliced into the command's stdin FIFO instead; then the end of stdin.
pub(crate) fn forward(
    input: OwnedFd,
    tx: &tokio::sync::mpsc::Sender<crate::invocation::Control>,
    mut lend: Option<(PathBuf, u64)>,
) {
    use crate::invocation::Control;
    use std::io::Read;
    let spliceable = std::fs::File::from(match input.try_clone() {
        Ok(fd) => fd,
        Err(_) => return,
    })
    .metadata()
    .is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_fifo() || m.file_type().is_file()
    });
    if !spliceable || !cfg!(target_os = "linux") {
        lend = None;
    }
    let mut file = std::fs::File::from(input);
    let mut sent = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if sent >= LEND_AFTER
            && let Some((host, invocation)) = lend.take()
            && let Some(fifo) = ask_stdin(&host, invocation, sent)
        {
            let input = OwnedFd::from(file);
            splice_in(&input, &fifo);
            // Our write end closes first: the command sees end-of-file once the host's goes.
            drop(fifo);
            let _ = tx.blocking_send(Control::Eof);
            return;
        }
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if tx.blocking_send(Control::Stdin(buf[..n].to_vec())).is_err() {
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
