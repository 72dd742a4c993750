//! Replacing the running daemon by this release's without closing a session: `tether daemon
//! restart` ([`Client::restart_daemon`]), and the automatic replacement when a client meets its
//! own daemon of an older protocol. After an upgrade the old daemon goes on running the old
//! code and refuses the new client; stopping it (`daemon stop`) would close idle sessions, as a
//! logout does, so it is retired instead.
//!
//! Retiring is a signal ([`RETIRE_SIGNAL`]), not a request, because a daemon of an earlier
//! release knows no new request: it dies of the signal's default action, and its sessions
//! survive that as they survive `kill -9` (their hosts outlive it and the next daemon adopts
//! them). Daemons from this release on catch the signal and exit without touching a session.
//! The signal goes only to the process that listens on this home's socket, as the kernel names
//! it, with our uid, and that the pid file names too.

use crate::{Client, ClientError, Reader, Writer, tether_exe};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tether_proto::{ErrorInfo, ErrorKind, PROTOCOL_VERSION, Request, Response};
use tether_transport::paths::Paths;
pub use tether_transport::upgrade::{RETIRE_SIGNAL, Refusal};
use tether_transport::{FrameReader, FrameWriter};
use tokio::net::UnixStream;

/// How long a retired daemon may take to exit before it is killed (a retiring daemon of this
/// release says goodbye on its links, up to 2 s each, at once).
const RETIRE_DEADLINE: Duration = Duration::from_secs(10);
/// After `SIGKILL`.
const KILL_DEADLINE: Duration = Duration::from_secs(3);

/// Told when a client replaced an older daemon, to say so to the user (the CLI prints a line).
pub type Notice = fn(&Refusal);

static NOTICE: OnceLock<Notice> = OnceLock::new();

