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

/// Where the shell starts, and how: a session that runs as another user enters its directory
/// as that user ([`Become`]), so root's view of the file system decides nothing and a
/// directory the user cannot reach is an error naming it. A per-user host (the user itself)
/// falls back to home for a directory that is gone. Returns the directory, the child's part
/// and the read end of its report pipe.
pub(crate) fn place(
    cmd: &mut tokio::process::Command,
    spec: &crate::HostSpec,
) -> std::io::Result<(String, Option<Become>, Option<std::os::fd::OwnedFd>)> {
    let Some(r) = &spec.run_as else {
        let cwd = spec
            .cwd
            .clone()
            .filter(|d| Path::new(d).is_dir())
            .or_else(|| std::env::var("HOME").ok())
            .unwrap_or_else(|| "/".into());
        cmd.current_dir(&cwd);
        return Ok((cwd, None, None));
    };
    let cwd = spec.cwd.clone().unwrap_or_else(|| r.home.clone());
    let (b, report) = Become::new(r, Path::new(&cwd))?;
    Ok((cwd, Some(b), Some(report)))
}

/// What the child needs to become the user, prepared before fork: between fork and exec only
/// async-signal-safe calls are allowed, so nothing here may allocate then.
pub(crate) struct Become {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    dir: CString,
    /// Write end of a pipe on which the child reports a failed `chdir` (its errno), so the
    /// host can tell the user which directory they cannot reach instead of a bare spawn error.
    report: std::os::fd::OwnedFd,
}

impl Become {
    /// Returns the child's part and the read end of its report pipe.
    pub(crate) fn new(
        run_as: &RunAs,
        dir: &Path,
    ) -> std::io::Result<(Become, std::os::fd::OwnedFd)> {
        let (read, write) = report_pipe()?;
        let dir = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::other("the directory name has a NUL byte"))?;
        Ok((
            Become {
                uid: run_as.uid,
                gid: run_as.gid,
                groups: run_as.groups.clone(),
                dir,
                report: write,
            },
            read,
        ))
    }

    /// In the child: supplementary groups, then the group, then the user (the order matters:
    /// after setuid the others are no longer allowed), then the directory, as the user. The
    /// parent's `Command` is given no directory: root never enters it on the user's behalf.
    /// Any failure fails the spawn: a shell must never run as root by mistake, nor in a
    /// directory its user could not have entered.
    pub(crate) fn apply(&self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
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
            if libc::chdir(self.dir.as_ptr()) != 0 {
                let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                let bytes = errno.to_ne_bytes();
                libc::write(self.report.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
                return Err(std::io::Error::from_raw_os_error(errno));
            }
        }
        Ok(())
    }
}

/// A pipe whose ends are close-on-exec (the shell inherits neither) and non-blocking (the
/// parent reads it once, after the spawn, whether or not the child wrote).
fn report_pipe() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
    let (read, write) = nix::unistd::pipe()?;
    for fd in [&read, &write] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    }
    Ok((read, write))
}

/// What the child reported on its pipe: the errno of a failed `chdir`, if that is why the
/// spawn failed. Called after the spawn returned (the child has exited or exec'd by then).
pub(crate) fn chdir_failure(read: std::os::fd::OwnedFd) -> Option<std::io::Error> {
    use std::io::Read;
    let mut f = std::fs::File::from(read);
    let mut buf = [0u8; 4];
    match f.read(&mut buf) {
        Ok(4) => Some(std::io::Error::from_raw_os_error(i32::from_ne_bytes(buf))),
        _ => None,
    }
}
