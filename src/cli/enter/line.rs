//! One line of `tether enter`, run on the session's terminal with this one raw meanwhile.
//!
//! Keys go to the session's terminal as they are typed; the ones no program read come back
//! with the line's `Exit` (`ExitInfo::typeahead`) and go to the next prompt, and so does
//! whatever was read but not yet sent when the line ended. For its first [`HOLD`] a line gets
//! no keys: those typed before it started (the rest of a paste, type-ahead from the line
//! before) and in that time wait, and a line that ends by then leaves them all to the next
//! prompt, as lines to run. So a pasted line is shown once, at its prompt, and keys typed while
//! short lines run and end seldom travel to a line that is ending. Those that do (the host
//! takes no keys after the line's status) are not lost: the `Exit` says how many bytes the
//! terminal took (`ExitInfo::stdin_taken`), and the rest go to the next prompt too, after what
//! no program read. A line still running then gets them, so `read x` reads what
//! was typed after its Enter. Ctrl-C is never held.

use super::super::connect;
use super::super::error::CliError;
use super::keys::Keys;
use std::future::Future;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::time::Duration;
use tether_client::{Event, ExitInfo, InvokeSpec, TtySpec};
use tokio::sync::oneshot;

/// As `invoke`: a busy session is waited for up to 4 minutes.
pub(super) const WAIT: Duration = Duration::from_secs(240);
/// How long a line gets no keys (see the module's comment).
const HOLD: Duration = Duration::from_millis(200);

type Sending = Pin<Box<dyn Future<Output = bool>>>;

/// Runs `line`; keys left for the next prompt are appended to `q` (which holds those typed
/// before it). Returns the session's working directory afterwards, when the target says.
pub(super) async fn run(
    session: &str,
    line: &str,
    keys: &mut Keys,
    q: &mut Vec<u8>,
) -> Result<Option<String>, CliError> {
    let (rows, cols) = window_size();
    let spec = InvokeSpec {
        session: session.to_string(),
        script: line.to_string(),
        stdin: true,
        acked: true,
        wait_timeout_ms: Some(WAIT.as_millis() as u64),
        tty: Some(TtySpec {
            term: std::env::var("TERM").unwrap_or_else(|_| "xterm".into()),
            rows,
            cols,
        }),
        ..Default::default()
    };
    let client = connect().await?;
    let inv = client.into_invocation(spec).await?;
    let ctl = inv.control();
    // The stream is read by a task of its own: reading a frame is not cancel-safe.
    let (exit_tx, mut exit_rx) = oneshot::channel();
    let events = tokio::spawn(relay(inv, exit_tx));
    keys.line_mode();
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    let hold = tokio::time::sleep(HOLD);
    tokio::pin!(hold);
    let mut holding = true;
    let intr = keys.intr;
    // Read, not yet handed to the connection; and being handed (with a copy, for the case
    // it is not taken before the line ends).
    let mut outbox: Vec<u8> = Vec::new();
    let mut sending: Option<(Sending, Vec<u8>)> = None;
    // Handed to the connection during the line, for the part the host may not have used.
    let mut sent = Sent::default();
    let end = loop {
        if sending.is_none() && !outbox.is_empty() {
            let data = std::mem::take(&mut outbox);
            let c = ctl.clone();
            let copy = data.clone();
            sending = Some((Box::pin(async move { c.stdin(copy).await }), data));
        }
        tokio::select! {
            biased;
            e = &mut exit_rx => break e,
            _ = async { sending.as_mut().expect("guarded").0.as_mut().await }, if sending.is_some() => {
                if let Some((_, data)) = sending.take() {
                    sent.push(&data);
                }
            }
            k = keys.next(), if !keys.closed => match k {
                Some(b) => {
                    if let Some(i) = b.iter().position(|&k| k == intr) {
                        // Ctrl-C: what was typed ahead goes, as a terminal flushes it.
                        q.clear();
                        holding = false;
                        outbox.extend_from_slice(&b[i..]);
                    } else if holding {
                        q.extend_from_slice(&b);
                    } else {
                        outbox.extend_from_slice(&b);
                    }
                }
                // (Control requests wait when the host takes no stdin: never in this loop,
                // which must see the line end.)
                None => {
                    let c = ctl.clone();
                    tokio::spawn(async move { c.eof().await });
                }
            },
            _ = &mut hold, if holding => {
                holding = false;
                outbox.splice(0..0, q.drain(..));
            }
            _ = winch.recv() => {
                let (rows, cols) = window_size();
                let c = ctl.clone();
                tokio::spawn(async move { c.resize(rows, cols).await });
            }
        }
    };
    let _ = events.await;
    // Not sent before the line ended: after what no program read.
    let mut unsent = sending.map(|(_, d)| d).unwrap_or_default();
    unsent.extend_from_slice(&outbox);
    match end {
        Ok(Ok(exit)) => {
            let ExitInfo {
                cwd,
                typeahead,
                stdin_taken,
                ..
            } = exit;
            q.extend_from_slice(&typeahead);
            // Sent, but it reached the host after the line's end: it was not used.
            if let Some(taken) = stdin_taken {
                q.extend_from_slice(sent.after(taken));
            }
            q.extend_from_slice(&unsent);
            Ok(cwd)
        }
        Ok(Err(e)) => {
            q.extend_from_slice(&unsent);
            Err(e.into())
        }
        Err(_) => {
            q.extend_from_slice(&unsent);
            Err(CliError::usage("the line's events ended early"))
        }
    }
}

