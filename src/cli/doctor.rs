//! `tether doctor`: checks what tether needs on this computer (and, with `--computer`, on
//! another one) and says what to fix, one line per check.
//!
//! Doctor only looks: it starts no daemon, creates no directory and changes no mode, so running
//! it never hides the problem it is asked about. Each check is `ok`, `warn` (works, but
//! something will bite later), `FAIL` (tether will not work) or `skip` (does not apply here);
//! the exit status is 1 when any check failed.

mod remote;

use super::error::CliResult;
use super::install::{Linger, linger};
use clap::Args;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tether_client::{Client, Paths};

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Also check other computers: ssh, their tether and their daemon (repeatable or a,b).
    #[arg(long, value_name = "C", value_delimiter = ',')]
    computer: Vec<String>,
    /// Print one JSON document: {"ok": bool, "checks": [{check, status, detail, fix}]}.
    #[arg(long)]
    json: bool,
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
    Skip,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
            Level::Skip => "skip",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub level: Level,
    pub detail: String,
    /// What to do about it (for warn and FAIL).
    pub fix: Option<String>,
}

impl Check {
    pub fn new(name: impl Into<String>, level: Level, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            level,
            detail: detail.into(),
            fix: None,
        }
    }
    pub fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
}

/// Free space under which the spool's file system gets a warning.
const LOW_SPACE: u64 = 1 << 30;
/// Entries looked at under TETHER_HOME (a home with thousands of sessions is still quick).
const MAX_ENTRIES: usize = 20_000;

