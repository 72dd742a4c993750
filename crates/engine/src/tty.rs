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

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

/// Output is complete once the master has been quiet this long after the line ended.
const QUIET: Duration = Duration::from_millis(20);
/// …or after this long in all (a background program that never stops writing).
const FLUSH_LIMIT: Duration = Duration::from_millis(500);

pub(crate) struct Tty {
    master: Arc<AsyncFd<OwnedFd>>,
    /// The slave's path, which each line is redirected to.
    pub slave: PathBuf,
    /// Kept open so the master never reads end-of-file between lines.
    _slave: OwnedFd,
    /// Where the master's output goes while a line runs: its stdout FIFO.
    sink: Arc<tokio::sync::Mutex<Option<pipe::Sender>>>,
    last_read: Arc<Mutex<Instant>>,
}

impl Tty {
    pub fn open() -> std::io::Result<Tty> {
        let pty = nix::pty::openpty(None, None).map_err(std::io::Error::from)?;
        let slave = nix::unistd::ttyname(&pty.slave).map_err(std::io::Error::from)?;
        // A session running as another user gets its terminal, as a login would.
        crate::runas::give_fd(&pty.slave)?;
        let flags = nix::fcntl::fcntl(&pty.master, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&pty.master, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        let tty = Tty {
            // SAFETY: an OwnedFd returns the same open descriptor for as long as it lives, and
            // the AsyncFd owns it.
            master: Arc::new(
                unsafe { AsyncFd::register(pty.master) }.map_err(std::io::Error::from)?,
            ),
            slave,
            _slave: pty.slave,
            sink: Default::default(),
            last_read: Arc::new(Mutex::new(Instant::now())),
        };
        tokio::spawn(pump(
            tty.master.clone(),
            tty.sink.clone(),
            tty.last_read.clone(),
        ));
        Ok(tty)
    }

    /// From now on the master's output goes to `fifo` (the running line's stdout).
    pub async fn attach(&self, fifo: &std::path::Path) -> std::io::Result<()> {
        let tx = pipe::OpenOptions::new().open_sender(fifo)?;
        *self.sink.lock().await = Some(tx);
        Ok(())
    }

    /// The line ended: passes on what the master still has (the kernel hands a PTY's output
    /// over with a short delay), then lets go of the FIFO.
    pub async fn detach(&self) {
        let start = Instant::now();
        loop {
            // Quiet since the line ended, not just since the last read: output the program
            // wrote last may not have reached the master yet.
            let quiet = self
                .last_read
                .lock()
                .map(|t| (*t).max(start).elapsed() >= QUIET)
                .unwrap_or(true);
            if quiet || start.elapsed() >= FLUSH_LIMIT {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.sink.lock().await.take();
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

    /// A sender whose bytes are typed into the terminal (the line's stdin).
    ///
    /// Where the shell could not take the terminal as its controlling one (zsh opens it with
    /// `O_NOCTTY`; other systems need an ioctl the shell cannot make), the terminal's interrupt
    /// character would reach nobody: then `interrupt` is called instead, which stops the line as
    /// `Cancel` does.
    pub fn input(&self, interrupt: Arc<dyn Fn() + Send + Sync>) -> mpsc::Sender<Vec<u8>> {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(8);
        let master = self.master.clone();
        tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                if let Some(intr) = orphan_interrupt(&master)
                    && data.contains(&intr)
                {
                    interrupt();
                }
                if write_all(&master, &data).await.is_err() {
                    while rx.recv().await.is_some() {}
                    return;
                }
            }
        });
        tx
    }
}

/// The host's terminal, made on first use.
pub(crate) async fn open_for(host: &crate::host::Host) -> std::io::Result<&Tty> {
    host.tty.get_or_try_init(|| async { Tty::open() }).await
}

/// The interrupt character, when the terminal would turn it into SIGINT but belongs to no
/// session, so the signal would go nowhere.
fn orphan_interrupt(master: &AsyncFd<OwnedFd>) -> Option<u8> {
    use nix::sys::termios::{LocalFlags, SpecialCharacterIndices, tcgetattr};
    if nix::sys::termios::tcgetsid(master.get_ref()).is_ok() {
        return None;
    }
    let t = tcgetattr(master.get_ref()).ok()?;
    t.local_flags
        .contains(LocalFlags::ISIG)
        .then(|| t.control_chars[SpecialCharacterIndices::VINTR as usize])
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
/// it between lines: nobody is there to see it).
async fn pump(
    master: Arc<AsyncFd<OwnedFd>>,
    sink: Arc<tokio::sync::Mutex<Option<pipe::Sender>>>,
    last_read: Arc<Mutex<Instant>>,
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
        if let Ok(mut t) = last_read.lock() {
            *t = Instant::now();
        }
        if let Some(tx) = sink.lock().await.as_mut()
            && tx.write_all(&buf[..n]).await.is_err()
        {
            // The line's reader is gone; the rest of its output has nowhere to go.
        }
    }
}
