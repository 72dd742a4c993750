//! `tether daemon install` (a systemd unit for the daemon) and `tether daemon start
//! --foreground` (the daemon as that unit runs it).
//!
//! The unit templates live in `packaging/systemd/`, where the Debian package takes them too;
//! they are compiled in so an installed binary can write its own unit. `@TETHER@` becomes the
//! absolute path of this binary and `@ENVIRONMENT@` the `Environment=` lines that make the
//! service use the same `TETHER_HOME` and `TETHER_LOG` as the shell that installed it (a
//! service that used another home would be a second, separate daemon).

use super::error::{CliError, CliResult};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::Command;
use tether_client::{ErrorKind, Paths};
use tether_settings::vars;

/// The per-user unit (`systemctl --user`).
pub const USER_UNIT: &str = include_str!("../../packaging/systemd/tether.service");
/// The system unit: a root daemon serving every user.
pub const SYSTEM_UNIT: &str = include_str!("../../packaging/systemd/tether-system.service");

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// Write the unit here instead of ~/.config/systemd/user (or /etc/systemd/system).
    #[arg(long, value_name = "DIR")]
    unit_dir: Option<PathBuf>,
    /// Only write the unit: no daemon-reload, no enable --now.
    #[arg(long)]
    no_enable: bool,
}

/// `tether daemon start --foreground`: the daemon in this process, until SIGTERM or `daemon
/// stop` (systemd `Type=simple`).
pub fn foreground(paths: &Paths) -> CliResult {
    tether_daemon::run_foreground(paths)
        .map_err(|e| CliError::new(ErrorKind::Internal, e.to_string()))?;
    Ok(0)
}

pub fn run(a: InstallArgs) -> CliResult {
    let system = super::system_mode();
    let (template, name) = if system {
        (SYSTEM_UNIT, "tether-system.service")
    } else {
        (USER_UNIT, "tether.service")
    };
    let exe = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .map_err(|e| CliError::new(ErrorKind::Internal, format!("cannot find this tether: {e}")))?;
    let settings = tether_settings::get();
    let mut env = Vec::new();
    if !system {
        // The same home the CLI uses, made absolute: the service starts in another directory.
        if settings.home.is_some() {
            env.push((vars::HOME, Paths::from_env()?.home));
        }
    }
    if let Some(level) = settings.log.as_deref().filter(|l| !l.is_empty()) {
        env.push((vars::LOG, PathBuf::from(level)));
    }
    let dir = match a.unit_dir {
        Some(d) => d,
        None if system => PathBuf::from("/etc/systemd/system"),
        None => user_unit_dir()?,
    };
    std::fs::create_dir_all(&dir).map_err(|e| {
        CliError::new(
            ErrorKind::Permission,
            format!("cannot create {}: {e}", dir.display()),
        )
    })?;
    let unit = dir.join(name);
    std::fs::write(&unit, render(template, &exe, &env)).map_err(|e| {
        CliError::new(
            ErrorKind::Permission,
            format!("cannot write {}: {e}", unit.display()),
        )
    })?;
    outln!("wrote {}", unit.display());
    if a.no_enable {
        return Ok(0);
    }
    let scope: &[&str] = if system { &[] } else { &["--user"] };
    let not_here = |why: String| {
        CliError::new(
            ErrorKind::NotFound,
            format!(
                "{why}: the unit is written but not enabled; run `systemctl {}enable --now {name}` \
                 where systemd runs, or start the daemon with `tether daemon start`",
                if system { "" } else { "--user " }
            ),
        )
    };
    if !program_on_path("systemctl") {
        return Err(not_here("systemctl is not installed".into()));
    }
    if !Path::new("/run/systemd/system").is_dir() {
        return Err(not_here("systemd is not running on this computer".into()));
    }
    systemctl(scope, &["daemon-reload"]).map_err(not_here)?;
    systemctl(scope, &["enable", "--now", name]).map_err(not_here)?;
    outln!("enabled and started {name}");
    if !system && let Linger::No(user) = linger() {
        outln!(
            "note: systemd may end your sessions when you log out; keep them with `loginctl enable-linger {user}`"
        );
    }
    Ok(0)
}

