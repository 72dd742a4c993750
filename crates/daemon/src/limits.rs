//! Limits that keep one misbehaving client from exhausting the daemon for the others
//! (SPEC §3.20): a cap on open connections, and a deadline for a connection's first frame, so
//! connections that never speak (or speak one byte a minute) are dropped.

use std::time::Duration;
use tether_proto::{ErrorInfo, ErrorKind, Request, Response};
use tether_transport::TransportError;

/// Open connections at most (`TETHER_MAX_CONNECTIONS`).
pub fn max_connections() -> usize {
    tether_settings::get().max_connections
}

/// How long a new connection may take to send its first frame (`TETHER_HELLO_TIMEOUT_MS`).
pub(crate) fn hello_timeout() -> Duration {
    tether_settings::get().hello_timeout
}

/// The connection's first frame, or an error once the deadline passes.
pub async fn first_frame(
    reader: &mut tether_transport::FrameReader<tokio::net::unix::OwnedReadHalf>,
) -> Result<Option<Request>, TransportError> {
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
    let mut writer = tether_transport::FrameWriter::new(w);
    let msg = format!(
        "the tether daemon has {} connections open, its limit; try again",
        max_connections()
    );
    let _ = writer
        .send(&Response::Error(ErrorInfo::new(ErrorKind::Busy, msg)))
        .await;
}

/// The open-file limit the daemon was started with, before [`raise_open_files`].
static ORIGINAL_NOFILE: std::sync::OnceLock<libc::rlimit> = std::sync::OnceLock::new();

/// Raises the daemon's own open-file limit to its hard limit at start: every client connection
/// and every session host connection is a descriptor, and a system daemon serves every user.
/// Session hosts get the original limit back ([`restore_open_files`]), so users' programs see
/// what they would see anywhere else.
pub fn raise_open_files() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let _ = ORIGINAL_NOFILE.set(lim);
        // macOS refuses more than OPEN_MAX for an unlimited hard limit.
        #[cfg(any(target_os = "macos", target_os = "ios"))]
        let max = lim.rlim_max.min(libc::OPEN_MAX as libc::rlim_t);
        #[cfg(not(any(target_os = "macos", target_os = "ios")))]
        let max = lim.rlim_max;
        if lim.rlim_cur < max {
            let raised = libc::rlimit {
                rlim_cur: max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                tracing::warn!(
                    "could not raise the open-file limit: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

/// Puts the open-file limit back to what the daemon was started with (in a child between fork
/// and exec: async-signal-safe, no allocation).
pub fn restore_open_files() {
    if let Some(lim) = ORIGINAL_NOFILE.get() {
        // SAFETY: setrlimit with a struct read before fork.
        unsafe {
            libc::setrlimit(libc::RLIMIT_NOFILE, lim);
        }
    }
}

/// Sessions one user may have at once in a system daemon (`TETHER_MAX_SESSIONS_PER_USER`,
/// default 64; temporary sessions count, since each is a host and a shell).
pub fn sessions_per_user() -> usize {
    tether_settings::get().max_sessions_per_user
}

/// Jobs one user may keep in a system daemon (`TETHER_MAX_JOBS_PER_USER`, default 64): their
/// output waits in the daemon's memory until received.
pub fn jobs_per_user() -> usize {
    tether_settings::get().max_jobs_per_user
}

/// Unreceived output one job child may have in a system daemon's memory before its command
/// waits (16 MiB, or `TETHER_OUTPUT_QUOTA` if smaller).
pub const SYSTEM_JOB_QUOTA: usize = 16 << 20;
