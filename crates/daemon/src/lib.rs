//! The per-user daemon: owns the table of session handles, starts session hosts, and serves
//! clients on a private unix socket.
//!
//! Start-up is [`start_detached`]: a classic double fork with `setsid`, so the daemon is
//! re-parented away from whoever started it and survives their exit. A lock file held with
//! `flock` for the daemon's lifetime makes "is a daemon running?" race-free, and a killed daemon
//! releases it automatically, so stale socket or pid files never block the next start.

mod account;
mod limits;
mod local;
mod logfile;
mod remote;
mod server;
mod state;

pub use state::registry::{computer_of, glob_match};
pub use state::{DEFAULT_IDLE_TIMEOUT_S, MIN_IDLE_TIMEOUT_S};

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{ForkResult, fork, setsid};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;
use tether_transport::paths::Paths;

/// Errors starting a daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the daemon did not start: {0}")]
    Start(String),
}

/// What [`start_detached`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Started {
    /// We started a daemon with this pid.
    New(u32),
    /// Another daemon holds the lock (already running, or starting right now).
    AlreadyRunning,
}

/// Starts a daemon for `paths` in the background and waits until its socket accepts.
///
/// Must be called before any threads exist (it forks). The CLI calls it from `tether daemon
/// start`; every other caller runs that command as a child process.
///
/// Paths from [`Paths::system`] start the system daemon (root only, one for every user).
pub fn start_detached(paths: &Paths) -> Result<Started, DaemonError> {
    refuse_system_unless_root(paths)?;
    paths.ensure_dirs()?;
    let (rd, wr) = nix::unistd::pipe().map_err(std::io::Error::from)?;
    // SAFETY: the caller guarantees a single-threaded process; the child only calls
    // async-signal-safe functions until it forks again and execs nothing.
    match unsafe { fork() }.map_err(std::io::Error::from)? {
        ForkResult::Parent { child } => {
            drop(wr);
            let _ = nix::sys::wait::waitpid(child, None);
            let mut reader = std::fs::File::from(rd);
            let mut answer = String::new();
            let _ = reader.read_to_string(&mut answer);
            let answer = answer.trim();
            if let Some(pid) = answer.strip_prefix("ready ") {
                Ok(Started::New(pid.parse().unwrap_or(0)))
            } else if answer == "locked" {
                Ok(Started::AlreadyRunning)
            } else if answer.is_empty() {
                Err(DaemonError::Start(format!(
                    "it exited during start-up; see {}",
                    paths.log_file().display()
                )))
            } else {
                Err(DaemonError::Start(answer.to_string()))
            }
        }
        ForkResult::Child => {
            drop(rd);
            let _ = setsid();
            // SAFETY: as above; the intermediate child exits at once.
            match unsafe { fork() } {
                Ok(ForkResult::Parent { .. }) | Err(_) => unsafe { libc::_exit(0) },
                Ok(ForkResult::Child) => {}
            }
            let mut ready = Some(std::fs::File::from(wr));
            let code = match daemon_main(paths, &mut ready) {
                Ok(()) => 0,
                Err(e) => {
                    if let Some(r) = ready.as_mut() {
                        let _ = writeln!(r, "{e}");
                    }
                    1
                }
            };
            std::process::exit(code);
        }
    }
}

/// Runs the daemon in this process without detaching (`tether daemon start --foreground`), for
/// service managers such as systemd that supervise the process themselves. Returns when the
/// daemon stops. If another daemon holds the lock, waits for it to exit first.
pub fn run_foreground(paths: &Paths) -> Result<(), DaemonError> {
    refuse_system_unless_root(paths)?;
    paths.ensure_dirs()?;
    eprintln!(
        "tether: daemon {} for {} (log: {})",
        std::process::id(),
        paths.home.display(),
        paths.log_file().display()
    );
    daemon_main(paths, &mut None)
}

fn refuse_system_unless_root(paths: &Paths) -> Result<(), DaemonError> {
    if paths.shared && !nix::unistd::getuid().is_root() {
        return Err(DaemonError::Start(
            "the system daemon serves every user and must be started by root".into(),
        ));
    }
    Ok(())
}

/// The daemon process proper, after detaching (or in the foreground: `ready` is `None`).
fn daemon_main(paths: &Paths, ready: &mut Option<std::fs::File>) -> Result<(), DaemonError> {
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(paths.lock_file())
        .map_err(tether_transport::at(&paths.lock_file()))?;
    let _lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        // In the foreground (under a service manager) there is no starter to tell: wait as the
        // running daemon's standby and take over when it exits, rather than fail and be
        // restarted in a loop.
        Err((file, _)) if ready.is_none() => {
            eprintln!(
                "tether: a daemon is already running for {}; waiting for it to exit",
                paths.home.display()
            );
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| std::io::Error::from(e))?
        }
        Err(_) => {
            if let Some(r) = ready.as_mut() {
                let _ = writeln!(r, "locked");
            }
            return Ok(());
        }
    };
    close_inherited_fds(&[
        _lock.as_raw_fd(),
        ready.as_ref().map_or(-1, |r| r.as_raw_fd()),
    ]);
    let max_log = logfile::max_bytes();
    let log_size = logfile::redirect_stdio(&paths.log_file(), max_log)?;
    std::env::set_current_dir("/")?;
    logfile::init_logging(&paths.log_file(), max_log, log_size);
    limits::raise_open_files();
    // One thread: the daemon only routes requests and hands connections to hosts; a single
    // thread avoids cross-thread wake-ups on every request.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // Everyone may connect to the system daemon; it tells users apart by their uid.
        let mode = if paths.shared { 0o666 } else { 0o600 };
        let listener = tether_transport::unix::bind_with_mode(&paths.daemon_socket(), mode)?;
        tether_transport::paths::write_private(
            &paths.pid_file(),
            format!("{}\n", std::process::id()).as_bytes(),
        )?;
        if let Some(mut r) = ready.take() {
            // Closing our end after this line is what tells the starter we are up.
            let _ = writeln!(r, "ready {}", std::process::id());
        }
        tracing::info!(
            "daemon {} serving {}",
            std::process::id(),
            paths.home.display()
        );
        if paths.shared {
            server::system::serve(server::system::System::new(paths.clone()), listener).await;
        } else {
            server::serve(server::build(paths.clone(), None), listener).await;
        }
        tracing::info!("daemon {} stopping", std::process::id());
        let _ = std::fs::remove_file(paths.daemon_socket());
        let _ = std::fs::remove_file(paths.pid_file());
        if paths.run != paths.home {
            // The short socket directory: removed only if no session host still uses it.
            let _ = std::fs::remove_dir(paths.run.join("hosts"));
            let _ = std::fs::remove_dir(&paths.run);
        }
        Ok::<(), DaemonError>(())
    })?;
    // Do not wait for lingering connection tasks.
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

/// Closes every descriptor the daemon inherited from whoever started it (beyond 0-2): a test
/// harness's capture pipe held open by a long-lived daemon would make the harness wait forever.
fn close_inherited_fds(keep: &[i32]) {
    let dir = if cfg!(target_os = "linux") {
        "/proc/self/fd"
    } else {
        "/dev/fd"
    };
    let fds: Vec<i32> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => return,
    };
    for fd in fds {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: closing a descriptor number we own and do not use elsewhere.
            unsafe {
                libc::close(fd);
            }
        }
    }
}

/// Reads the pid file (for `daemon status` and tests).
pub fn read_pid(paths: &Paths) -> Option<u32> {
    std::fs::read_to_string(paths.pid_file())
        .ok()?
        .trim()
        .parse()
        .ok()
}