/// The unit text: placeholders filled, an empty `@ENVIRONMENT@` line dropped.
pub fn render(template: &str, exe: &Path, env: &[(&str, PathBuf)]) -> String {
    let env_lines: Vec<String> = env
        .iter()
        .map(|(k, v)| {
            format!(
                "Environment={}",
                systemd_quote(&format!("{k}={}", v.to_string_lossy()))
            )
        })
        .collect();
    let mut out = String::with_capacity(template.len() + 256);
    for line in template.lines() {
        if line.trim() == "@ENVIRONMENT@" {
            for l in &env_lines {
                out.push_str(l);
                out.push('\n');
            }
            continue;
        }
        out.push_str(&line.replace("@TETHER@", &systemd_quote(&exe.to_string_lossy())));
        out.push('\n');
    }
    out
}

/// One word for a unit file: `%` and `$` escaped (systemd expands specifiers and variables),
/// and double quotes around anything with spaces, quotes or backslashes.
fn systemd_quote(s: &str) -> String {
    let s = s.replace('%', "%%").replace('$', "$$");
    if s.chars()
        .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\'))
    {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s
    }
}

/// `$XDG_CONFIG_HOME/systemd/user`, else `~/.config/systemd/user`.
fn user_unit_dir() -> Result<PathBuf, CliError> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("systemd/user"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| CliError::usage("HOME is not set: give --unit-dir"))?;
    Ok(PathBuf::from(home).join(".config/systemd/user"))
}

/// Whether `name` is an executable file in a `PATH` directory.
pub fn program_on_path(name: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            std::fs::metadata(d.join(name)).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
    })
}

/// Runs `systemctl SCOPE… ARGS…`; on failure, its last stderr line.
fn systemctl(scope: &[&str], args: &[&str]) -> Result<(), String> {
    let out = Command::new("systemctl")
        .args(scope)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run systemctl: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Err(format!(
        "systemctl {} failed ({}): {}",
        [scope, args].concat().join(" "),
        out.status,
        last.trim()
    ))
}

/// Whether systemd keeps this user's processes after logout.
#[derive(Debug, PartialEq, Eq)]
pub enum Linger {
    Yes,
    /// Not lingering; holds the user name for the fix.
    No(String),
    /// loginctl is absent or could not answer (no systemd, a container): the reason.
    Unknown(String),
}

/// Asks `loginctl show-user USER -p Linger`.
pub fn linger() -> Linger {
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_default();
    if !program_on_path("loginctl") {
        return Linger::Unknown("loginctl is not installed (no systemd-logind)".into());
    }
    let out = match Command::new("loginctl")
        .args(["show-user", &user, "-p", "Linger"])
        .output()
    {
        Ok(o) => o,
        Err(e) => return Linger::Unknown(format!("cannot run loginctl: {e}")),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim() {
        "Linger=yes" => Linger::Yes,
        "Linger=no" => Linger::No(user),
        _ => {
            let err = String::from_utf8_lossy(&out.stderr);
            let why = err
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no answer");
            Linger::Unknown(format!("loginctl: {}", why.trim()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_one_word_and_escapes_specifiers() {
        assert_eq!(systemd_quote("/usr/bin/tether"), "/usr/bin/tether");
        assert_eq!(
            systemd_quote("/opt/my tools/tether"),
            "\"/opt/my tools/tether\""
        );
        assert_eq!(systemd_quote("/x/100%/$HOME"), "/x/100%%/$$HOME");
        assert_eq!(systemd_quote("a\"b c"), "\"a\\\"b c\"");
    }

    #[test]
    fn render_fills_placeholders_and_drops_an_empty_environment() {
        let u = render(USER_UNIT, Path::new("/opt/t/tether"), &[]);
        assert!(
            u.contains("\nExecStart=/opt/t/tether daemon start --foreground\n"),
            "{u}"
        );
        assert!(!u.contains('@'), "{u}");
        assert!(!u.contains("Environment="), "{u}");
        let u = render(
            SYSTEM_UNIT,
            Path::new("/usr/bin/tether"),
            &[("TETHER_LOG", PathBuf::from("debug"))],
        );
        assert!(u.contains("\nEnvironment=TETHER_LOG=debug\n"), "{u}");
        assert!(u.contains("daemon start --system --foreground"), "{u}");
    }
}
