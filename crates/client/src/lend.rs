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
pub(crate) fn splice_once(fifo: &OwnedFd, out: &OwnedFd) -> std::io::Result<usize> {
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
pub(crate) fn splice_once(_: &OwnedFd, _: &OwnedFd) -> std::io::Result<usize> {
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
pub(crate) fn readable(fifo: &OwnedFd) -> bool {
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

pub(crate) fn gather() {
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
