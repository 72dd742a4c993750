//! Reading what the far side says while a link starts: the first line (the preamble, or the
//! bootstrap's request for a binary), skipping shell chatter; why ssh or the far side failed;
//! and the version checks of the preamble and the far platform.

use super::{MAX_CHATTER, MUX_VERSION, NEED_BINARY, OwnBinary, PREAMBLE};
use crate::farside::{Failure, err};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tether_proto::{ErrorInfo, ErrorKind, PROTOCOL_VERSION};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::Child;

/// The far end of a link as it starts (an ssh process, or the native transport's channel):
/// why it ended before tether answered.
pub(crate) trait Ended: Send {
    /// One line: the last thing the far side (or ssh) said on stderr, else how it ended.
    fn why(&mut self) -> Pin<Box<dyn Future<Output = String> + Send + '_>>;
}

impl Ended for Child {
    fn why(&mut self) -> Pin<Box<dyn Future<Output = String> + Send + '_>> {
        Box::pin(ssh_failure(self))
    }
}

/// Why the handshake stopped before a usable first line.
pub(crate) enum Stop {
    /// The far side said why (`TETHER-FAIL …`).
    Failed(Failure),
    Other(ErrorInfo),
}

impl Stop {
    pub(crate) fn error(self, c: &str) -> ErrorInfo {
        match self {
            Stop::Failed(f) => f.error(c),
            Stop::Other(e) => e,
        }
    }
}

/// Reads up to the preamble or the bootstrap request, skipping shell chatter. A
/// `TETHER-FAIL` line (the bootstrap script or the bridge explaining itself) ends it; if ssh
/// ends first, its last stderr line says why (host key, permission denied, no route…).
pub(crate) async fn first_line<R: AsyncRead + Unpin>(
    c: &str,
    out: &mut BufReader<R>,
    far: &mut dyn Ended,
    limit: Duration,
) -> Result<String, Stop> {
    let read = async {
        let mut seen = 0usize;
        loop {
            let mut line = Vec::new();
            let n = (&mut *out)
                .take(4096)
                .read_until(b'\n', &mut line)
                .await
                .ok()?;
            if n == 0 {
                return None;
            }
            seen += n;
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            if let Some(f) = Failure::parse(&text) {
                return Some(Err(Stop::Failed(f)));
            }
            if text.starts_with(PREAMBLE) || text.starts_with(NEED_BINARY) {
                return Some(Ok(text));
            }
            if seen > MAX_CHATTER {
                return Some(Err(Stop::Other(err(
                    ErrorKind::Connection,
                    c,
                    "the remote shell printed too much before tether started (check its startup files)",
                ))));
            }
        }
    };
    match tokio::time::timeout(limit, read).await {
        Ok(Some(r)) => r,
        Ok(None) => Err(Stop::Other(err(ErrorKind::Connection, c, far.why().await))),
        Err(_) => Err(Stop::Other(err(
            ErrorKind::Connection,
            c,
            format!("no answer within {}s (--connect-timeout)", limit.as_secs()),
        ))),
    }
}

/// How much of one line of the far side's stderr is kept (the rest is dropped, with a note).
pub(crate) const STDERR_LINE_MAX: usize = 4096;

/// Calls `each` with every line of `r` (lossy UTF-8), cutting lines longer than
/// [`STDERR_LINE_MAX`]: a far side that never prints a newline cannot grow our memory.
pub(crate) async fn each_line<R: AsyncRead + Unpin>(r: R, mut each: impl FnMut(&str)) {
    let mut r = BufReader::new(r);
    let mut line = Vec::new();
    while let Ok(Some(cut)) = crate::read_line_bounded(&mut r, &mut line, STDERR_LINE_MAX).await {
        let text = String::from_utf8_lossy(&line);
        match cut {
            false => each(&text),
            true => each(&format!("{text}… (line cut at {STDERR_LINE_MAX} bytes)")),
        }
    }
}

pub(super) async fn ssh_failure(child: &mut Child) -> String {
    // Only the last line matters: the lines before it are not kept.
    let mut last = String::new();
    if let Some(e) = child.stderr.take() {
        let keep = each_line(e, |l| {
            if !l.trim().is_empty() {
                last = l.to_string();
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(5), keep).await;
    }
    let text = last;
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    let last = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    match (last.is_empty(), status) {
        (false, _) => last.to_string(),
        (true, Ok(Ok(st))) => format!("ssh exited with {st} before tether answered"),
        _ => "the connection closed during the handshake".into(),
    }
}

/// Compares the far side's `uname -s`/`uname -m` with this build before copying anything.
pub(super) fn check_platform(c: &str, line: &str) -> Result<(), ErrorInfo> {
    let mut w = line.split_whitespace().skip(1);
    let (os, arch) = (w.next().unwrap_or("?"), w.next().unwrap_or("?"));
    let os_ok = match std::env::consts::OS {
        "macos" => os == "Darwin",
        local => os.eq_ignore_ascii_case(local),
    };
    let arch_ok = match (std::env::consts::ARCH, arch) {
        (a, b) if a == b => true,
        ("aarch64", "arm64") | ("x86_64", "amd64") => true,
        _ => false,
    };
    if os_ok && arch_ok {
        return Ok(());
    }
    Err(err(
        ErrorKind::Connection,
        c,
        format!(
            "tether is not installed there, and this tether ({} {}) cannot run on {os} {arch}: install tether on it",
            std::env::consts::OS,
            std::env::consts::ARCH
        ),
    ))
}

pub(super) async fn send_binary<W: AsyncWrite + Unpin>(
    c: &str,
    own: &OwnBinary,
    stdin: &mut W,
) -> Result<(), ErrorInfo> {
    let fail = |e: std::io::Error| err(ErrorKind::Connection, c, format!("copying tether: {e}"));
    let mut f = tokio::fs::File::open(&own.path).await.map_err(fail)?;
    // Send exactly the bytes that were hashed, even if the file has grown since.
    let mut limited = (&mut f).take(own.size);
    tokio::io::copy(&mut limited, stdin).await.map_err(fail)?;
    stdin.flush().await.map_err(fail)
}

/// Checks `TETHER-MUX <mux> <protocol> <version>` and returns the far side's version.
pub fn check_preamble(c: &str, line: &str) -> Result<String, ErrorInfo> {
    let mut w = line.split_whitespace().skip(1);
    let mux: Option<u32> = w.next().and_then(|v| v.parse().ok());
    let proto: Option<u32> = w.next().and_then(|v| v.parse().ok());
    let version = w.next().unwrap_or("unknown").to_string();
    if mux == Some(MUX_VERSION) && proto == Some(PROTOCOL_VERSION) {
        return Ok(version);
    }
    Err(err(
        ErrorKind::Connection,
        c,
        format!(
            "it runs tether {version} (protocol {}), which cannot talk to this tether {} \
             (protocol {PROTOCOL_VERSION}); install the same version on both",
            proto.map_or("unknown".into(), |p| p.to_string()),
            env!("CARGO_PKG_VERSION"),
        ),
    ))
}
