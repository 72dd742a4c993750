//! The session's terminal, for `tether enter` (SPEC §3.16): lines run on a PTY of the target,
//! so full-screen and interactive programs (vim, less, top, a REPL, `read -p`, sudo) work.
//!
//! The PTY is made the first time a session is entered, and the shell then takes it as its
//! controlling terminal (a session leader that opens a terminal acquires it), so `/dev/tty`
//! works for the programs it runs and the terminal's Ctrl-C reaches them. A session never
//! entered has no terminal, so a script's `sudo` fails at once instead of waiting for a
//! password nobody will type.
//!
//! A line's stdin, stdout and stderr are the PTY's slave. What the master reads is copied into
//! the invocation's stdout FIFO, so it flows (numbered, kept, resumed after a broken link) like
//! any invocation's output; the client's stdin frames are written to the master.
//!
//! A line ends when a marker the host writes behind the line's last output comes out of the
//! master (a PTY hands output over asynchronously, so nothing else says "all of it"); what
//! was typed during the line and never read is read back from the slave and returned to the
//! client for its next prompt; the terminal's interrupt character becomes SIGINT to the line's
//! processes only, never to the shell, so the rest of the line is abandoned as by `Cancel`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

/// Longest wait for the end-of-line marker (output stopped with ^S, a program that left the
/// terminal unable to pass it).
const FLUSH_LIMIT: Duration = Duration::from_millis(500);
/// Most type-ahead handed back after one line.
const MAX_TYPEAHEAD: usize = 1 << 20;

