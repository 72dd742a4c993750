//! One line of `tether enter`, run on the session's terminal with this one raw meanwhile.
//!
//! Keys go to the session's terminal as they are typed; the ones no program read come back
//! with the line's `Exit` (`ExitInfo::typeahead`) and go to the next prompt, and so does
//! whatever was read but not yet sent when the line ended. For its first [`HOLD`] a line gets
//! no keys: those typed before it started (the rest of a paste, type-ahead from the line
//! before) and in that time wait, and a line that ends by then leaves them all to the next
//! prompt, as lines to run. So a pasted line is shown once, at its prompt, and keys typed while
//! short lines run and end never travel to a line that is ending (the host drops what reaches
//! it after the line's status). A line still running then gets them, so `read x` reads what
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
                sending = None;
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
            let ExitInfo { cwd, typeahead, .. } = exit;
            q.extend_from_slice(&typeahead);
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
            Ok(Event::Notice(n)) => eprint!("\r\ntether: {n}\r\n"),
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
