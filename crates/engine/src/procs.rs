//! Finding the processes a session's shell started, to stop a command or end a session.
//!
//! The shell is a session leader (setsid) with monitor mode on, so each command it runs is its
//! own process group inside the shell's session. On Linux we read `/proc/*/stat`; elsewhere we
//! fall back to signalling the shell's own process group.

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// Sends `sig` (or, with `None`, only checks that the process exists) to process `pid`.
///
/// Refuses pid 0 and below: `kill` reads them as "my own process group" and "every process I
/// may signal", so a pid that was never set (0) or came from a file the session can write must
/// never get there. Returns whether the signal was sent.
pub fn signal_pid(pid: i32, sig: impl Into<Option<Signal>>) -> bool {
    pid > 0 && kill(Pid::from_raw(pid), sig).is_ok()
}

/// Sends `sig` to process group `pgid`; refuses 0 and 1 as [`signal_pid`] does (`killpg(0)` is
/// the caller's own group, and group 1 is init's).
pub fn signal_group(pgid: i32, sig: Signal) -> bool {
    pgid > 1 && killpg(Pid::from_raw(pgid), sig).is_ok()
}

/// A process's working directory (Linux; `None` elsewhere, where `enter` asks the shell).
pub fn cwd(pid: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/cwd"))
        .ok()
        .and_then(|p| p.into_os_string().into_string().ok())
}

/// A process in the shell's session.
#[derive(Debug, Clone, Copy)]
pub struct Proc {
    pub pid: i32,
    pub pgid: i32,
    /// Start time in clock ticks since boot.
    pub start: u64,
}

/// Makes this process (the session host) the reaper of every orphan below it (Linux): a
/// background job whose parent exits is re-parented here instead of to init, so the host's
/// descendants are all the processes its shell ever started that still run. Finding them is
/// then a walk of a few `/proc/PID/task/TID/children` files rather than a scan of every process
/// on the computer. Returns whether it took effect (and records it for [`session_members`]).
#[cfg(target_os = "linux")]
pub fn become_subreaper() -> bool {
    let done = nix::sys::prctl::set_child_subreaper(true).is_ok();
    SUBREAPER.store(done, std::sync::atomic::Ordering::Relaxed);
    done
}

#[cfg(not(target_os = "linux"))]
pub fn become_subreaper() -> bool {
    false
}

/// The children of process `pid`, from every one of its threads (an orphan is re-parented to
/// one thread of the reaper). `None` when the kernel has no `children` files.
#[cfg(target_os = "linux")]
fn children_of(pid: i32) -> Option<Vec<i32>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut out = Vec::new();
    let mut any = false;
    for task in tasks.flatten() {
        let Ok(list) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        any = true;
        out.extend(
            list.split_whitespace()
                .filter_map(|c| c.parse::<i32>().ok()),
        );
    }
    any.then_some(out)
}

/// The host's own children other than `shell`: orphans it adopted as their reaper.
#[cfg(target_os = "linux")]
pub fn adopted(shell: i32) -> Vec<i32> {
    let me = std::process::id() as i32;
    children_of(me)
        .unwrap_or_default()
        .into_iter()
        .filter(|&c| c != shell)
        .collect()
}

#[cfg(not(target_os = "linux"))]
pub fn adopted(_shell: i32) -> Vec<i32> {
    Vec::new()
}

/// Reaps the adopted orphans that have exited (never the shell, which tokio waits for).
pub fn reap_adopted(shell: i32) {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    for pid in adopted(shell) {
        let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
    }
}

/// Reaps orphans adopted as the shell's subreaper when they exit (the shell itself is tokio's
/// to wait for), so they never linger as zombies.
pub fn spawn_reaper(shell_pid: i32) {
    let Ok(mut sigchld) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
    else {
        return;
    };
    tokio::spawn(async move {
        while sigchld.recv().await.is_some() {
            reap_adopted(shell_pid);
        }
    });
}

/// Every descendant of this process, breadth first, bounded (a fork bomb must not make the
/// walk endless). `None` when the kernel has no `children` files.
#[cfg(target_os = "linux")]
fn descendants() -> Option<Vec<i32>> {
    const MAX: usize = 100_000;
    let mut out = children_of(std::process::id() as i32)?;
    let mut i = 0;
    while i < out.len() && out.len() < MAX {
        if let Some(c) = children_of(out[i]) {
            out.extend(c);
        }
        i += 1;
    }
    Some(out)
}