/// The end-of-line marker being waited for: an OSC sequence no terminal acts on, with a nonce.
struct Ending {
    marker: Vec<u8>,
    /// How much of the marker the master's output has matched so far (held back meanwhile).
    matched: usize,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

pub(crate) struct Tty {
    master: Arc<AsyncFd<OwnedFd>>,
    /// The slave's path, which each line is redirected to.
    pub slave: PathBuf,
    /// Kept open so the master never reads end-of-file between lines; also how the host
    /// writes the end-of-line marker and reads back type-ahead.
    slave_fd: Arc<OwnedFd>,
    /// Where the master's output goes while a line runs: its stdout FIFO.
    sink: Arc<tokio::sync::Mutex<Option<pipe::Sender>>>,
    ending: Arc<Mutex<Option<Ending>>>,
}

impl Tty {
    pub fn open() -> std::io::Result<Tty> {
        let pty = nix::pty::openpty(None, None).map_err(std::io::Error::from)?;
        let slave = nix::unistd::ttyname(&pty.slave).map_err(std::io::Error::from)?;
        // A session running as another user gets its terminal, as a login would.
        crate::runas::give_fd(&pty.slave)?;
        // Neither end is passed on to the shell or the programs it runs (a shell given its
        // terminal at birth takes it before exec: [`take_as_controlling`]).
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )?;
        }
        // Our own descriptions of both ends never block (the slave's is ours alone: the line
        // opens the slave by path).
        for fd in [&pty.master, &pty.slave] {
            let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)?;
            let flags =
                nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        }
        let tty = Tty {
            // SAFETY: an OwnedFd returns the same open descriptor for as long as it lives, and
            // the AsyncFd owns it.
            master: Arc::new(
                unsafe { AsyncFd::register(pty.master) }.map_err(std::io::Error::from)?,
            ),
            slave,
            slave_fd: Arc::new(pty.slave),
            sink: Default::default(),
            ending: Default::default(),
        };
        tokio::spawn(pump(
            tty.master.clone(),
            tty.sink.clone(),
            tty.ending.clone(),
        ));
        Ok(tty)
    }

    /// The slave's descriptor, for a shell that takes the terminal at birth (zsh, see
    /// [`take_as_controlling`]).
    pub fn slave_raw(&self) -> std::os::fd::RawFd {
        self.slave_fd.as_raw_fd()
    }

    /// From now on the master's output goes to `fifo` (the running line's stdout).
    pub async fn attach(&self, fifo: &std::path::Path) -> std::io::Result<()> {
        let tx = pipe::OpenOptions::new().open_sender(fifo)?;
        *self.sink.lock().await = Some(tx);
        Ok(())
    }

    /// The line ended: passes on everything it wrote, then lets go of the FIFO. The host
    /// writes a marker to the slave behind the line's output (the line's processes are done:
    /// nothing else writes before it) and waits for the master to hand it over.
    pub async fn detach(&self) {
        let nonce: u64 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()) << 32;
        let marker = format!("\x1b]tether-end;{nonce:016x}\x07").into_bytes();
        let (done, finished) = tokio::sync::oneshot::channel();
        if let Ok(mut e) = self.ending.lock() {
            *e = Some(Ending {
                marker: marker.clone(),
                matched: 0,
                done: Some(done),
            });
        }
        let written = nix::unistd::write(self.slave_fd.as_ref(), &marker) == Ok(marker.len());
        if written {
            let _ = tokio::time::timeout(FLUSH_LIMIT, finished).await;
        }
        if let Ok(mut e) = self.ending.lock() {
            *e = None;
        }
        self.sink.lock().await.take();
    }

    /// What was typed into the terminal during the line that nothing read, for the next
    /// prompt (as a shell's line editor would get it after `ssh -t`). Read from the slave with
    /// canonical mode off for a moment, so that a partly typed line comes too.
    pub fn unread(&self) -> Vec<u8> {
        use nix::sys::termios::{
            LocalFlags, SetArg, SpecialCharacterIndices, tcgetattr, tcsetattr,
        };
        let fd = self.slave_fd.as_ref();
        let Ok(orig) = tcgetattr(fd) else {
            return Vec::new();
        };
        let mut raw = orig.clone();
        raw.local_flags.remove(LocalFlags::ICANON);
        raw.control_chars[SpecialCharacterIndices::VMIN as usize] = 0;
        raw.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        if tcsetattr(fd, SetArg::TCSANOW, &raw).is_err() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while out.len() < MAX_TYPEAHEAD {
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        let _ = tcsetattr(fd, SetArg::TCSANOW, &orig);
        out
    }

    /// Sets the window size; the kernel sends SIGWINCH to the program in the foreground.
    pub fn resize(&self, rows: u16, cols: u16) {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: a valid master descriptor and a properly initialised winsize that outlives
        // the call.
        let _ = unsafe {
            libc::ioctl(
                self.master.get_ref().as_raw_fd(),
                libc::TIOCSWINSZ,
                &ws as *const libc::winsize,
            )
        };
    }

    /// A sender whose bytes are typed into the terminal (the line's stdin), with the count of
    /// bytes taken and the task that takes them.
    ///
    /// While the terminal turns its interrupt character into a signal (ISIG), the host does
    /// it instead: `interrupt` stops the line's processes and the rest of the line as `Cancel`
    /// does, the pending input is flushed and `^C` echoed, as the terminal would. In raw mode
    /// (an editor) the character is just a key.
    pub fn input(&self, interrupt: Arc<dyn Fn() + Send + Sync>) -> (mpsc::Sender<Vec<u8>>, Input) {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(8);
        let taken = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = taken.clone();
        let (master, slave, sink) = (
            self.master.clone(),
            self.slave_fd.clone(),
            self.sink.clone(),
        );
        let task = tokio::spawn(async move {
            while let Some(mut data) = rx.recv().await {
                let size = data.len() as u64;
                if let Some(keys) = interrupt_keys(&master)
                    && data.contains(&keys.intr)
                {
                    let at = data.iter().position(|b| *b == keys.intr).unwrap_or(0);
                    let _ = write_all(&master, &data[..at]).await;
                    interrupt();
                    if keys.flush {
                        let _ = nix::sys::termios::tcflush(
                            slave.as_ref(),
                            nix::sys::termios::FlushArg::TCIFLUSH,
                        );
                    }
                    if keys.echo
                        && let Some(tx) = sink.lock().await.as_mut()
                    {
                        let _ = tx.write_all(b"^C").await;
                    }
                    data = data[at + 1..]
                        .iter()
                        .copied()
                        .filter(|b| *b != keys.intr)
                        .collect();
                }
                if write_all(&master, &data).await.is_err() {
                    while rx.recv().await.is_some() {}
                    return;
                }
                counted.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
            }
        });
        (tx, Input { taken, task })
    }
}

