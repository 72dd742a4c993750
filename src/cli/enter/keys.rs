//! The keyboard of `tether enter`: every key typed goes through one queue, in order, whether it
//! ends up at the prompt or in the running line, so type-ahead and pastes lose nothing.
//!
//! rustyline reads its terminal 1 KiB at a time and drops what it read past the line it
//! returns, so it never reads this terminal: it reads the slave of a private pseudo-terminal
//! (made our fd 0 for as long as `enter` runs), and [`Keys::read_line`] types into its master
//! only up to the next key that may end the line (Enter, Ctrl-C, Ctrl-D, Ctrl-\). The rest
//! waits until rustyline has either returned or shown that it goes on (the line was
//! incomplete, or the key did not end it). A task reads this terminal all the time into the
//! queue; while a line runs, [`super::line`] forwards what it reads to the session's terminal.

use super::super::error::CliError;
use super::shell::Validation;
use nix::sys::termios::{self, LocalFlags, SetArg, SpecialCharacterIndices as Cc, Termios};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

/// How long a key that may end the line waits, when rustyline neither returned nor asked
/// about the line, before the keys after it are typed (Enter in a completion list, Ctrl-D
/// inside a line).
const UNDECIDED: Duration = Duration::from_millis(250);
const TICK: Duration = Duration::from_millis(10);

pub(super) type Editor = rustyline::Editor<super::shell::Lines, rustyline::history::FileHistory>;

/// How a prompt ended.
pub(super) enum Read {
    Line(String),
    Interrupted,
    Eof,
}

pub(super) struct Keys {
    /// This terminal, opened anew so that its file flags (non-blocking) are ours alone.
    tty: Arc<AsyncFd<OwnedFd>>,
    /// Its settings before `enter`, restored at the end.
    saved: Termios,
    /// fd 0 as it was, put back at the end.
    stdin: OwnedFd,
    /// The private terminal's master (non-blocking): what rustyline is to read.
    master: OwnedFd,
    /// Its slave (also fd 0 now), to see and take back what rustyline did not read.
    slave: OwnedFd,
    pub intr: u8,
    quit: u8,
    eof: u8,
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    reader: tokio::task::JoinHandle<()>,
    /// This terminal is gone (hung up).
    pub closed: bool,
}