/// What a line handed to its connection: the count, and the last bytes of it (enough for
/// any that can still be in flight when the line ends).
#[derive(Default)]
struct Sent {
    total: u64,
    tail: Vec<u8>,
}

impl Sent {
    /// Most bytes kept; the oldest half goes when it is reached.
    const KEEP: usize = 1 << 20;

    fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        self.tail.extend_from_slice(data);
        if self.tail.len() > Self::KEEP {
            self.tail.drain(..self.tail.len() - Self::KEEP / 2);
        }
    }

    /// What was sent after the first `taken` bytes (as far as it is kept).
    fn after(&self, taken: u64) -> &[u8] {
        let behind = self.total.saturating_sub(taken);
        let keep = usize::try_from(behind)
            .unwrap_or(usize::MAX)
            .min(self.tail.len());
        &self.tail[self.tail.len() - keep..]
    }
}

/// Writes the line's output as it comes and acknowledges it; hands over how it ended.
async fn relay(
    mut inv: tether_client::Invocation,
    exit: oneshot::Sender<Result<ExitInfo, tether_client::ClientError>>,
) {
    let mut out = std::io::stdout();
    loop {
        match inv.next().await {
            Ok(Event::Output { data, .. }) => {
                let _ = out.write_all(&data);
                let _ = out.flush();
                inv.delivered();
            }
            Ok(Event::Notice(n)) => err!("\r\ntether: {n}\r\n"),
            // Never lent here: a terminal line's output is not spliced.
            Ok(Event::OutputClosed) => {}
            Ok(Event::Exit(e)) => {
                inv.delivered();
                let _ = exit.send(Ok(e));
                return;
            }
            Err(e) => {
                let _ = exit.send(Err(e));
                return;
            }
        }
    }
}

/// This terminal's size (rows, columns).
fn window_size() -> (u16, u16) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize we pass, which outlives the call.
    let ok = unsafe { libc::ioctl(std::io::stdout().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    if ok == 0 && ws.ws_row > 0 && ws.ws_col > 0 {
        (ws.ws_row, ws.ws_col)
    } else {
        (24, 80)
    }
}

#[cfg(test)]
mod tests {
    use super::Sent;

    #[test]
    fn what_the_host_did_not_take_comes_back_in_order() {
        let mut s = Sent::default();
        s.push(b"abc");
        s.push(b"def");
        assert_eq!(s.after(6), b"");
        assert_eq!(s.after(4), b"ef");
        assert_eq!(s.after(0), b"abcdef");
        // A host that says it took more than was sent leaves nothing.
        assert_eq!(s.after(99), b"");
    }

    #[test]
    fn only_the_tail_is_kept() {
        let mut s = Sent::default();
        for _ in 0..3 {
            s.push(&vec![b'x'; Sent::KEEP / 2 + 1]);
        }
        assert!(s.tail.len() <= Sent::KEEP);
        assert_eq!(s.after(s.total - 5), b"xxxxx");
        assert_eq!(s.after(0).len(), s.tail.len());
    }
}
