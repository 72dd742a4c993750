//! A cgroup (v2) per session, where the machine lets the host make one (Linux).
//!
//! When cgroup v2 is mounted and the host may create a child of its own cgroup, the session's
//! shell is moved into `<host's cgroup>/tether-<host pid>-<host start>-<instance id>` before it
//! reads its first command. Whatever the shell starts stays in that cgroup whatever it does
//! (`setsid`, a double fork, a new process group, `nohup`), so closing the session finds all of
//! it: `cgroup.kill` (Linux 5.14) kills the whole cgroup at once, with no race against a fork;
//! without it, `cgroup.procs` is read and signalled until it is empty.
//!
//! The name carries the host's pid and start time, so a cgroup whose host is gone (killed with
//! SIGKILL, which no cleanup can follow) is recognised by the next host that starts beside it,
//! which kills what is left in it and removes it ([`sweep`]).
//!
//! Elsewhere (no cgroup v2, not ours to write, `TETHER_CGROUP=0`) the host relies on being its
//! shell's subreaper: the session's processes are then the host's descendants (`procs`).

use crate::session::Host;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const PREFIX: &str = "tether-";

/// A session's cgroup, made by its host.
#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
}

/// Whether the user turned session cgroups off.
fn disabled() -> bool {
    !tether_settings::get().cgroup
}

impl Cgroup {
    /// Makes the cgroup for session `instance_id`, as a child of this process's own cgroup.
    /// `None` where that cannot be done (no cgroup v2, no permission, turned off).
    pub fn create(instance_id: &str) -> Option<Cgroup> {
        if disabled() || !cfg!(target_os = "linux") {
            return None;
        }
        let parent = own_cgroup()?;
        let me = std::process::id() as i32;
        let name = format!("{PREFIX}{me}-{}-{instance_id}", start_time(me)?);
        let dir = parent.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => Some(Cgroup { dir }),
            Err(e) => {
                tracing::debug!("no session cgroup at {}: {e}", dir.display());
                None
            }
        }
    }

    /// Moves process `pid` (the shell, before it has started anything) into the cgroup.
    pub fn add(&self, pid: i32) -> bool {
        match std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!("cannot move the shell into {}: {e}", self.dir.display());
                false
            }
        }
    }

    /// Every process in the cgroup and in any cgroup made below it.
    pub fn procs(&self) -> Vec<i32> {
        procs_below(&self.dir)
    }

    /// Kills everything in the cgroup at once (`cgroup.kill`); false where the kernel has no
    /// such file (the caller then signals [`Cgroup::procs`] one by one).
    pub fn kill(&self) -> bool {
        std::fs::write(self.dir.join("cgroup.kill"), "1").is_ok()
    }

    /// Removes the cgroup (and any made below it); it must be empty. A cgroup that is still
    /// busy is left to [`sweep`].
    pub fn remove(&self) {
        remove_tree(&self.dir);
    }
}

/// Moves the session's shell into its cgroup without making the session's start wait for it:
/// a move can cost an RCU grace period (10–20 ms on some kernels), longer than the rest of a
/// host's start. The shell's stdin is held meanwhile, so the shell runs no command — nothing
/// that could start a process outside the cgroup — before it is inside; `then` (the start-up
/// script's line) is written once it is. Returns as soon as the stdin is held. Then sweeps the
/// cgroups of dead hosts beside this one.
pub(crate) async fn enter(host: Arc<Host>, cgroup: Arc<Cgroup>, then: Option<String>) {
    use tokio::io::AsyncWriteExt;
    let (held_tx, held) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut stdin = host.shell.stdin.lock().await;
        let _ = held_tx.send(());
        let (cg, pid) = (cgroup.clone(), host.shell.pid);
        let _ = tokio::task::spawn_blocking(move || cg.add(pid)).await;
        if let (Some(line), Some(s)) = (then, stdin.as_mut()) {
            let _ = s.write_all(line.as_bytes()).await;
        }
        drop(stdin);
        // Sessions whose host was killed (SIGKILL) left their cgroups beside ours.
        let _ = tokio::task::spawn_blocking(sweep).await;
    });
    let _ = held.await;
}

