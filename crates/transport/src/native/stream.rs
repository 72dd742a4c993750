//! The far side's command as byte streams: its stdout as an [`AsyncRead`] (what the mux reads,
//! exactly as it reads an ssh child's stdout), its stderr logged line by line (the last line
//! kept to explain a failed start), and how it ended.

use bytes::Bytes;
use russh::ChannelMsg;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{mpsc, watch};

/// Stdout chunks queued between the channel and its reader: a little slack, then the channel's
/// own window (and russh's) holds the far side back.
const QUEUED: usize = 4;

/// How the far side's command ended, as far as the channel said.
#[derive(Default)]
struct End {
    last_stderr: String,
    status: Option<u32>,
    signal: Option<String>,
}

/// The far side's end, shared by the pump and whoever asks why it stopped.
#[derive(Clone)]
pub struct Ending {
    end: Arc<Mutex<End>>,
    done: watch::Receiver<bool>,
}

impl Ending {
    fn lock(&self) -> std::sync::MutexGuard<'_, End> {
        self.end.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One line: the last stderr line of the far side, else its exit status, once the channel
    /// has closed (at most 5 s later).
    pub async fn why(&mut self) -> String {
        let wait = self.done.wait_for(|d| *d);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), wait).await;
        let end = self.lock();
        if !end.last_stderr.is_empty() {
            return end.last_stderr.clone();
        }
        match (&end.status, &end.signal) {
            (Some(s), _) => format!("the far side exited with status {s} before tether answered"),
            (None, Some(sig)) => format!("the far side was killed by SIG{sig}"),
            (None, None) => "the connection closed during the handshake".into(),
        }
    }
}

/// Starts the pump of `read` and returns the stdout reader and the end's account.
pub fn start(mut read: russh::ChannelReadHalf, computer: String) -> (Out, Ending) {
    let (tx, rx) = mpsc::channel(QUEUED);
    let (done_tx, done) = watch::channel(false);
    let ending = Ending {
        end: Arc::new(Mutex::new(End::default())),
        done,
    };
    let end = ending.clone();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        let mut line = Vec::new();
        while let Some(msg) = read.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    // A reader that is gone (link dropped) just stops taking bytes.
                    if let Some(t) = &tx
                        && t.send(data).await.is_err()
                    {
                        tx = None;
                    }
                }
                ChannelMsg::ExtendedData { data, .. } => stderr_lines(&mut line, &data, |l| {
                    tracing::info!("{computer}: {l}");
                    if !l.trim().is_empty() {
                        end.lock().last_stderr = l.to_string();
                    }
                }),
                ChannelMsg::ExitStatus { exit_status } => end.lock().status = Some(exit_status),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    end.lock().signal = Some(format!("{signal_name:?}"))
                }
                ChannelMsg::Eof => tx = None,
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        let _ = done_tx.send(true);
    });
    (
        Out {
            rx,
            cur: Bytes::new(),
        },
        ending,
    )
}

/// Splits stderr into lines of at most [`crate::link::STDERR_LINE_MAX`] bytes (a far side that
/// never ends a line cannot grow memory).
fn stderr_lines(line: &mut Vec<u8>, data: &[u8], mut each: impl FnMut(&str)) {
    let max = crate::link::STDERR_LINE_MAX;
    for &b in data {
        if b == b'\n' || line.len() >= max {
            each(&String::from_utf8_lossy(line));
            line.clear();
            if b == b'\n' {
                continue;
            }
        }
        line.push(b);
    }
}

/// The far side's stdout.
pub struct Out {
    rx: mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl AsyncRead for Out {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.cur.is_empty() {
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(chunk)) => this.cur = chunk,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = this.cur.len().min(buf.remaining());
        buf.put_slice(&this.cur.split_to(n));
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_lines_are_split_and_bounded() {
        let mut seen = Vec::new();
        let mut line = Vec::new();
        stderr_lines(&mut line, b"one\ntw", |l| seen.push(l.to_string()));
        stderr_lines(&mut line, b"o\n", |l| seen.push(l.to_string()));
        assert_eq!(seen, ["one", "two"]);
        seen.clear();
        stderr_lines(&mut line, &vec![b'x'; 10_000], |l| {
            seen.push(l.len().to_string())
        });
        assert_eq!(seen, ["4096", "4096"]);
        assert_eq!(line.len(), 10_000 - 2 * 4096);
    }
}