impl Keys {
    pub fn open() -> Result<Keys, CliError> {
        let fail = |e: std::io::Error| CliError::usage(format!("cannot use this terminal: {e}"));
        let path = nix::unistd::ttyname(std::io::stdin())
            .unwrap_or_else(|_| std::path::PathBuf::from("/proc/self/fd/0"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(&path)
            .map_err(fail)?;
        let saved = termios::tcgetattr(&file).map_err(|e| fail(e.into()))?;
        let pty = nix::pty::openpty(None, Some(&saved)).map_err(|e| fail(e.into()))?;
        // The slave passes bytes as they come: rustyline sets its own mode on it each time,
        // and restores this one.
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&pty.slave, SetArg::TCSANOW, &raw).map_err(|e| fail(e.into()))?;
        let flags = nix::fcntl::fcntl(&pty.master, nix::fcntl::FcntlArg::F_GETFL)
            .map_err(|e| fail(e.into()))?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&pty.master, nix::fcntl::FcntlArg::F_SETFL(flags))
            .map_err(|e| fail(e.into()))?;
        let stdin = nix::unistd::dup(std::io::stdin()).map_err(|e| fail(e.into()))?;
        nix::unistd::dup2_stdin(&pty.slave).map_err(|e| fail(e.into()))?;
        // SAFETY: an OwnedFd returns the same open descriptor for as long as it lives, and the
        // AsyncFd owns it.
        let tty = unsafe {
            AsyncFd::register_with_interest(OwnedFd::from(file), tokio::io::Interest::READABLE)
        }
        .map_err(|e| fail(std::io::Error::from(e)))?;
        let tty = Arc::new(tty);
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_keys(tty.clone(), tx));
        let cc = |i: Cc| saved.control_chars[i as usize];
        Ok(Keys {
            intr: cc(Cc::VINTR),
            quit: cc(Cc::VQUIT),
            eof: cc(Cc::VEOF),
            tty,
            saved,
            stdin,
            master: pty.master,
            slave: pty.slave,
            rx,
            reader,
            closed: false,
        })
    }

    /// The mode rustyline would set on this terminal: keys one by one, unechoed, no signals;
    /// output still translated (`\n` is a new line).
    pub fn prompt_mode(&self) {
        use termios::{ControlFlags, InputFlags};
        let mut t = self.saved.clone();
        t.input_flags &= !(InputFlags::BRKINT
            | InputFlags::ICRNL
            | InputFlags::INPCK
            | InputFlags::ISTRIP
            | InputFlags::IXON);
        t.control_flags |= ControlFlags::CS8;
        t.local_flags &=
            !(LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::IEXTEN | LocalFlags::ISIG);
        t.control_chars[Cc::VMIN as usize] = 1;
        t.control_chars[Cc::VTIME as usize] = 0;
        let _ = termios::tcsetattr(self.tty.get_ref(), SetArg::TCSANOW, &t);
    }

    /// Raw while a line runs: every key, Ctrl-C included, goes to the session's terminal, and
    /// its output is passed through untouched.
    pub fn line_mode(&self) {
        let mut t = self.saved.clone();
        termios::cfmakeraw(&mut t);
        let _ = termios::tcsetattr(self.tty.get_ref(), SetArg::TCSANOW, &t);
    }

    /// Keys read since the last call, without waiting.
    pub fn take_read(&mut self, q: &mut Vec<u8>) {
        loop {
            match self.rx.try_recv() {
                Ok(b) => q.extend_from_slice(&b),
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.closed = true;
                    return;
                }
            }
        }
    }

    /// The next keys read from this terminal; `None` once it is gone.
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        let k = self.rx.recv().await;
        if k.is_none() {
            self.closed = true;
        }
        k
    }

    /// Bytes waiting in the private terminal that rustyline has not read.
    fn unread(&self) -> usize {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int, which outlives the call.
        let r = unsafe { libc::ioctl(self.slave.as_raw_fd(), libc::FIONREAD, &mut n) };
        if r == 0 { n.max(0) as usize } else { 0 }
    }

    /// Takes back what rustyline left unread (its line ended before them).
    fn take_back(&self) -> Vec<u8> {
        let n = self.unread();
        let mut buf = vec![0u8; n];
        match nix::unistd::read(self.slave.as_fd(), &mut buf) {
            Ok(got) => {
                buf.truncate(got);
                buf
            }
            Err(_) => Vec::new(),
        }
    }

    /// Runs one rustyline prompt on a blocking thread and types the queued keys `q` into it
    /// (see the module's comment); keys it did not use stay in `q`, in order.
    pub async fn read_line(
        &mut self,
        mut editor: Editor,
        prompt: String,
        q: &mut Vec<u8>,
        events: &mut mpsc::UnboundedReceiver<Validation>,
    ) -> (Editor, Result<Read, CliError>) {
        self.prompt_mode();
        while events.try_recv().is_ok() {}
        self.take_read(q);
        let mut rl = tokio::task::spawn_blocking(move || {
            let r = editor.readline(&prompt);
            (editor, r)
        });
        let mut gate = Gate::default();
        let mut ended = false;
        loop {
            self.feed(q, &mut gate);
            if self.closed && q.is_empty() && gate.waiting.is_none() && !ended {
                // This terminal is gone and nothing is left to type: end the prompt (Ctrl-C
                // always does).
                ended = true;
                let _ = nix::unistd::write(self.master.as_fd(), &[self.intr]);
            }
            let retry = gate.waiting.is_some() || (gate.blocked && !q.is_empty());
            tokio::select! {
                r = &mut rl => {
                    let (editor, r) = match r {
                        Ok(x) => x,
                        Err(e) => std::panic::resume_unwind(e.into_panic()),
                    };
                    let back = self.take_back();
                    q.splice(0..0, back);
                    let r = match r {
                        Ok(l) => Ok(Read::Line(l)),
                        Err(rustyline::error::ReadlineError::Interrupted) => Ok(Read::Interrupted),
                        Err(rustyline::error::ReadlineError::Eof) => Ok(Read::Eof),
                        Err(e) => Err(CliError::usage(format!("terminal: {e}"))),
                    };
                    return (editor, r);
                }
                k = self.rx.recv(), if !self.closed => match k {
                    Some(b) => q.extend_from_slice(&b),
                    None => self.closed = true,
                },
                Some(v) = events.recv() => match v {
                    Validation::Asking => gate.asking = true,
                    Validation::Answered { complete } => {
                        gate.asking = false;
                        if !complete {
                            gate.waiting = None;
                        }
                    }
                },
                _ = tokio::time::sleep(TICK), if retry => {
                    if let Some(since) = gate.waiting
                        && !gate.asking
                        && since.elapsed() >= UNDECIDED
                        && self.unread() == 0
                    {
                        gate.waiting = None;
                    }
                }
            }
        }
    }

    /// Types keys from `q` into the private terminal, up to and including the next key that
    /// may end the line, then waits (`gate.waiting`) for rustyline to show what it did.
    fn feed(&self, q: &mut Vec<u8>, gate: &mut Gate) {
        if gate.waiting.is_some() || q.is_empty() {
            return;
        }
        let mut scan = gate.paste;
        let mut n = 0;
        let mut stop = false;
        while n < q.len() {
            let b = q[n];
            n += 1;
            scan.push(b);
            if !scan.inside && self.may_end(b) {
                stop = true;
                break;
            }
        }
        let written = nix::unistd::write(self.master.as_fd(), &q[..n]).unwrap_or_default();
        gate.blocked = written < n;
        for &b in &q[..written] {
            gate.paste.push(b);
        }
        q.drain(..written);
        if stop && written == n {
            gate.waiting = Some(Instant::now());
        }
    }

    fn may_end(&self, b: u8) -> bool {
        b == b'\r' || b == b'\n' || (b != 0 && (b == self.intr || b == self.quit || b == self.eof))
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.reader.abort();
        let _ = termios::tcsetattr(self.tty.get_ref(), SetArg::TCSANOW, &self.saved);
        let _ = nix::unistd::dup2_stdin(&self.stdin);
    }
}