/// This process's cgroup v2 directory, from `/proc/self/cgroup` (`0::/path`) and the mount
/// point of the cgroup2 file system in `/proc/self/mountinfo`.
fn own_cgroup() -> Option<PathBuf> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let (root, point) = mounts.lines().find_map(cgroup2_mount)?;
    let rel = match root.as_str() {
        "/" => path,
        r => match path.strip_prefix(r) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
            _ => return None,
        },
    };
    let dir = PathBuf::from(point).join(rel.trim_start_matches('/'));
    dir.join("cgroup.procs").exists().then_some(dir)
}

/// `(root, mount point)` of a mountinfo line that mounts cgroup2.
fn cgroup2_mount(line: &str) -> Option<(String, String)> {
    let (left, right) = line.split_once(" - ")?;
    if right.split(' ').next() != Some("cgroup2") {
        return None;
    }
    let mut f = left.split(' ');
    let root = f.nth(3)?;
    let point = f.next()?;
    Some((unescape(root), unescape(point)))
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A live process's start time (clock ticks since boot); `None` for a zombie or no process.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split(' ').collect();
    if matches!(f.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    f.get(19)?.parse().ok()
}

fn procs_below(dir: &Path) -> Vec<i32> {
    let mut out: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    for sub in subdirs(dir) {
        out.extend(procs_below(&sub));
    }
    out
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes a cgroup and those below it, deepest first (cgroups are removed with `rmdir`).
fn remove_tree(dir: &Path) {
    for sub in subdirs(dir) {
        remove_tree(&sub);
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        tracing::debug!("cannot remove cgroup {}: {e}", dir.display());
    }
}

/// Kills everything in a cgroup: `cgroup.kill`, else SIGKILL to each process until none is
/// left (bounded: a process in uninterruptible sleep may take a while to go).
pub fn kill_all(dir: &Path) {
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    for _ in 0..200 {
        let procs = procs_below(dir);
        if procs.is_empty() {
            return;
        }
        for p in procs {
            let _ = crate::procs::signal_pid(p, nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Ends the sessions of hosts that died without cleaning up (SIGKILL): cgroups named after a
/// host that no longer runs, beside this host's. Blocking; run off the runtime.
pub fn sweep() {
    if disabled() {
        return;
    }
    let Some(parent) = own_cgroup() else {
        return;
    };
    let Ok(rd) = std::fs::read_dir(&parent) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some((pid, start)) = name.to_str().and_then(owner) else {
            continue;
        };
        if start_time(pid) == Some(start) {
            continue;
        }
        tracing::info!(
            "ending what a dead session host left in {}",
            name.to_string_lossy()
        );
        kill_all(&e.path());
        remove_tree(&e.path());
    }
}

/// The host pid and start time in a session cgroup's name (`tether-<pid>-<start>-<id>`).
fn owner(name: &str) -> Option<(i32, u64)> {
    let mut f = name.strip_prefix(PREFIX)?.splitn(3, '-');
    let pid = f.next()?.parse().ok()?;
    let start = f.next()?.parse().ok()?;
    tether_proto::is_instance_id(f.next()?).then_some((pid, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_say_whose_they_are() {
        let id = "0b9a5e0c-4f43-4d4b-9a57-2b1c3d4e5f60";
        assert!(tether_proto::is_instance_id(id));
        assert_eq!(owner(&format!("tether-42-1234-{id}")), Some((42, 1234)));
        assert_eq!(owner("tether-42-1234-x"), None);
        assert_eq!(owner("user.slice"), None);
    }

    #[test]
    fn mountinfo_lines_are_read() {
        let l = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
        assert_eq!(
            cgroup2_mount(l),
            Some(("/".into(), "/sys/fs/cgroup/unified".into()))
        );
        let v1 = "36 25 0:31 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu";
        assert_eq!(cgroup2_mount(v1), None);
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/a\\04"), "/a\\04");
    }
}
