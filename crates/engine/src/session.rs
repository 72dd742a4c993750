//! The state of one session as its host keeps it: the shell and its pipes, who holds the
//! session, whether it is Opened, Disconnected or ended, what a detached command left, and
//! the controls connections use to reach a running invocation. Every connection handler and
//! the invocation share one [`Host`]; this module imports only the leaves it is made of, so
//! nothing here depends on how connections or invocations are served.

pub(crate) use crate::console::Console;
use crate::shell::Flavour;
use crate::spec::{HostMeta, HostSpec};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tether_proto::{Availability, ClientId, SessionInfo, State};
use tether_transport::paths::Paths;
use tokio::process::ChildStdin;
use tokio::sync::{Mutex, Semaphore, mpsc, watch};

/// Mutable host state, behind a std mutex held only for short, non-async sections.
pub(crate) struct Inner {
    pub last_used: Instant,
    pub busy: bool,
    pub next_inv: u64,
    pub state: State,
    pub reason: Option<String>,
    /// When the session was disconnected (wall clock for users, monotonic for the idle clock).
    pub disconnected: Option<(SystemTime, Instant)>,
    /// The client it is connected to, or last was ([`crate::holder`]).
    pub holder: Option<ClientId>,
    /// Disconnected because its holder vanished, not by a `disconnect`.
    pub vanished: bool,
    /// The last invocation's exit status: the next one starts with it as `$?`.
    pub last_status: i32,
    /// The shell was killed by a signal (rather than exiting by itself).
    pub shell_signalled: bool,
}

/// The session's shell: the process, the pipe the host writes its commands to, the files it
/// sources each invocation from, the FIFOs and streams it writes to, and how it reports. One
/// command at a time uses it (the session's `lock`).
pub(crate) struct Shell {
    pub pid: i32,
    pub flavour: Flavour,
    /// The session's private directory: FIFOs, script files, the spool.
    pub fifo_dir: PathBuf,
    pub stdin: Mutex<Option<ChildStdin>>,
    /// `<invocation> <status>` records, in order.
    pub status_rx: Mutex<mpsc::UnboundedReceiver<(u64, i32)>>,
    /// Set once the shell has exited, with its status as a shell reports it.
    pub exited: watch::Receiver<Option<i32>>,
    /// The script the shell sources for each invocation (`w`), and its status script (`s`).
    pub script_file: crate::fifos::ScriptFile,
    pub status_file: crate::fifos::ScriptFile,
    /// Drained FIFOs from the previous invocation, ready for the next.
    pub spare: std::sync::Mutex<Option<crate::fifos::FifoPair>>,
    /// What the shell writes to its own stdout and stderr, outside any invocation's FIFOs.
    pub console: Console,
}

/// One session as its host keeps it; shared by connection handlers and the invocation.
pub(crate) struct Host {
    pub paths: Paths,
    /// The client of this host's own daemon: who asks when a request names nobody.
    pub me: ClientId,
    pub spec: HostSpec,
    pub shell: Shell,
    /// One command at a time (SPEC §3.3).
    pub lock: Arc<Semaphore>,
    pub inner: std::sync::Mutex<Inner>,
    pub created_on: SystemTime,
    pub shutdown: watch::Sender<bool>,
    /// Output of a command whose client went away, until `receive` takes it.
    pub outbox: crate::outbox::Outbox,
    /// The running command's stdin.
    pub stdin: crate::fifos::StdinFeed,
    /// The session's terminal, made when it is first entered.
    pub tty: tokio::sync::OnceCell<crate::tty::Tty>,
    /// Bumped by `disconnect`: the running command's client is let go.
    pub detach: watch::Sender<u64>,
    /// Bumped by Ctrl-C from a client receiving a detached command's output.
    pub remote_cancel: watch::Sender<u64>,
    /// Bumped when a receiving client abandons the running command (its output closed):
    /// stopped, nothing kept, the session usable again.
    pub remote_abandon: watch::Sender<u64>,
    /// The newest acknowledgement that came beside an invocation's connection
    /// (`HostAside`), with the invocation it is for: only that invocation applies it.
    pub remote_ack: watch::Sender<(u64, u64)>,
    /// Bumped each time a pooled host is ready for another invocation; its daemon watches it
    /// (`HostPoolWatch`) to put the host back in its pool.
    pub pool_free: watch::Sender<u64>,
    /// Clients' requests to borrow the running command's stdout ([`crate::lend`]).
    pub lends: crate::lend::Lends,
}

impl Host {
    /// The session's terminal, made on first use.
    pub(crate) async fn terminal(&self) -> std::io::Result<&crate::tty::Tty> {
        self.tty
            .get_or_try_init(|| async { crate::tty::Tty::open() })
            .await
    }

