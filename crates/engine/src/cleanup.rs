//! Ending a session: politely first, by force after a grace period.
//!
//! 1. The shell goes first, so its `trap … EXIT` runs while the session is still whole. An idle
//!    shell gets end-of-file on its stdin and exits as it would at the end of a script. A busy
//!    one (a command running) gets SIGHUP, and so does everything else, at once.
//! 2. Then every process the session started gets SIGHUP (and SIGCONT, so a stopped one acts on
//!    it): background jobs, `nohup`/`setsid` processes, double-forked daemons. They are found in
//!    the session's cgroup ([`crate::cgroup`]) and among the host's descendants (the host is the
//!    shell's subreaper, so orphans come to it); processes that appear meanwhile are signalled
//!    too.
//! 3. At the end of the grace period ([`GRACE`], counted from the start; at least a quarter of
//!    it after step 2 begins) whatever is left gets SIGKILL: `cgroup.kill`, and each process
//!    found, walked again until none is left, because processes fork while being killed.
//!
//! Every wait has a deadline; nothing here waits for a process that refuses to go.

use crate::cgroup::Cgroup;
use crate::procs::{self, Proc};
use crate::session::Host;
use nix::sys::signal::Signal;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// How long a session's processes have to end after SIGHUP before SIGKILL.
pub(crate) const GRACE: Duration = Duration::from_secs(2);
/// How long SIGKILL may take to empty the session (processes in uninterruptible sleep).
const KILL_LIMIT: Duration = Duration::from_secs(3);

/// Ends the shell and everything the session started (see the module's documentation).
pub(crate) async fn end_session(host: &Host, cgroup: Option<&Cgroup>) {
    let shell = host.shell.pid;
    let begun = Instant::now();
    let busy = host.lock_inner().busy;
    let mut exited = host.shell.exited.clone();
    let mut hupped = HashSet::new();

    // 1. The shell.
    if let Ok(mut stdin) =
        tokio::time::timeout(Duration::from_millis(200), host.shell.stdin.lock()).await
    {
        // End-of-file: an idle shell exits, running its EXIT trap.
        drop(stdin.take());
    }
    let shell_alive =
        |exited: &tokio::sync::watch::Receiver<Option<i32>>| exited.borrow().is_none();
    if busy {
        hup_new(&members(shell, cgroup), &mut hupped);
        if cfg!(not(target_os = "linux")) {
            procs::signal_session(shell, &[Signal::SIGHUP]);
        }
    }
    let shell_deadline = begun + GRACE;
    while shell_alive(&exited) && Instant::now() < shell_deadline {
        if busy {
            // The rest of the script may start new commands: they are told to go too.
            hup_new(&members(shell, cgroup), &mut hupped);
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), exited.changed()).await;
    }

    // 2. Everything else (and a shell whose trap is still running).
    let kill_at = (begun + GRACE).max(Instant::now() + GRACE / 4);
    let mut pause = Duration::from_millis(5);
    loop {
        let left = members(shell, cgroup);
        if left.is_empty() {
            break;
        }
        hup_new(&left, &mut hupped);
        if Instant::now() >= kill_at {
            break;
        }
        tokio::time::sleep(pause.min(kill_at.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }

    // 3. By force.
    let limit = Instant::now() + KILL_LIMIT;
    loop {
        if let Some(cg) = cgroup {
            cg.kill();
        }
        let left = members(shell, cgroup);
        if left.is_empty() {
            break;
        }
        if Instant::now() >= limit {
            let pids: Vec<i32> = left.iter().map(|p| p.pid).collect();
            tracing::warn!(
                "session {}: processes {pids:?} did not end after SIGKILL",
                host.spec.name
            );
            break;
        }
        for p in &left {
            let _ = procs::signal_pid(p.pid, Signal::SIGKILL);
        }
        if cfg!(not(target_os = "linux")) && shell_alive(&exited) {
            procs::signal_session(shell, &[Signal::SIGKILL]);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::debug!("session {}: ended in {:?}", host.spec.name, begun.elapsed());
}

/// The session's live processes: its cgroup's and the host's descendants (the shell among
/// them until it has exited).
fn members(shell: i32, cgroup: Option<&Cgroup>) -> Vec<Proc> {
    let mut out = procs::tree();
    if let Some(cg) = cgroup {
        let known: HashSet<i32> = out.iter().map(|p| p.pid).collect();
        out.extend(
            cg.procs()
                .into_iter()
                .filter(|p| !known.contains(p))
                .filter_map(procs::live),
        );
    }
    if cfg!(not(target_os = "linux")) {
        out.extend(procs::session_members(shell));
        out.extend(procs::live(shell));
    }
    out
}

/// SIGHUP (then SIGCONT, so that a stopped process acts on it) to each process not told yet.
fn hup_new(procs: &[Proc], hupped: &mut HashSet<(i32, u64)>) {
    for p in procs {
        if hupped.insert((p.pid, p.start)) {
            let _ = procs::signal_pid(p.pid, Signal::SIGHUP);
            let _ = procs::signal_pid(p.pid, Signal::SIGCONT);
        }
    }
}

/// After [`end_session`]: lets in-flight replies go out before the host exits — at least a
/// moment after the end began, and until a running invocation has sent its `Exit` (bounded).
pub(crate) async fn settle(host: &Host, ending: Instant) {
    let until = ending + Duration::from_millis(50);
    let limit = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until || (host.lock_inner().busy && Instant::now() < limit) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// SIGTERM (a system shutdown, `kill`), SIGINT or SIGHUP to the host end its session as
/// `remove` does: the shell's EXIT trap, SIGHUP, the grace period, SIGKILL. The session is
/// Closed, saying why. (SIGKILL cannot be caught: see [`crate::cgroup::sweep`].)
pub(crate) fn on_termination(host: std::sync::Arc<Host>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::warn!("session {}: cannot watch SIGTERM", host.spec.name);
        return;
    };
    tokio::spawn(async move {
        let sig = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => "SIGHUP",
        };
        tracing::info!("session {}: {sig}: closing", host.spec.name);
        host.finish(
            tether_proto::State::Closed,
            format!("its session host received {sig}"),
        );
    });
}

/// A session that could not start (its record could not be written): its shell and whatever
/// it started end, and nothing of it is left on disk.
pub(crate) async fn unstarted(
    host: &Host,
    cgroup: Option<std::sync::Arc<Cgroup>>,
    socket: &std::path::Path,
) {
    end_session(host, cgroup.as_deref()).await;
    if let Some(cg) = cgroup {
        cg.remove();
    }
    let _ = std::fs::remove_file(socket);
    let _ = std::fs::remove_dir_all(&host.shell.fifo_dir);
    let _ = std::fs::remove_file(host.paths.host_meta(&host.spec.instance_id));
}
