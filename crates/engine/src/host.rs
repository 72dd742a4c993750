//! The session host process: spawns the shell, serves its socket, enforces the idle timeout,
//! and records its state on disk.

use crate::HostError;
use crate::console::Console;
use crate::session::{Host, Inner, Shell};
use crate::shell::Flavour;
use crate::spec::{HostSpec, default_shell};
use nix::sys::signal::Signal;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tether_proto::State;
use tether_transport::paths::{Paths, private_dir};
use tokio::sync::{Mutex, Semaphore, mpsc, watch};

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
        shell: Shell {
            pid: shell_pid,
            flavour,
            fifo_dir: fifo_dir.clone(),
            stdin: Mutex::new(stdin),
            status_rx: Mutex::new(status_rx),
            exited: exit_rx,
            script_file: crate::fifos::ScriptFile::new(script_file),
            status_file: crate::fifos::ScriptFile::new(status_file),
            spare: std::sync::Mutex::new(None),
            console,
        },
        lock: Arc::new(Semaphore::new(1)),
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
        outbox: crate::outbox::Outbox::new(
            spec.output_quota,
            spec.drop_oldest,
            Some(fifo_dir.join("spool")),
        ),
        stdin: Default::default(),
        tty: tokio::sync::OnceCell::new_with(born_with_tty),
        detach: watch::channel(0).0,
        remote_cancel: watch::channel(0).0,
        remote_abandon: watch::channel(0).0,
        remote_ack: watch::channel((0, 0)).0,
        pool_free: watch::channel(0).0,
        lends: Default::default(),
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
            // Idle once no invocation holds the session's one-command lock.
            let idle = host.lock.acquire().await;
            host.finish(State::Closed, "its TETHER_HOME was deleted".into());
            drop(idle);
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
    if paths.run != paths.home && !paths.daemon_socket().exists() {
        // The short socket directory under the temporary directory (a home whose path is too
        // long for a socket): the last one out removes it, be it the daemon (which does the
        // same when it stops) or, after the daemon, its last host. Not while a daemon runs: it
        // may be starting a host, which makes the directory again only as it starts.
        let _ = std::fs::remove_dir(paths.run.join("hosts"));
        let _ = std::fs::remove_dir(&paths.run);
    }
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
