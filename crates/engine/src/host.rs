//! The session host process: spawns the shell, serves its socket, enforces the idle timeout,
//! and records its state on disk.

use crate::HostError;
pub(crate) use crate::console::Console;
use crate::shell::Flavour;
use crate::spec::{HostMeta, HostSpec, default_shell};
use nix::sys::signal::Signal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tether_proto::{Availability, ClientId, SessionInfo, State};
use tether_transport::paths::{Paths, private_dir};
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

/// Everything an invocation needs; shared by connection handlers.
pub(crate) struct Host {
    pub paths: Paths,
    /// The client of this host's own daemon: who asks when a request names nobody.
    pub me: ClientId,
    pub spec: HostSpec,
    pub flavour: Flavour,
    pub fifo_dir: PathBuf,
    pub shell_pid: i32,
    pub shell_stdin: Mutex<Option<ChildStdin>>,
    /// One command at a time (SPEC §3.3).
    pub lock: Arc<Semaphore>,
    pub status_rx: Mutex<mpsc::UnboundedReceiver<(u64, i32)>>,
    /// Set once the shell has exited, with its status as a shell reports it.
    pub exited: watch::Receiver<Option<i32>>,
    pub inner: std::sync::Mutex<Inner>,
    pub created_on: SystemTime,
    pub shutdown: watch::Sender<bool>,
    /// The script the shell sources for each invocation (`w`), and its status script (`s`).
    pub script_file: crate::fifos::ScriptFile,
    pub status_file: crate::fifos::ScriptFile,
    /// Drained FIFOs from the previous invocation, ready for the next.
    pub spare: std::sync::Mutex<Option<crate::fifos::FifoPair>>,
    /// What the shell writes to its own stdout and stderr, outside any invocation's FIFOs.
    pub console: Console,
    /// Output of a command whose client went away, until `receive` takes it.
    pub outbox: crate::retain::Outbox,
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
    /// Bumped each time a pooled host is ready for another invocation; its daemon watches it
    /// (`HostPoolWatch`) to put the host back in its pool.
    pub pool_free: watch::Sender<u64>,
}

impl Host {
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
            jobs: crate::procs::running_jobs(&self.fifo_dir),
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
            shell_pid: self.shell_pid as u32,
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
        let failed = self.exited.borrow().is_some_and(|c| c != 0);
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

/// Runs a session host until the session ends. Blocks; builds its own single-threaded runtime
/// (a host serves one session, and threads cost memory per session).
pub fn run_host(paths: Paths, spec: HostSpec) -> Result<(), HostError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(paths, spec))
}