/// Every live process below this host (the shell included), with its start time: with the
/// subreaper ([`become_subreaper`]), everything the session started that still runs, whatever
/// session or process group it moved to. Zombies are left out (they are dead; their reaper
/// collects them). Without `children` files the process table is read for parent links.
#[cfg(target_os = "linux")]
pub fn tree() -> Vec<Proc> {
    let me = std::process::id() as i32;
    let pids = descendants().unwrap_or_else(|| descendants_by_parent(me));
    pids.into_iter().filter_map(live).collect()
}

#[cfg(not(target_os = "linux"))]
pub fn tree() -> Vec<Proc> {
    Vec::new()
}

/// A process as [`Proc`], unless it is gone or a zombie.
#[cfg(target_os = "linux")]
pub fn live(pid: i32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat_fields(&stat)?.first().copied();
    if matches!(state, Some("Z") | Some("X") | None) {
        return None;
    }
    parse_stat(pid, &stat)
}

#[cfg(not(target_os = "linux"))]
pub fn live(_pid: i32) -> Option<Proc> {
    None
}

/// The descendants of `root`, from the parent pid of every process on the computer.
#[cfg(target_os = "linux")]
fn descendants_by_parent(root: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut parent_of = std::collections::HashMap::<i32, Vec<i32>>::new();
    for pid in dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
    {
        let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| stat_fields(&s)?.get(1)?.parse::<i32>().ok());
        if let Some(ppid) = ppid {
            parent_of.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = parent_of.remove(&root).unwrap_or_default();
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = parent_of.remove(&out[i]) {
            out.extend(c);
        }
        i += 1;
    }
    out
}

/// Processes whose session id is `sid` (the shell's pid), other than the shell itself.
///
/// The host is its shell's subreaper ([`become_subreaper`]), so everything in the shell's
/// session descends from the host: walking the host's descendants finds it all. Without
/// `children` files (or without the subreaper), every process on the computer is checked.
#[cfg(target_os = "linux")]
pub fn session_members(sid: i32) -> Vec<Proc> {
    let candidates = match SUBREAPER.load(std::sync::atomic::Ordering::Relaxed) {
        true => descendants(),
        false => None,
    };
    match candidates {
        Some(pids) => members_among(sid, pids.into_iter()),
        None => {
            let Ok(dir) = std::fs::read_dir("/proc") else {
                return Vec::new();
            };
            let pids = dir
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()));
            members_among(sid, pids)
        }
    }
}

/// Whether this host became its shell's subreaper ([`become_subreaper`]).
#[cfg(target_os = "linux")]
static SUBREAPER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(target_os = "linux")]
fn members_among(sid: i32, pids: impl Iterator<Item = i32>) -> Vec<Proc> {
    let mut out = Vec::new();
    for pid in pids {
        if pid == sid {
            continue;
        }
        // getsid(2) first: one cheap syscall, where reading `/proc/PID/stat` costs an open, the
        // kernel formatting ~50 fields, and a close (docs/PROFILES.md); only members have
        // their stat read.
        if nix::unistd::getsid(Some(Pid::from_raw(pid))).map(Pid::as_raw) != Ok(sid) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some(p) = parse_stat(pid, &stat).filter(|_| stat_sid(&stat) == Some(sid)) {
            out.push(p);
        }
    }
    out
}

#[cfg(not(target_os = "linux"))]
pub fn session_members(_sid: i32) -> Vec<Proc> {
    Vec::new()
}

/// Fields after the command name, which is in parentheses and may itself contain spaces.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let close = stat.rfind(')')?;
    Some(stat.get(close + 2..)?.split(' ').collect())
}

fn stat_sid(stat: &str) -> Option<i32> {
    stat_fields(stat)?.get(3)?.parse().ok()
}