/// A line's way into the terminal ([`Tty::input`]).
pub(crate) struct Input {
    /// Bytes of the client's stdin typed into the terminal (or acted on, as Ctrl-C).
    taken: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Input {
    /// Once the line's stdin is closed: waits (briefly: the terminal's input queue may be
    /// full) until everything the host accepted is in the terminal, so that what no program
    /// read comes back with [`Tty::unread`], and says how much the terminal took. The client
    /// keeps the rest of what it sent for its next prompt (`ExitInfo::stdin_taken`).
    pub async fn finish(self) -> u64 {
        let _ = tokio::time::timeout(FLUSH_LIMIT, self.task).await;
        self.taken.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Makes the terminal open at `fd` the calling process's controlling terminal: run between
/// fork and exec by a new session leader (only async-signal-safe calls). zsh opens every file
/// with O_NOCTTY, so a line opening the slave never gives it the terminal as it does bash and
/// dash; it gets it at birth instead, and its prelude parks the foreground at once
/// ([`crate::foreground`]), so that only its terminal lines ever read the terminal.
pub(crate) fn take_as_controlling(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument and touches no memory of ours.
    if unsafe { libc::ioctl(fd, libc::TIOCSCTTY as _, 0) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The terminal's interrupt character while it would turn it into SIGINT, and what else it
/// would do then: flush pending input (unless NOFLSH) and echo `^C` (ECHO and ECHOCTL).
struct InterruptKeys {
    intr: u8,
    flush: bool,
    echo: bool,
}

fn interrupt_keys(master: &AsyncFd<OwnedFd>) -> Option<InterruptKeys> {
    use nix::sys::termios::{LocalFlags, SpecialCharacterIndices, tcgetattr};
    let t = tcgetattr(master.get_ref()).ok()?;
    let l = t.local_flags;
    let intr = t.control_chars[SpecialCharacterIndices::VINTR as usize];
    (l.contains(LocalFlags::ISIG) && intr != 0).then(|| InterruptKeys {
        intr,
        flush: !l.contains(LocalFlags::NOFLSH),
        echo: l.contains(LocalFlags::ECHO) && l.contains(LocalFlags::ECHOCTL),
    })
}

async fn write_all(master: &AsyncFd<OwnedFd>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let mut guard = master.writable().await?;
        match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(Into::into)) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

/// Reads the master for the session's life, passing output to the current sink (or dropping
/// it between lines: nobody is there to see it). While a line is ending, output up to the
/// marker goes to the sink; at the marker the sink is let go and the line's end announced.
async fn pump(
    master: Arc<AsyncFd<OwnedFd>>,
    sink: Arc<tokio::sync::Mutex<Option<pipe::Sender>>>,
    ending: Arc<Mutex<Option<Ending>>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let Ok(mut guard) = master.readable().await else {
            return;
        };
        let n = match guard
            .try_io(|fd| nix::unistd::read(fd.get_ref(), &mut buf).map_err(Into::into))
        {
            Ok(Ok(0)) => return,
            Ok(Ok(n)) => n,
            // EIO: no slave open (cannot happen while we hold one); anything else ends us.
            Ok(Err(_)) => return,
            Err(_would_block) => continue,
        };
        let (out, done) = match ending.lock() {
            Ok(mut e) => match e.as_mut() {
                Some(end) => scan(end, &buf[..n]),
                None => (buf[..n].to_vec(), None),
            },
            Err(_) => (buf[..n].to_vec(), None),
        };
        let mut sink = sink.lock().await;
        if let Some(tx) = sink.as_mut()
            && !out.is_empty()
            && tx.write_all(&out).await.is_err()
        {
            // The line's reader is gone; the rest of its output has nowhere to go.
        }
        if let Some(done) = done {
            sink.take();
            let _ = done.send(());
        }
    }
}

/// Output to pass on from `chunk`, and the line's end once the whole marker has gone by
/// (what follows it in the chunk belongs to nobody). A partial match at the chunk's end is
/// held back until the next chunk says whether it was the marker.
fn scan(end: &mut Ending, chunk: &[u8]) -> (Vec<u8>, Option<tokio::sync::oneshot::Sender<()>>) {
    let mut out = Vec::with_capacity(chunk.len());
    for &b in chunk {
        if b == end.marker[end.matched] {
            end.matched += 1;
            if end.matched == end.marker.len() {
                return (out, end.done.take());
            }
            continue;
        }
        out.extend_from_slice(&end.marker[..end.matched]);
        end.matched = usize::from(b == end.marker[0]);
        if end.matched == 0 {
            out.push(b);
        }
    }
    (out, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ending() -> Ending {
        Ending {
            marker: b"\x1b]m;1\x07".to_vec(),
            matched: 0,
            done: Some(tokio::sync::oneshot::channel().0),
        }
    }

    #[test]
    fn the_marker_is_found_across_chunks_and_taken_out() {
        let mut e = ending();
        let (a, d) = scan(&mut e, b"abc\x1b]m");
        assert_eq!((a.as_slice(), d.is_some()), (&b"abc"[..], false));
        let (b, d) = scan(&mut e, b";1\x07late");
        assert_eq!((b.as_slice(), d.is_some()), (&b""[..], true));
    }

    #[test]
    fn a_near_miss_is_output() {
        let mut e = ending();
        let (a, d) = scan(&mut e, b"x\x1b]m;2\x1b\x1b]m;1\x07");
        assert_eq!(a, b"x\x1b]m;2\x1b".to_vec());
        assert!(d.is_some());
    }
}