/// What [`Keys::feed`] waits for.
#[derive(Default)]
struct Gate {
    /// Since a key that may end the line was typed, and nothing since.
    waiting: Option<Instant>,
    /// The validator is running (Enter was pressed; the session is being asked).
    asking: bool,
    /// The private terminal took only part of what was typed: try again shortly.
    blocked: bool,
    paste: Paste,
}

/// Whether the keys typed so far end inside a bracketed paste (`ESC [200~` … `ESC [201~`),
/// where Enter and Ctrl-C are text.
#[derive(Default, Clone, Copy)]
struct Paste {
    last: [u8; 6],
    inside: bool,
}

impl Paste {
    fn push(&mut self, b: u8) {
        self.last.copy_within(1.., 0);
        self.last[5] = b;
        if &self.last == b"\x1b[200~" {
            self.inside = true;
        } else if &self.last == b"\x1b[201~" {
            self.inside = false;
        }
    }
}

/// Reads this terminal for as long as `enter` runs, into the queue.
async fn read_keys(tty: Arc<AsyncFd<OwnedFd>>, tx: mpsc::UnboundedSender<Vec<u8>>) {
    let mut buf = [0u8; 4096];
    loop {
        let Ok(mut guard) = tty.readable().await else {
            return;
        };
        match guard
            .try_io(|fd| nix::unistd::read(fd.get_ref().as_fd(), &mut buf).map_err(Into::into))
        {
            Ok(Ok(0)) => return,
            Ok(Ok(n)) => {
                if tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // EIO: the terminal hung up.
            Ok(Err(_)) => return,
            Err(_would_block) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Paste;

    #[test]
    fn bracketed_pastes_are_seen_across_chunks() {
        let mut p = Paste::default();
        for &b in b"ab\x1b[20" {
            p.push(b);
        }
        assert!(!p.inside);
        for &b in b"0~x\ry" {
            p.push(b);
        }
        assert!(p.inside);
        for &b in b"\x1b[201~" {
            p.push(b);
        }
        assert!(!p.inside);
    }
}