pub async fn run(a: DoctorArgs) -> CliResult {
    let computers = super::remote::computers("--computer", &a.computer)?;
    let paths = Paths::from_env()?;
    let mut checks = vec![home_check(&paths)];
    checks.push(permissions_check(&paths));
    checks.push(socket_check(&paths));
    checks.push(daemon_check(&paths).await);
    checks.push(space_check(&paths.home));
    checks.push(log_check(&paths));
    checks.push(linger_check());
    checks.push(settings_check());
    let flags = super::ssh_flags();
    for c in &computers {
        checks.extend(remote::checks(c, &flags).await?);
    }
    let failed = checks.iter().any(|c| c.level == Level::Fail);
    if a.json {
        let list: Vec<serde_json::Value> = checks
            .iter()
            .map(|c| {
                serde_json::json!({
                    "check": c.name,
                    "status": c.level.label().to_ascii_lowercase(),
                    "detail": c.detail,
                    "fix": c.fix,
                })
            })
            .collect();
        outln!("{}", serde_json::json!({ "ok": !failed, "checks": list }));
    } else {
        for c in &checks {
            match &c.fix {
                Some(f) => outln!(
                    "{:<4}  {}: {} (fix: {f})",
                    c.level.label(),
                    c.name,
                    c.detail
                ),
                None => outln!("{:<4}  {}: {}", c.level.label(), c.name, c.detail),
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

fn mode_of(m: &std::fs::Metadata) -> u32 {
    m.mode() & 0o7777
}

fn home_check(paths: &Paths) -> Check {
    let home = &paths.home;
    let name = "home";
    match std::fs::symlink_metadata(home) {
        Err(_) => Check::new(
            name,
            Level::Ok,
            format!(
                "{} does not exist yet (created on first use)",
                home.display()
            ),
        ),
        Ok(m) if !m.is_dir() => Check::new(
            name,
            Level::Fail,
            format!("{} is not a directory", home.display()),
        )
        .fix("move it away, or set TETHER_HOME elsewhere"),
        Ok(m) if m.uid() != nix::unistd::getuid().as_raw() => Check::new(
            name,
            Level::Fail,
            format!("{} belongs to uid {}, not to you", home.display(), m.uid()),
        )
        .fix("set TETHER_HOME to a directory of your own"),
        Ok(m) if mode_of(&m) & 0o077 != 0 => Check::new(
            name,
            Level::Fail,
            format!(
                "{} has mode {:04o}: others can reach your sessions' files",
                home.display(),
                mode_of(&m)
            ),
        )
        .fix(format!("chmod 700 {}", home.display())),
        Ok(_) => Check::new(name, Level::Ok, format!("{} (0700)", home.display())),
    }
}

/// Why `path` (with metadata `m`, under `root`) is not as private as it should be, if it is not.
fn exposure(m: &std::fs::Metadata, in_configurations: bool) -> Option<String> {
    let mode = mode_of(m);
    if m.uid() != nix::unistd::getuid().as_raw() {
        return Some(format!("owned by uid {}", m.uid()));
    }
    if in_configurations {
        // Configurations are not secret, but whoever can change one runs code in your sessions.
        return (mode & 0o022 != 0).then(|| format!("writable by others ({mode:04o})"));
    }
    (mode & 0o077 != 0).then(|| format!("mode {mode:04o}"))
}

/// Every file, directory and socket under TETHER_HOME (and the socket directory when it is
/// elsewhere) must be the user's and closed to group and others (SPEC §3.20).
fn permissions_check(paths: &Paths) -> Check {
    let mut roots = vec![paths.home.clone()];
    if paths.run != paths.home {
        roots.push(paths.run.clone());
    }
    let mut bad: Vec<String> = Vec::new();
    let mut seen = 0usize;
    let configurations = paths.home.join("configurations");
    let mut stack: Vec<PathBuf> = roots.iter().filter(|r| r.is_dir()).cloned().collect();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            bad.push(format!("{} (cannot read it)", dir.display()));
            continue;
        };
        for e in entries.flatten() {
            seen += 1;
            if seen > MAX_ENTRIES {
                break;
            }
            let p = e.path();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if m.file_type().is_symlink() {
                continue;
            }
            if let Some(why) = exposure(&m, p.starts_with(&configurations)) {
                bad.push(format!("{} ({why})", p.display()));
            }
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    let name = "permissions";
    if bad.is_empty() {
        return Check::new(
            name,
            Level::Ok,
            format!("{seen} entries under TETHER_HOME are private (0700 directories, 0600 files)"),
        );
    }
    let shown: Vec<&str> = bad.iter().take(3).map(String::as_str).collect();
    let more = bad.len().saturating_sub(shown.len());
    Check::new(
        name,
        Level::Fail,
        format!(
            "{} open to others: {}{}",
            bad.len(),
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ),
    )
    .fix(format!(
        "chmod -R go-rwx {} (and chown what is not yours)",
        paths.home.display()
    ))
}

fn socket_check(paths: &Paths) -> Check {
    let sock = paths.daemon_socket();
    let name = "socket";
    match std::fs::symlink_metadata(&sock) {
        Err(_) => Check::new(
            name,
            Level::Ok,
            format!("{} absent (no daemon running)", sock.display()),
        ),
        Ok(m) if !m.file_type().is_socket() => Check::new(
            name,
            Level::Fail,
            format!("{} is not a socket", sock.display()),
        )
        .fix(format!("stop tether, then rm {}", sock.display())),
        Ok(m) => {
            let dir = sock.parent().unwrap_or(&sock);
            let dir_mode = std::fs::metadata(dir).map_or(0, |d| mode_of(&d));
            if mode_of(&m) & 0o077 != 0 {
                Check::new(
                    name,
                    Level::Fail,
                    format!("{} has mode {:04o}", sock.display(), mode_of(&m)),
                )
                .fix(format!("chmod 600 {}", sock.display()))
            } else if dir_mode & 0o077 != 0 {
                Check::new(
                    name,
                    Level::Fail,
                    format!("{} has mode {dir_mode:04o}", dir.display()),
                )
                .fix(format!("chmod 700 {}", dir.display()))
            } else {
                Check::new(
                    name,
                    Level::Ok,
                    format!("{} is private (0600 in a 0700 directory)", sock.display()),
                )
            }
        }
    }
}

async fn daemon_check(paths: &Paths) -> Check {
    let name = "daemon";
    let ours = env!("CARGO_PKG_VERSION");
    if std::os::unix::net::UnixStream::connect(paths.daemon_socket()).is_err() {
        return match tether_daemon::read_pid(paths).filter(|p| pid_alive(*p)) {
            Some(pid) => Check::new(
                name,
                Level::Fail,
                format!("pid {pid} is listed in daemon.pid but does not answer on its socket"),
            )
            .fix(format!(
                "look at {}, then `kill {pid}`; the next command starts a new daemon",
                paths.log_file().display()
            )),
            None => Check::new(
                name,
                Level::Ok,
                "not running (any tether command starts it; `tether daemon install` keeps it running)",
            ),
        };
    }
    let ask = async {
        let mut c = Client::connect(paths).await?;
        c.status().await
    };
    match tokio::time::timeout(Duration::from_secs(10), ask).await {
        Err(_) => Check::new(name, Level::Fail, "does not answer within 10s").fix(format!(
            "look at {}; `tether daemon stop`, or kill the pid in daemon.pid",
            paths.log_file().display()
        )),
        Ok(Err(e)) => Check::new(name, Level::Fail, format!("status request failed: {e}"))
            .fix(format!("look at {}", paths.log_file().display())),
        Ok(Ok(st)) if st.version != ours => Check::new(
            name,
            Level::Warn,
            format!(
                "pid {} runs tether {}, but this is tether {ours}",
                st.pid, st.version
            ),
        )
        .fix("`tether daemon stop` (idle sessions close; running ones go on), then any command starts this version"),
        Ok(Ok(st)) => Check::new(
            name,
            Level::Ok,
            format!(
                "running: pid {}, version {}, {} session(s)",
                st.pid, st.version, st.sessions
            ),
        ),
    }
}

fn pid_alive(pid: u32) -> bool {
    i32::try_from(pid)
        .is_ok_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok())
}

/// Kept output spills to files in the session directories under TETHER_HOME.
fn space_check(home: &Path) -> Check {
    let name = "disk";
    // The home may not exist yet: its nearest existing ancestor is on the same file system.
    let at = home
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    match nix::sys::statvfs::statvfs(at) {
        Err(e) => Check::new(
            name,
            Level::Warn,
            format!("cannot stat {}: {e}", at.display()),
        ),
        Ok(s) => {
            // The field types differ between platforms (u32 on some BSDs and macOS).
            #[allow(clippy::useless_conversion)]
            let free = u64::from(s.blocks_available()).saturating_mul(u64::from(s.fragment_size()));
            let text = format!(
                "{} free where output is spooled ({})",
                human(free),
                at.display()
            );
            if free < LOW_SPACE {
                Check::new(name, Level::Warn, text).fix(
                    "free some space: a disconnected command's output is kept there (up to its quota)",
                )
            } else {
                Check::new(name, Level::Ok, text)
            }
        }
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn log_check(paths: &Paths) -> Check {
    let log = paths.log_file();
    let level = tether_settings::get().log.as_deref().unwrap_or("info");
    match std::fs::metadata(&log) {
        Err(_) => Check::new(
            "log",
            Level::Ok,
            format!("{} not written yet", log.display()),
        ),
        Ok(m) => Check::new(
            "log",
            Level::Ok,
            format!(
                "{} ({}; rotated past {}; TETHER_LOG={level})",
                log.display(),
                human(m.len()),
                human(tether_settings::get().log_max_bytes)
            ),
        ),
    }
}

/// `TETHER_*` variables of this call whose values are ignored (docs/CONFIGURATION.md). A daemon
/// reads its own environment when it starts, and logs what it ignores in its log.
fn settings_check() -> Check {
    let name = "settings";
    let warnings = tether_settings::get().warnings();
    if warnings.is_empty() {
        return Check::new(name, Level::Ok, "no TETHER_* value is ignored");
    }
    let list: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    Check::new(name, Level::Warn, list.join("; "))
        .fix("correct or unset them (docs/CONFIGURATION.md lists every variable)")
}

/// On systemd machines with `KillUserProcesses=yes`, logging out kills every process of the
/// user, daemon and sessions included, unless the user lingers.
fn linger_check() -> Check {
    let name = "linger";
    if !Path::new("/run/systemd/system").is_dir() {
        return Check::new(name, Level::Skip, "systemd is not running here");
    }
    if nix::unistd::getuid().is_root() {
        return Check::new(name, Level::Skip, "root is exempt from KillUserProcesses");
    }
    match linger() {
        Linger::Yes => Check::new(name, Level::Ok, "enabled: sessions survive logout"),
        Linger::No(user) => Check::new(
            name,
            Level::Warn,
            "disabled: with KillUserProcesses=yes, logging out ends the daemon and your sessions",
        )
        .fix(format!("loginctl enable-linger {user}")),
        Linger::Unknown(why) => Check::new(name, Level::Skip, why),
    }
}
