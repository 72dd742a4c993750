//! `tether daemon start|stop|restart|status`, and the hidden session-host entry point.

use super::error::{CliError, CliResult};
use clap::{Args, Subcommand};
use std::io::BufRead;
use std::time::{Duration, Instant};
use tether_client::{Client, ErrorKind, Paths};

#[derive(Args, Debug)]
pub struct DaemonArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Start the daemon in the background (it also starts on demand). With `tether --system
    /// daemon start`, as root: the system daemon, one for every user of this computer.
    #[command(
        after_help = "Examples:\n  tether daemon start\n  TETHER_LOG=debug tether daemon start --quiet\n  \
sudo tether --system daemon start   # one daemon for every user"
    )]
    Start {
        /// Print nothing on success.
        #[arg(long)]
        quiet: bool,
        /// Run in this process until stopped, logging to the log file (for systemd).
        #[arg(long)]
        foreground: bool,
    },
    /// Write a systemd unit for the daemon, then enable and start it (`--system`: the system
    /// daemon's unit).
    #[command(
        after_help = "Examples:\n  tether daemon install                 # per-user unit, then: loginctl enable-linger \"$USER\"\n  \
sudo tether daemon install --system   # tether-system.service\n  \
tether daemon install --unit-dir ./units --no-enable"
    )]
    Install(super::install::InstallArgs),
    /// Stop the daemon: idle sessions close, busy ones go on.
    #[command(after_help = "Example:\n  tether daemon stop && tether daemon start")]
    Stop,
    /// Replace the running daemon by one of this tether, keeping every session: after an
    /// upgrade. The old daemon (of any release) exits at once, leaving its sessions running,
    /// and the new one adopts them.
    #[command(
        after_help = "Examples:\n  tether daemon restart   # after installing a new tether\n  \
sudo tether --system daemon restart"
    )]
    Restart,
    /// Show whether the daemon runs, its pid, its sessions and its warm connections.
    #[command(after_help = "Examples:\n  tether daemon status\n  tether daemon status --json")]
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn is_running(paths: &Paths) -> bool {
    std::os::unix::net::UnixStream::connect(paths.daemon_socket()).is_ok()
}

pub fn run(a: DaemonArgs) -> CliResult {
    let paths = super::daemon_paths()?;
    match a.action {
        Action::Start {
            foreground: true, ..
        } => super::install::foreground(&paths),
        Action::Install(a) => super::install::run(a),
        Action::Start { quiet, .. } => {
            if is_running(&paths) {
                if !quiet {
                    outln!(
                        "tether daemon is already running for {}",
                        paths.home.display()
                    );
                }
                return Ok(0);
            }
            match tether_daemon::start_detached(&paths) {
                Ok(tether_daemon::Started::New(pid)) => {
                    if !quiet {
                        outln!("tether daemon started (pid {pid})");
                    }
                    Ok(0)
                }
                Ok(tether_daemon::Started::AlreadyRunning) => Ok(0),
                Err(e) => Err(CliError::new(ErrorKind::Connection, e.to_string())),
            }
        }
        Action::Stop => stop(&paths),
        Action::Restart => restart(&paths),
        Action::Status { json } => status(&paths, json),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn stop(paths: &Paths) -> CliResult {
    if !is_running(paths) {
        outln!("tether daemon is not running");
        return Ok(0);
    }
    let pid = tether_daemon::read_pid(paths);
    runtime()?.block_on(async {
        let client = Client::connect(paths).await?;
        client.stop().await?;
        Ok::<_, CliError>(())
    })?;
    // Wait until the process is really gone, so a following start never races it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(pid) = pid {
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
            && !is_zombie(pid);
        if !alive || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    outln!("tether daemon stopped");
    Ok(0)
}

/// `daemon restart` (see `tether_client::upgrade`): the CLI after an upgrade, or a user who
/// changed a setting the daemon reads at start, gets a daemon of this binary without closing
/// a session, as `daemon stop` would close the idle ones.
fn restart(paths: &Paths) -> CliResult {
    if paths.shared && !nix::unistd::getuid().is_root() {
        return Err(CliError::new(
            ErrorKind::Permission,
            "only root restarts the system daemon",
        ));
    }
    let (retired, st) = runtime()?.block_on(async {
        let (retired, mut client) = Client::restart_daemon(paths).await?;
        Ok::<_, CliError>((retired, client.status().await?))
    })?;
    match retired {
        Some(old) => outln!(
            "tether daemon restarted: pid {old} exited, pid {} (tether {}) adopted {} session(s)",
            st.pid,
            st.version,
            st.sessions
        ),
        None => outln!("tether daemon was not running; started pid {}", st.pid),
    }
    Ok(0)
}

/// Says on stderr, in one line, that this call replaced a daemon of an earlier release (the
/// automatic half of `daemon restart`, in `Client::connect_or_start`).
pub fn announce_replacements() {
    tether_client::upgrade::on_replaced(|r| {
        errln!(
            "tether: replaced the running daemon (protocol {}, tether {}) by this release's; \
             its sessions were kept",
            r.protocol,
            r.version
        )
    });
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn status(paths: &Paths, json: bool) -> CliResult {
    if !is_running(paths) {
        outln!(
            "tether daemon is not running (home {})",
            paths.home.display()
        );
        return Ok(ErrorKind::NotFound.exit_code());
    }
    let st = runtime()?.block_on(async {
        let mut client = Client::connect(paths).await?;
        Ok::<_, CliError>(client.status().await?)
    })?;
    if json {
        outln!(
            "{}",
            serde_json::to_string(&st).map_err(std::io::Error::other)?
        );
        return Ok(0);
    }
    outln!(
        "tether daemon running: pid {}, version {}, home {}, {} session(s)",
        st.pid,
        st.version,
        st.home,
        st.sessions
    );
    for l in &st.links {
        // A native link is the daemon's own connection: no ssh process (pid 0).
        let by = match l.pid {
            0 => "native ssh in the daemon".to_string(),
            pid => format!("ssh pid {pid}"),
        };
        outln!(
            "  connected to {}: {by}, tether {}, {} channel(s) open",
            l.computer,
            l.version,
            l.channels
        );
    }
    Ok(0)
}

/// `tether __host`: reads the session's spec from stdin (one JSON line) and serves it.
pub fn run_host() -> CliResult {
    let paths = Paths::from_env()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let spec: tether_engine::HostSpec = serde_json::from_str(&line)
        .map_err(|e| CliError::usage(format!("bad session host spec: {e}")))?;
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
    }
    super::hostlog::init(&paths.hosts_dir(), &spec.instance_id);
    if let Err(e) = tether_engine::run_host(paths, spec) {
        // Until it says `ready`, the host's stdout is its daemon's pipe: the reason goes there,
        // on one line, so the user learns why their session did not start.
        let kind = if e.is_permission() {
            "permission"
        } else {
            "internal"
        };
        let line = e.to_string().replace('\n', " ");
        tracing::error!("{line}");
        outln!("failed {kind} {line}");
        return Err(CliError::new(ErrorKind::Internal, line));
    }
    Ok(0)
}
