//! `tether doctor --computer C`: ssh to C, the tether found there, and C's daemon.
//!
//! Doctor runs ssh itself, with the same command line the daemon's links use (same
//! `--ssh-config`, `--ssh-option`, `TETHER_SSH`, BatchMode), rather than going through the local
//! daemon: a failure then points at ssh or at the far side, not at the daemon in between. One
//! ssh call runs a short `sh` script that looks for tether the way the bootstrap does
//! (`crates/transport/src/link.rs`) and asks it for its version and its daemon's status.

use super::doctor::{Check, Level};
use super::error::CliError;
use super::remote::SshFlags;
use std::time::Duration;
use tether_transport::shell_quote;
use tether_transport::ssh::DEFAULT_CONNECT_TIMEOUT;

/// Marks the script's answers among whatever the login shell prints.
const MARK: &str = "TETHER-DOCTOR";

/// Run as `sh -c SCRIPT doctor EXE HASH HOME`. Like the bootstrap script it avoids single
/// quotes and `!`, and it only reads.
const SCRIPT: &str = r#"e=$1 h=$2
if [ -n "$3" ]; then TETHER_HOME=$3; export TETHER_HOME; fi
echo "TETHER-DOCTOR uname $(uname -s) $(uname -m)"
b=
if command -v "$e" >/dev/null 2>&1; then b=$(command -v "$e")
else
  f=${TETHER_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/tether}/bin/tether-$h
  if [ -x "$f" ]; then b=$f; fi
fi
if [ -z "$b" ]; then echo "TETHER-DOCTOR exe -"; exit 0; fi
echo "TETHER-DOCTOR exe $b"
echo "TETHER-DOCTOR version $("$b" --version 2>&1 | head -n 1)"
s=$("$b" daemon status 2>&1)
r=$?
echo "TETHER-DOCTOR daemon $r $(printf %s "$s" | head -n 1)""#;

/// What the far side answered.
#[derive(Debug, Default, PartialEq)]
struct Answer {
    uname: Option<String>,
    exe: Option<String>,
    version: Option<String>,
    daemon: Option<(i32, String)>,
}

fn parse(stdout: &str) -> Answer {
    let mut a = Answer::default();
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix(MARK).map(str::trim) else {
            continue;
        };
        let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
        let value = value.trim().to_string();
        match key {
            "uname" => a.uname = Some(value),
            "exe" if value != "-" => a.exe = Some(value),
            "version" => a.version = Some(value),
            "daemon" => {
                let (code, text) = value.split_once(' ').unwrap_or((&value, ""));
                a.daemon = Some((code.parse().unwrap_or(-1), text.trim().to_string()));
            }
            _ => {}
        }
    }
    a
}

/// The checks for one computer. Errors only for a computer name or option that is refused
/// before anything runs (usage).
pub async fn checks(computer: &str, flags: &SshFlags) -> Result<Vec<Check>, CliError> {
    let rt = super::remote::target(computer, flags)?;
    let (target, ssh) =
        tether_transport::link::settings(&rt).map_err(|e| CliError::usage(e.message))?;
    let hash = tether_transport::link::OwnBinary::of_current_exe()
        .map(|b| b.sha256)
        .unwrap_or_else(|_| "unknown".into());
    let words = vec![
        "sh".to_string(),
        "-c".into(),
        shell_quote(SCRIPT),
        "doctor".into(),
        shell_quote(rt.remote_exe.as_deref().unwrap_or("tether")),
        hash,
        shell_quote(rt.remote_home.as_deref().unwrap_or("")),
    ];
    let (program, args) = ssh.command_line(&target, &words);
    let limit = ssh.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT) + Duration::from_secs(30);
    let run = tokio::process::Command::new(&program)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let name = |what: &str| format!("{computer}: {what}");
    let ssh_fix = format!(
        "check the name, ~/.ssh/config, keys and known_hosts: `{} -o BatchMode=yes {computer} true` must work without a prompt",
        program.display()
    );
    let out = match tokio::time::timeout(limit, run).await {
        Err(_) => {
            return Ok(vec![
                Check::new(
                    name("ssh"),
                    Level::Fail,
                    format!("no answer within {}s", limit.as_secs()),
                )
                .fix(ssh_fix),
            ]);
        }
        Ok(Err(e)) => {
            return Ok(vec![
                Check::new(
                    name("ssh"),
                    Level::Fail,
                    format!("cannot run {}: {e}", program.display()),
                )
                .fix("install openssh-client, or set TETHER_SSH"),
            ]);
        }
        Ok(Ok(o)) => o,
    };
    let answer = parse(&String::from_utf8_lossy(&out.stdout));
    let Some(uname) = answer.uname.clone() else {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().map(str::trim).find(|l| !l.is_empty());
        let why = last.map_or_else(|| format!("ssh exited with {}", out.status), str::to_string);
        return Ok(vec![Check::new(name("ssh"), Level::Fail, why).fix(ssh_fix)]);
    };
    let mut v = vec![Check::new(
        name("ssh"),
        Level::Ok,
        format!("reachable without a prompt ({uname})"),
    )];
    v.extend(tether_checks(computer, &uname, &answer));
    Ok(v)
}