fn parse_stat(pid: i32, stat: &str) -> Option<Proc> {
    let f = stat_fields(stat)?;
    // After "(comm) ": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
    // utime stime cutime cstime priority nice num_threads itrealvalue starttime
    Some(Proc {
        pid,
        pgid: f.get(2)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

/// Clock ticks since boot now, for comparing with [`Proc::start`].
#[cfg(target_os = "linux")]
pub fn ticks_now() -> u64 {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map(|up| (up * hz) as u64)
        .unwrap_or(0)
}

#[cfg(not(target_os = "linux"))]
pub fn ticks_now() -> u64 {
    0
}

/// Ticks per second.
pub fn ticks_per_sec() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64
}

/// Signals every process group in the shell's session started at or after `since_ticks`
/// (except the shell's own group). Returns how many groups were signalled.
///
/// A process left in the shell's own group (a shell without monitor mode) is signalled alone,
/// never through the group, which would hit the shell too.
pub fn signal_started_since(shell: i32, since_ticks: u64, sig: Signal) -> usize {
    let started: Vec<Proc> = session_members(shell)
        .into_iter()
        .filter(|p| p.start >= since_ticks)
        .collect();
    let mut groups: Vec<i32> = started
        .iter()
        .filter(|p| p.pgid != shell)
        .map(|p| p.pgid)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    for g in &groups {
        let _ = signal_group(*g, sig);
    }
    for p in started.iter().filter(|p| p.pgid == shell) {
        let _ = signal_pid(p.pid, sig);
    }
    if cfg!(not(target_os = "linux")) {
        let _ = signal_group(shell, sig);
    }
    groups.len() + started.iter().filter(|p| p.pgid == shell).count()
}

/// Sends each of `sigs`, in order, to everything in the shell's session, the shell included.
///
/// The session is found once per close, not once per signal ([`session_members`]).
pub fn signal_session(shell: i32, sigs: &[Signal]) {
    let members = session_members(shell);
    for &sig in sigs {
        for p in &members {
            let _ = signal_pid(p.pid, sig);
        }
        let _ = signal_group(shell, sig);
        let _ = signal_pid(shell, sig);
    }
}

/// Ends what a pooled invocation left running (`cmd &`, `nohup …`, `setsid …`), the shell
/// excepted, so that the next invocation starts in a session as new. Returns how many
/// processes were signalled.
///
/// With the subreaper these are all the host's descendants but the shell, whatever session
/// they moved to; elsewhere, the members of the shell's session.
pub fn end_strays(shell: i32) -> usize {
    let mut pids: Vec<i32> = tree().iter().map(|p| p.pid).collect();
    pids.extend(session_members(shell).iter().map(|p| p.pid));
    pids.retain(|&p| p != shell);
    pids.sort_unstable();
    pids.dedup();
    for sig in [Signal::SIGHUP, Signal::SIGKILL] {
        for &p in &pids {
            let _ = signal_pid(p, sig);
        }
    }
    pids.len()
}

/// Background jobs of the session (`job start --session`) that have not ended: each has a
/// directory under `jobs/`, which gets a `status` file when it ends.
pub(crate) fn running_jobs(dir: &std::path::Path) -> u32 {
    std::fs::read_dir(dir.join("jobs"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| !e.path().join("status").exists())
                .filter(|e| {
                    // A job stopped by `job stop` never writes its status.
                    std::fs::read_to_string(e.path().join("pid"))
                        .ok()
                        .and_then(|p| p.trim().parse::<i32>().ok())
                        .is_some_and(|p| signal_pid(p, None))
                })
                .count() as u32
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_0_and_below_are_never_signalled() {
        // kill(0, 0) and kill(-1, 0) would succeed (our own group, every process we may
        // signal): the helpers refuse them instead. SIGCONT is harmless if the guard fails.
        assert!(!signal_pid(0, None));
        assert!(!signal_pid(-1, None));
        assert!(!signal_group(0, Signal::SIGCONT));
        assert!(!signal_group(1, Signal::SIGCONT));
        assert!(signal_pid(std::process::id() as i32, None));
    }

    #[test]
    fn stat_with_spaces_in_name_parses() {
        let s = "42 (a b) c) S 1 40 41 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 0 0";
        let p = parse_stat(42, s).unwrap();
        assert_eq!(p.pgid, 40);
        assert_eq!(stat_sid(s), Some(41));
        assert_eq!(p.start, 12345);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn our_own_process_is_visible() {
        let me = std::process::id() as i32;
        let sid = nix::unistd::getsid(None).unwrap().as_raw();
        if sid != me {
            assert!(session_members(sid).iter().any(|p| p.pid == me));
        }
        assert!(ticks_now() > 0);
    }
}