    pub(crate) fn lock_inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session as users see it, from the host's point of view.
    pub(crate) fn info(&self) -> SessionInfo {
        let inner = self.lock_inner();
        let availability = match (inner.state, inner.busy) {
            (State::Opened, true) => Availability::Busy,
            (State::Opened, false) => Availability::Available,
            _ => Availability::None,
        };
        let idle = Duration::from_secs(self.spec.idle_timeout_s);
        let expires_on = match (inner.state, inner.disconnected) {
            _ if idle.is_zero() => None,
            // Once disconnected the clock runs even while a command runs (SPEC §3.6).
            (State::Disconnected, Some((_, at))) => Some(rfc3339(
                SystemTime::now() + idle.saturating_sub(at.elapsed()),
            )),
            (State::Opened, _) if !inner.busy => {
                let left = idle.saturating_sub(inner.last_used.elapsed());
                Some(rfc3339(SystemTime::now() + left))
            }
            _ => None,
        };
        SessionInfo {
            id: self.spec.id,
            name: self.spec.name.clone(),
            instance_id: self.spec.instance_id.clone(),
            computer_name: self.spec.computer_name.clone(),
            computer_type: "local".into(),
            configuration_name: self.spec.configuration_name.clone(),
            state: inner.state,
            availability,
            owner: self.spec.owner.clone(),
            idle_timeout_s: self.spec.idle_timeout_s,
            created_on: rfc3339(self.created_on),
            disconnected_on: inner.disconnected.map(|(t, _)| rfc3339(t)),
            expires_on,
            reason: inner.reason.clone(),
            held_by: inner.holder.clone(),
            jobs: crate::procs::running_jobs(&self.shell.fifo_dir),
            host_pid: if matches!(inner.state, State::Opened | State::Disconnected) {
                std::process::id()
            } else {
                0
            },
        }
    }

    pub(crate) fn store_meta(&self) {
        if let Err(e) = self.try_store_meta() {
            tracing::warn!("session {}: cannot record state: {e}", self.spec.name);
        }
    }

    pub(crate) fn try_store_meta(&self) -> std::io::Result<()> {
        let meta = HostMeta {
            info: self.info(),
            temporary: self.spec.temporary,
            shell_pid: self.shell.pid as u32,
        };
        meta.store(&self.paths.host_meta(&self.spec.instance_id))
    }

    /// Marks an open session Disconnected (its client let go) and records it.
    pub(crate) fn set_disconnected(&self) {
        {
            let mut inner = self.lock_inner();
            if inner.state != State::Opened {
                return;
            }
            inner.state = State::Disconnected;
            inner.disconnected = Some((SystemTime::now(), Instant::now()));
            inner.vanished = false;
        }
        self.store_meta();
    }

    /// The running command's client went away or was let go: the command goes on, its output
    /// is kept for `receive`, and the session is Disconnected.
    pub(crate) fn let_go(&self) {
        self.outbox.begin();
        self.set_disconnected();
    }

    /// As [`Host::let_go`], when the client vanished without a word (killed, its link lost)
    /// rather than being let go on purpose: the same client may take the session back by
    /// using it ([`Host::returning`]).
    pub(crate) fn dropped(&self) {
        self.let_go();
        let mut inner = self.lock_inner();
        if inner.state == State::Disconnected {
            inner.vanished = true;
        }
    }

    /// Marks a Disconnected session Opened again (connect, receive), held by `client`, and
    /// records it.
    pub(crate) fn set_connected(&self, client: &ClientId) {
        {
            let mut inner = self.lock_inner();
            if inner.holder.as_ref() != Some(client) {
                inner.holder = Some(client.clone());
                if inner.state == State::Opened {
                    drop(inner);
                    self.store_meta();
                    return;
                }
            }
            if inner.state != State::Disconnected {
                return;
            }
            inner.state = State::Opened;
            inner.disconnected = None;
            inner.last_used = Instant::now();
        }
        self.store_meta();
    }

    /// Moves to a final state (Broken or Closed), records it, and asks the host to exit.
    ///
    /// A session broken because its shell exited by itself while `set -e` or `set -u` was on
    /// says so in the reason, with what to do instead.
    pub(crate) fn finish(&self, state: State, reason: String) {
        // (A `set -e` failure is never status 0.)
        let failed = self.shell.exited.borrow().is_some_and(|c| c != 0);
        {
            let mut inner = self.lock_inner();
            if matches!(inner.state, State::Broken | State::Closed) {
                return;
            }
            let hint = (state == State::Broken && failed && !inner.shell_signalled)
                .then(crate::shell::exit_hint)
                .flatten();
            inner.state = state;
            inner.reason = Some(match hint {
                Some(hint) => format!("{reason} ({hint})"),
                None => reason,
            });
        }
        self.store_meta();
        let _ = self.shutdown.send(true);
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime_rfc3339(t)
}

fn humantime_rfc3339(t: SystemTime) -> String {
    // Seconds precision, UTC, e.g. 2026-11-27T16:04:03Z.
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil conversion (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_795_443);
        assert_eq!(rfc3339(t), "2026-11-27T16:04:03Z");
    }
}