async fn serve(paths: Paths, spec: HostSpec) -> Result<(), HostError> {
    paths.ensure_dirs()?;
    if let Some(r) = &spec.run_as {
        crate::runas::set(r);
    }
    if paths.shared {
        crate::spool::shared_default();
    }
    let fifo_dir = paths.host_fifo_dir(&spec.instance_id);
    if paths.shared {
        // Root's, passable: the shell opens its FIFOs by path but can change nothing here.
        tether_transport::paths::owned_dir(&fifo_dir, 0o711)?;
    } else {
        private_dir(&fifo_dir)?;
    }
    let status_path = fifo_dir.join("st");
    crate::fifos::mkfifo(&status_path)?;
    let script_file = private_file(&fifo_dir.join("w"))?;
    let status_file = private_file(&fifo_dir.join("s"))?;
    if spec.run_as.is_some() {
        crate::runas::give_shell_files(&fifo_dir)?;
    }

    // A restricted session runs no shell: its leader is this program in `__leader` mode.
    let (shell, args): (String, Vec<&str>) = match &spec.restricted {
        Some(_) => (
            std::env::current_exe()?.to_string_lossy().into_owned(),
            vec!["__leader"],
        ),
        None => {
            let sh = spec.shell.clone().unwrap_or_else(default_shell);
            let f = Flavour::of(&sh);
            (sh, f.args().to_vec())
        }
    };
    let flavour = Flavour::of(&shell);
    // zsh opens every file with O_NOCTTY, so it never takes the terminal a line opens: it is
    // given its terminal at birth instead (`crate::tty::Tty::own_from_birth`).
    let born_with_tty = (flavour == Flavour::Zsh && spec.restricted.is_none())
        .then(crate::tty::Tty::open)
        .transpose()?;
    let ctty = born_with_tty.as_ref().map(|t| t.slave_raw());
    let mut cmd = tokio::process::Command::new(&shell);
    cmd.args(&args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let (cwd, become_user, report) = crate::runas::place(&mut cmd, &spec)?;
    // SAFETY: only async-signal-safe calls (setsid, sigaction, sigprocmask, set*id, chdir,
    // write) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if let Some(fd) = ctty {
                crate::tty::take_as_controlling(fd)?;
            }
            reset_signals();
            if let Some(b) = &become_user {
                b.apply()?;
            }
            Ok(())
        });
    }
    // Orphans of the shell's jobs come to us, not to init: finding and reaping them stays local.
    let reaper = crate::procs::become_subreaper();
    let spawned = cmd.spawn();
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(err) => {
            let _ = std::fs::remove_dir_all(&fifo_dir);
            if let (Some(r), Some(e)) = (&spec.run_as, report.and_then(crate::runas::chdir_failure))
            {
                return Err(HostError::Directory {
                    dir: cwd,
                    user: r.name.clone(),
                    err: e,
                });
            }
            return Err(HostError::Spawn { shell, err });
        }
    };
    // A shell without a pid (already reaped) cannot be a session; 0 must never stand for "none"
    // here, since every signal to the shell would then go to the host's own process group.
    let Some(shell_pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
        let _ = std::fs::remove_dir_all(&fifo_dir);
        let err = std::io::Error::other("the shell ended before it could be watched");
        return Err(HostError::Spawn { shell, err });
    };
    if reaper {
        crate::procs::spawn_reaper(shell_pid);
    }
    // The shell enters it before it runs a command ([`crate::cgroup::enter`], below). Not for a
    // one-invocation temporary session, whose start is the invocation's latency: the host's
    // descendants are found without one.
    let cgroup = (!spec.temporary || spec.pooled)
        .then(|| crate::cgroup::Cgroup::create(&spec.instance_id).map(Arc::new))
        .flatten();
    let mut stdin = child.stdin.take();
    let mut startup = None;
    let console = Console::default();
    console.watch(child.stdout.take(), 0);
    console.watch(child.stderr.take(), 1);
    if let Some(s) = stdin.as_mut().filter(|_| spec.restricted.is_none()) {
        use tokio::io::AsyncWriteExt;
        s.write_all(flavour.prelude(&fifo_dir, &shell).as_bytes())
            .await?;
        if born_with_tty.is_some() {
            let park = crate::foreground::line(
                crate::foreground::Move::Park,
                crate::foreground::own_program(),
            );
            s.write_all(park.as_bytes()).await?;
        }
        if let Some(script) = &spec.startup_script {
            // The profile's output has no invocation to go to.
            let line = format!(
                ". {} </dev/null >/dev/null 2>&1\n",
                crate::shell::quote(script)
            );
            match cgroup.is_some() {
                true => startup = Some(line),
                false => s.write_all(line.as_bytes()).await?,
            }
        }
    }

    let (status_tx, status_rx) = mpsc::unbounded_channel();
    crate::fifos::spawn_status_reader(&status_path, status_tx)?;
    let (exit_tx, exit_rx) = watch::channel(None);
    let (shutdown_tx, mut shutdown_rx) = watch::channel(false);

    let me = tether_transport::identity::client_identity(&paths);
    let holder = Some(spec.holder.clone().unwrap_or_else(|| me.clone()));
    let host = Arc::new(Host {
        me,
        paths: paths.clone(),
        spec: spec.clone(),
        flavour,
        fifo_dir: fifo_dir.clone(),
        shell_pid,
        shell_stdin: Mutex::new(stdin),
        lock: Arc::new(Semaphore::new(1)),
        status_rx: Mutex::new(status_rx),
        exited: exit_rx,
        inner: std::sync::Mutex::new(Inner {
            last_used: Instant::now(),
            busy: false,
            next_inv: 1,
            state: State::Opened,
            reason: None,
            disconnected: None,
            holder,
            vanished: false,
            last_status: 0,
            shell_signalled: false,
        }),
        created_on: SystemTime::now(),
        shutdown: shutdown_tx,
        script_file: crate::fifos::ScriptFile::new(script_file),
        status_file: crate::fifos::ScriptFile::new(status_file),
        spare: std::sync::Mutex::new(None),
        console,
        outbox: crate::retain::Outbox::new(
            spec.output_quota,
            spec.drop_oldest,
            Some(fifo_dir.join("spool")),
        ),
        stdin: Default::default(),
        tty: tokio::sync::OnceCell::new_with(born_with_tty),
        detach: watch::channel(0).0,
        remote_cancel: watch::channel(0).0,
        remote_abandon: watch::channel(0).0,
        pool_free: watch::channel(0).0,
    });

    // The shell's end is a state change: Broken, with the reason (SPEC §3.4).
    {
        let host = host.clone();
        tokio::spawn(async move {
            let code = match child.wait().await {
                Ok(st) => {
                    use std::os::unix::process::ExitStatusExt;
                    host.lock_inner().shell_signalled = st.signal().is_some();
                    exit_code(st)
                }
                Err(_) => 255,
            };
            let _ = exit_tx.send(Some(code));
            // An invocation that is running reports the exit itself; give it a moment to do so
            // before the host goes away.
            let busy = host.lock_inner().busy;
            if !busy {
                host.finish(
                    State::Broken,
                    format!("the shell exited with status {code}"),
                );
            }
        });
    }
    spawn_idle_timer(host.clone());

    let sock_path = paths.host_socket(&spec.instance_id);
    let listener = tether_transport::unix::bind_private(&sock_path)?;
    // The record is how the daemon (and the next one) finds the session: a session that cannot
    // be recorded (a full disk) does not start, and leaves nothing running.
    if let Err(e) = host.try_store_meta() {
        crate::cleanup::unstarted(&host, cgroup, &sock_path).await;
        return Err(HostError::Io(std::io::Error::new(
            e.kind(),
            format!("cannot record session {}: {e}", spec.name),
        )));
    }
    announce_ready();
    crate::cleanup::on_termination(host.clone());
    if let Some(cg) = &cgroup {
        crate::cgroup::enter(host.clone(), cg.clone(), startup).await;
    }

    {
        // The home was deleted: nobody can reach or adopt this session any more. End it once it
        // is idle.
        let (host, sock) = (host.clone(), sock_path.clone());
        tokio::spawn(async move {
            tether_transport::unix::until_socket_gone(&sock).await;
            while host.lock_inner().busy {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            host.finish(State::Closed, "its TETHER_HOME was deleted".into());
        });
    }
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let host = host.clone();
                tokio::spawn(async move { crate::conn::handle(host, stream).await });
            }
            _ = shutdown_rx.changed() => break,
        }
    }
    // The shell (its EXIT trap first), then everything the session started: politely, then by
    // force. In-flight replies (the final Exit of a broken session, HostClose's Ok) go out
    // meanwhile.
    let ending = Instant::now();
    crate::cleanup::end_session(&host, cgroup.as_deref()).await;
    if let Some(cg) = &cgroup {
        cg.remove();
    }
    crate::cleanup::settle(&host, ending).await;
    let _ = std::fs::remove_file(&sock_path);
    let _ = std::fs::remove_dir_all(&fifo_dir);
    if spec.temporary {
        let _ = std::fs::remove_file(paths.host_meta(&spec.instance_id));
    }
    Ok(())
}

