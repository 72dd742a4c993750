//! The accept loop shared by the per-user daemon and the system daemon: serve connections
//! until told to stop, the socket file is removed, SIGTERM or the retire signal arrives. What
//! happens on each of those differs (a per-user daemon closes its client on SIGTERM, the system
//! daemon leaves sessions alone, nobody touches a session when retiring), so the caller decides
//! from [`Ended`].

use std::path::Path;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// `daemon stop` (the stop channel changed).
    Stopped,
    /// The socket file was deleted: nobody can reach us any more.
    Gone,
    /// SIGTERM (logout, or a service manager).
    Terminated,
    /// The retire signal (`tether daemon restart`, or a newer client that met us): exit at
    /// once and leave every session as it is, for the next daemon to adopt. The signal's
    /// default action terminates, so a daemon older than this handling dies of it instead,
    /// which adoption survives just as well.
    Retired,
}

/// Hands each accepted connection to `admit` until the loop ends, and says why it ended.
pub(crate) async fn until_stopped(
    listener: &UnixListener,
    sock: &Path,
    mut stop: watch::Receiver<bool>,
    mut admit: impl FnMut(UnixStream),
) -> Ended {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("cannot watch SIGTERM: {e}");
            return Ended::Stopped;
        }
    };
    let mut retire = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(
        tether_transport::upgrade::RETIRE_SIGNAL as libc::c_int,
    )) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot watch the retire signal: {e}");
            return Ended::Stopped;
        }
    };
    let gone = tether_transport::unix::until_socket_gone(sock);
    tokio::pin!(gone);
    loop {
        tokio::select! {
            _ = &mut gone => {
                tracing::warn!("socket {} is gone; stopping", sock.display());
                return Ended::Gone;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => admit(stream),
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => return Ended::Stopped,
            _ = term.recv() => {
                tracing::info!("SIGTERM: stopping");
                return Ended::Terminated;
            }
            _ = retire.recv() => {
                tracing::info!("retire signal: leaving every session to the next daemon");
                return Ended::Retired;
            }
        }
    }
}
