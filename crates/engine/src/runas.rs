//! Sessions of a system daemon run as their owner (or a configuration's `run_as` account),
//! while the host itself stays root like the daemon that started it.
//!
//! Why the host stays root: its files (socket, record, spool, FIFOs) live in a tree that only
//! root may write, so a session's user can neither replace a file the host later opens (a
//! symlink to `/etc/shadow` where a FIFO should be) nor see another user's. The user gets
//! exactly what the shell needs: ownership of the FIFOs and scripts it opens by path, of its
//! terminal, and of the `jobs` directory it writes into.

use crate::spec::RunAs;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;

static SHELL_USER: OnceLock<(u32, u32)> = OnceLock::new();

/// Records, once per host, who the shell runs as: from then on [`give`] hands files to them.
pub(crate) fn set(run_as: &RunAs) {
    let _ = SHELL_USER.set((run_as.uid, run_as.gid));
}

/// Gives a file or FIFO the host made for the shell to the shell's user (no-op unless the
/// session runs as another user). The host made it a moment ago in a directory only root can
/// write, so the path is still the object we made.
pub(crate) fn give(path: &Path) -> std::io::Result<()> {
    if let Some(&(uid, gid)) = SHELL_USER.get() {
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(std::io::Error::from)?;
    }
    Ok(())
}

/// Gives the shell's user what it opens or writes in the host's directory: the per-call script
/// `w`, the status script `s`, and `jobs/`, where session jobs write their output (see the
/// daemon's session_jobs).
pub(crate) fn give_shell_files(fifo_dir: &Path) -> std::io::Result<()> {
    let jobs = fifo_dir.join("jobs");
    tether_transport::paths::private_dir(&jobs)?;
    for f in [fifo_dir.join("w"), fifo_dir.join("s"), jobs] {
        give(&f)?;
    }
    Ok(())
}

/// As [`give`], for an open descriptor (the terminal's slave).
pub(crate) fn give_fd(fd: &impl std::os::fd::AsFd) -> std::io::Result<()> {
    if let Some(&(uid, gid)) = SHELL_USER.get() {
        nix::unistd::fchown(
            fd,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(std::io::Error::from)?;
    }
    Ok(())
}

/// What the child needs to become the user, prepared before fork: between fork and exec only
/// async-signal-safe calls are allowed, so nothing here may allocate then.
pub(crate) struct Become {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    dir: Option<CString>,
}

impl Become {
    pub(crate) fn new(run_as: &RunAs, dir: &Path) -> Become {
        Become {
            uid: run_as.uid,
            gid: run_as.gid,
            groups: run_as.groups.clone(),
            dir: CString::new(dir.as_os_str().as_bytes()).ok(),
        }
    }

    /// In the child: supplementary groups, then the group, then the user (the order matters:
    /// after setuid the others are no longer allowed), then the directory again as the user.
    /// Any failure fails the spawn: a shell must never run as root by mistake.
    pub(crate) fn apply(&self) -> std::io::Result<()> {
        // SAFETY: plain system calls on memory prepared before fork.
        unsafe {
            #[cfg(any(target_os = "macos", target_os = "ios"))]
            let n = self.groups.len() as libc::c_int;
            #[cfg(not(any(target_os = "macos", target_os = "ios")))]
            let n = self.groups.len() as libc::size_t;
            if libc::setgroups(n, self.groups.as_ptr()) != 0
                || libc::setgid(self.gid) != 0
                || libc::setuid(self.uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getuid() != self.uid || (self.uid != 0 && libc::setuid(0) == 0) {
                return Err(std::io::Error::other("could not drop root"));
            }
            if let Some(d) = &self.dir {
                let _ = libc::chdir(d.as_ptr());
            }
        }
        Ok(())
    }
}
