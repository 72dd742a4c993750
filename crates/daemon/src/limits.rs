//! Limits that keep one misbehaving client from exhausting the daemon for the others
//! (SPEC §3.20): a cap on open connections, and a deadline for a connection's first frame, so
//! connections that never speak (or speak one byte a minute) are dropped.

use crate::server::{Reader, Writer};
use std::time::Duration;
use tether_proto::{ErrorInfo, ErrorKind, Request, Response};
use tether_transport::TransportError;

/// Open connections at most (`TETHER_MAX_CONNECTIONS`).
pub fn max_connections() -> usize {
    std::env::var("TETHER_MAX_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(4096)
}

/// How long a new connection may take to send its first frame (`TETHER_HELLO_TIMEOUT_MS`).
fn hello_timeout() -> Duration {
    std::env::var("TETHER_HELLO_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(60))
}

/// The connection's first frame, or an error once the deadline passes.
pub async fn first_frame(reader: &mut Reader) -> Result<Option<Request>, TransportError> {
    match tokio::time::timeout(hello_timeout(), reader.read::<Request>()).await {
        Ok(r) => r,
        Err(_) => Err(TransportError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no hello in time",
        ))),
    }
}

/// Answers a connection over the cap with one clear line, then closes it.
pub async fn refuse(stream: tokio::net::UnixStream) {
    let (_r, w) = stream.into_split();
    let mut writer: Writer = tether_transport::FrameWriter::new(w);
    let msg = format!(
        "the tether daemon has {} connections open, its limit; try again",
        max_connections()
    );
    let _ = writer
        .send(&Response::Error(ErrorInfo::new(ErrorKind::Busy, msg)))
        .await;
}