/// One replacement at a time in this process: the tasks of a fan-out meet the old daemon
/// together, and all but the first find it replaced already.
static REPLACING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Sets what is told when [`Client::connect_or_start`] replaced an older daemon (once per
/// process; later calls are ignored). Without it, nothing is said.
pub fn on_replaced(notice: Notice) {
    let _ = NOTICE.set(notice);
}

/// The refusal of a daemon of another protocol, if `e` is one.
pub fn refusal_of(e: &ClientError) -> Option<Refusal> {
    match e {
        ClientError::Remote(info) if info.kind == ErrorKind::Connection => {
            Refusal::parse(&info.message)
        }
        _ => None,
    }
}

/// The one-line error for a daemon newer than this client: replacing it could strand
/// sessions whose hosts speak a protocol this release does not know.
fn newer(r: &Refusal) -> ClientError {
    ClientError::Remote(ErrorInfo::new(
        ErrorKind::Connection,
        format!(
            "the running tether daemon (protocol {}, tether {}) is newer than this tether \
             (protocol {PROTOCOL_VERSION}, tether {}): use tether {} or later",
            r.protocol,
            r.version,
            env!("CARGO_PKG_VERSION"),
            r.version
        ),
    ))
}

/// A daemon's refusal made clear for a client that does not replace it (`daemon status`,
/// `daemon stop`): what the user can do about it. Other errors are returned as they are.
pub(crate) fn explain(e: ClientError) -> ClientError {
    match refusal_of(&e) {
        Some(r) if r.protocol > PROTOCOL_VERSION => newer(&r),
        Some(r) if r.protocol < PROTOCOL_VERSION => ClientError::Remote(ErrorInfo::new(
            ErrorKind::Connection,
            format!(
                "the running tether daemon is of an earlier release (protocol {}, tether {}): \
                 'tether daemon restart' replaces it by this one and keeps its sessions",
                r.protocol, r.version
            ),
        )),
        _ => e,
    }
}

/// After a first reply `e` from the daemon: if it is an older daemon's refusal, retires that
/// daemon, starts this release's and returns a connection to it for the caller's one retry;
/// a newer daemon's refusal becomes a clear error; anything else is returned as it is.
pub(crate) async fn reconnect_after(
    paths: &Paths,
    e: ClientError,
) -> Result<(Reader, Writer), ClientError> {
    let Some(refused) = refusal_of(&e) else {
        return Err(e);
    };
    if refused.protocol > PROTOCOL_VERSION {
        return Err(newer(&refused));
    }
    if refused.protocol == PROTOCOL_VERSION || paths.shared {
        return Err(e);
    }
    let replaced = {
        let _one = REPLACING.lock().await;
        replace_older(paths).await?
    };
    if replaced && let Some(notice) = NOTICE.get() {
        notice(&refused);
    }
    let c = connect_started(paths).await?;
    Ok((c.reader, c.writer))
}

/// What the daemon on the socket is, asked again just before acting: another task or another
/// CLI may have replaced it already. Returns whether we replaced it.
async fn replace_older(paths: &Paths) -> Result<bool, ClientError> {
    let Ok(stream) = UnixStream::connect(paths.daemon_socket()).await else {
        // Nobody listens any more: whoever retired it starts the next one, or we do.
        start(paths).await?;
        return Ok(false);
    };
    let pid = checked_pid(paths, &stream)?;
    let (r, w) = stream.into_split();
    let (mut reader, mut writer) = (FrameReader::new(r), FrameWriter::new(w));
    // A daemon answers `Hello` only with its first reply; an older one refuses at once.
    writer.feed(&crate::hello()).await?;
    writer.send(&Request::DaemonStatus).await?;
    let first = tokio::time::timeout(Duration::from_secs(5), reader.read::<Response>()).await;
    match first {
        Ok(Ok(Some(Response::Hello { .. }))) => Ok(false),
        Ok(Ok(Some(Response::Error(info)))) => match Refusal::parse(&info.message) {
            Some(r) if r.protocol < PROTOCOL_VERSION => {
                retire(paths, pid).await?;
                start(paths).await?;
                Ok(true)
            }
            Some(r) if r.protocol > PROTOCOL_VERSION => Err(newer(&r)),
            _ => Err(info.into()),
        },
        Ok(Ok(other)) => Err(ClientError::Protocol(format!("{other:?}"))),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(ClientError::Lost(format!(
            "the daemon (pid {pid}) did not answer within 5 s"
        ))),
    }
}

/// The pid of the daemon behind `stream` (a connection to this home's socket), checked before
/// anything signals it: the kernel says who listens and as which uid, which must be us, and
/// the pid file must not name another process.
fn checked_pid(paths: &Paths, stream: &UnixStream) -> Result<u32, ClientError> {
    let sock = paths.daemon_socket();
    let cred = stream.peer_cred()?;
    let me = nix::unistd::getuid().as_raw();
    if cred.uid() != me {
        return Err(ClientError::Remote(ErrorInfo::new(
            ErrorKind::Permission,
            format!(
                "the daemon at {} runs as uid {}, not as uid {me}: not signalling it",
                sock.display(),
                cred.uid()
            ),
        )));
    }
    let listed = read_pid(paths);
    let pid = match (cred.pid().and_then(|p| u32::try_from(p).ok()), listed) {
        (Some(p), Some(f)) if p != f => {
            return Err(ClientError::Start(format!(
                "pid {p} listens on {} but {} names pid {f}: not signalling either",
                sock.display(),
                paths.pid_file().display()
            )));
        }
        (Some(p), _) | (None, Some(p)) => p,
        (None, None) => {
            return Err(ClientError::Start(format!(
                "cannot tell the pid of the daemon at {}",
                sock.display()
            )));
        }
    };
    if pid <= 1 || i32::try_from(pid).is_err() {
        return Err(ClientError::Start(format!(
            "the daemon at {} has no usable pid ({pid})",
            sock.display()
        )));
    }
    Ok(pid)
}

fn read_pid(paths: &Paths) -> Option<u32> {
    std::fs::read_to_string(paths.pid_file())
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Retires daemon `pid` and waits for it to exit; one that does not within
/// [`RETIRE_DEADLINE`] is killed (its sessions survive that too).
async fn retire(paths: &Paths, pid: u32) -> Result<(), ClientError> {
    use nix::sys::signal::{Signal, kill};
    let target = nix::unistd::Pid::from_raw(pid as i32);
    for (signal, deadline) in [
        (RETIRE_SIGNAL, RETIRE_DEADLINE),
        (Signal::SIGKILL, KILL_DEADLINE),
    ] {
        match kill(target, signal) {
            Ok(()) => {}
            Err(nix::errno::Errno::ESRCH) => return Ok(()),
            Err(e) => {
                return Err(ClientError::Start(format!(
                    "cannot signal the daemon of {} (pid {pid}): {e}",
                    paths.home.display()
                )));
            }
        }
        let until = Instant::now() + deadline;
        while alive(pid) {
            if Instant::now() > until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !alive(pid) {
            return Ok(());
        }
    }
    Err(ClientError::Start(format!(
        "the daemon of {} (pid {pid}) does not exit",
        paths.home.display()
    )))
}

/// Whether `pid` still runs (a zombie waiting for its parent does not).
fn alive(pid: u32) -> bool {
    let exists = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok();
    exists
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
}

/// Runs `tether daemon start` (the program of [`tether_exe`]), which detaches the daemon from
/// this process and returns once it accepts, or once another starter's daemon holds the lock.
pub(crate) async fn start(paths: &Paths) -> Result<(), ClientError> {
    let exe = tether_exe();
    let mut cmd = tokio::process::Command::new(&exe);
    cmd.args(["daemon", "start", "--quiet"])
        .stdin(std::process::Stdio::null());
    if paths.shared {
        cmd.arg("--system");
    } else {
        cmd.env(tether_settings::vars::HOME, &paths.home);
    }
    let status = cmd
        .status()
        .await
        .map_err(|e| ClientError::Start(format!("{}: {e}", exe.display())))?;
    if !status.success() {
        return Err(ClientError::Start(format!(
            "'{} daemon start' failed",
            exe.display()
        )));
    }
    Ok(())
}

/// Connects to a daemon that was just started (by us or by a starter that won the race, whose
/// daemon may still be coming up).
pub(crate) async fn connect_started(paths: &Paths) -> Result<Client, ClientError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Client::connect(paths).await {
            Ok(c) => return Ok(c),
            Err(e @ ClientError::Connect { .. }) if Instant::now() > deadline => return Err(e),
            Err(ClientError::Connect { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => return Err(e),
        }
    }
}

impl Client {
    /// `tether daemon restart`: the daemon of this home (of any release) exits at once,
    /// leaving every session running, and a daemon of [`tether_exe`] starts and adopts them.
    /// Returns the retired daemon's pid (`None` when none was running) and a client of the
    /// new daemon.
    pub async fn restart_daemon(paths: &Paths) -> Result<(Option<u32>, Client), ClientError> {
        let retired = match UnixStream::connect(paths.daemon_socket()).await {
            Ok(stream) => {
                let pid = checked_pid(paths, &stream)?;
                drop(stream);
                retire(paths, pid).await?;
                Some(pid)
            }
            Err(_) => None,
        };
        start(paths).await?;
        Ok((retired, connect_started(paths).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(protocol: u32) -> ClientError {
        let line = tether_transport::upgrade::refusal_line("tether daemon", protocol, 1000);
        ClientError::Remote(ErrorInfo::new(ErrorKind::Connection, line))
    }

    #[test]
    fn only_a_daemon_refusal_is_one() {
        assert_eq!(refusal_of(&refused(3)).map(|r| r.protocol), Some(3));
        let busy = ErrorInfo::new(ErrorKind::Busy, refused(3).to_string());
        assert_eq!(refusal_of(&ClientError::Remote(busy)), None);
        assert_eq!(refusal_of(&ClientError::Lost("x".into())), None);
    }

    #[test]
    fn a_client_that_does_not_replace_says_what_to_do() {
        let older = explain(refused(PROTOCOL_VERSION - 1)).to_string();
        assert!(older.contains("tether daemon restart"), "{older}");
        let newer = explain(refused(PROTOCOL_VERSION + 1)).to_string();
        assert!(newer.contains("is newer than this tether"), "{newer}");
        assert!(!older.contains('\n') && !newer.contains('\n'));
        let other = ClientError::Lost("gone".into());
        assert_eq!(explain(other).to_string(), "connection lost: gone");
    }
}