fn tether_checks(computer: &str, uname: &str, a: &Answer) -> Vec<Check> {
    let name = |what: &str| format!("{computer}: {what}");
    let ours = env!("CARGO_PKG_VERSION");
    let Some(exe) = &a.exe else {
        let platform = same_platform(uname);
        let c = if platform {
            Check::new(
                name("tether"),
                Level::Ok,
                "not installed; this tether copies itself there on first use (same OS and architecture)",
            )
        } else {
            Check::new(
                name("tether"),
                Level::Fail,
                format!(
                    "not installed, and this tether ({} {}) cannot run on {uname}",
                    std::env::consts::OS,
                    std::env::consts::ARCH
                ),
            )
            .fix(format!("install tether {ours} on {computer}"))
        };
        return vec![
            c,
            Check::new(name("daemon"), Level::Skip, "no tether there yet"),
        ];
    };
    let version_line = a.version.clone().unwrap_or_default();
    let theirs = version_line.split_whitespace().nth(1).unwrap_or("");
    let tether = if theirs == ours {
        Check::new(name("tether"), Level::Ok, format!("{exe}: {version_line}"))
    } else if theirs.is_empty() {
        Check::new(
            name("tether"),
            Level::Fail,
            format!("{exe} does not run: {version_line}"),
        )
        .fix(format!("reinstall tether {ours} on {computer}"))
    } else {
        Check::new(
            name("tether"),
            Level::Warn,
            format!("{exe}: {version_line}, but this is tether {ours}"),
        )
        .fix(format!("install tether {ours} on {computer}"))
    };
    let daemon = match &a.daemon {
        Some((0, text)) => Check::new(name("daemon"), Level::Ok, text.clone()),
        // `daemon status` says 3 (not found) when no daemon runs: it starts on first use.
        Some((3, _)) => Check::new(
            name("daemon"),
            Level::Ok,
            "not running (starts on first use)",
        ),
        Some((code, text)) => Check::new(
            name("daemon"),
            Level::Fail,
            format!("`tether daemon status` exited {code}: {text}"),
        )
        .fix(format!(
            "run `tether daemon status` on {computer} and look at its daemon.log"
        )),
        None => Check::new(name("daemon"), Level::Fail, "no answer about the daemon"),
    };
    vec![tether, daemon]
}

/// Whether this binary runs where `uname -s` `uname -m` says (as the bootstrap checks).
fn same_platform(uname: &str) -> bool {
    let mut w = uname.split_whitespace();
    let (os, arch) = (w.next().unwrap_or("?"), w.next().unwrap_or("?"));
    let os_ok = match std::env::consts::OS {
        "macos" => os == "Darwin",
        local => os.eq_ignore_ascii_case(local),
    };
    let arch_ok = matches!(
        (std::env::consts::ARCH, arch),
        ("aarch64", "arm64") | ("x86_64", "amd64")
    ) || std::env::consts::ARCH == arch;
    os_ok && arch_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_found_among_shell_chatter() {
        let a = parse(
            "welcome!\nTETHER-DOCTOR uname Linux x86_64\nTETHER-DOCTOR exe /usr/bin/tether\n\
             TETHER-DOCTOR version tether 1.2.3\nmotd\nTETHER-DOCTOR daemon 3 tether daemon is not running\n",
        );
        assert_eq!(a.uname.as_deref(), Some("Linux x86_64"));
        assert_eq!(a.exe.as_deref(), Some("/usr/bin/tether"));
        assert_eq!(a.version.as_deref(), Some("tether 1.2.3"));
        assert_eq!(a.daemon, Some((3, "tether daemon is not running".into())));
        assert_eq!(parse("TETHER-DOCTOR exe -\n").exe, None);
    }

    #[test]
    fn the_script_survives_single_quoting() {
        assert!(!SCRIPT.contains('\'') && !SCRIPT.contains('!'));
    }

    #[test]
    fn a_missing_tether_on_another_platform_fails() {
        let a = Answer::default();
        let c = tether_checks("h", "Plan9 mips", &a);
        assert_eq!(c[0].level, Level::Fail);
    }
}