fn private_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
}

/// Tells the daemon that started us that the socket is ready, then lets go of its pipe.
fn announce_ready() {
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready {}", std::process::id());
    let _ = out.flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = null.as_raw_fd();
    }
}

/// Signal dispositions and mask are inherited across exec; a daemon started from a script may
/// have SIGINT ignored, which would make commands immune to Ctrl-C. Give the shell defaults.
fn reset_signals() {
    use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, signal, sigprocmask};
    for sig in [
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGPIPE,
        Signal::SIGCHLD,
        Signal::SIGTSTP,
        Signal::SIGTTOU,
    ] {
        // SAFETY: setting SIG_DFL is async-signal-safe.
        unsafe {
            let _ = signal(sig, SigHandler::SigDfl);
        }
    }
    // Ignored from the start, so the shell passes that on to every command: one that reads
    // the session's terminal while it is not the terminal's foreground (a script's `sudo`
    // after the session was entered) gets an error at once instead of stopping for good.
    // SAFETY: setting SIG_IGN is async-signal-safe.
    unsafe {
        let _ = signal(Signal::SIGTTIN, SigHandler::SigIgn);
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

pub(crate) fn exit_code(st: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code()
        .or_else(|| st.signal().map(|s| 128 + s))
        .unwrap_or(255)
}

fn spawn_idle_timer(host: Arc<Host>) {
    let idle = host.spec.idle_timeout_s;
    if idle == 0 {
        return;
    }
    tokio::spawn(async move {
        let idle = Duration::from_secs(idle);
        loop {
            let (due, busy, away) = {
                let inner = host.lock_inner();
                match inner.disconnected {
                    // Disconnected: the clock started at disconnect and runs while a command
                    // runs; the session then closes and its kept output is freed.
                    Some((_, at)) => (idle.saturating_sub(at.elapsed()), false, true),
                    None => (
                        idle.saturating_sub(inner.last_used.elapsed()),
                        inner.busy,
                        false,
                    ),
                }
            };
            if !busy && due.is_zero() {
                let while_away = if away { " while disconnected" } else { "" };
                host.finish(
                    State::Closed,
                    format!("idle timeout of {}s expired{while_away}", idle.as_secs()),
                );
                return;
            }
            tokio::time::sleep(due.max(Duration::from_millis(200))).await;
        }
    });
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
