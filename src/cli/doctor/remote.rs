//! `tether doctor --computer C`: ssh to C, the tether found there, and C's daemon.
//!
//! Doctor runs ssh itself, with the same command line the daemon's links use (same
//! `--ssh-config`, `--ssh-option`, `TETHER_SSH`, BatchMode), rather than going through the local
//! daemon: a failure then points at ssh or at the far side, not at the daemon in between. One
//! ssh call runs a short `sh` script that looks for tether the way the bootstrap does
//! (`crates/transport/src/link.rs`) and asks it for its version and its daemon's status.

use super::super::error::CliError;
use super::super::remote::SshFlags;
use super::{Check, Level};
use std::time::Duration;
use tether_transport::link::Failure;
use tether_transport::shell_quote;
use tether_transport::ssh::DEFAULT_CONNECT_TIMEOUT;

/// Marks the script's answers among whatever the login shell prints.
const MARK: &str = "TETHER-DOCTOR";

/// Run as `sh -c SCRIPT doctor EXE HASH SIZE HOME`. Like the bootstrap script it avoids single
/// quotes and `!`, and it uses the bootstrap's own probes
/// ([`tether_transport::link::PROBES`]): can the tether home be written, with room to spare;
/// and, when tether would be copied there, can the copy be checked, written, run (not
/// `noexec`) and fit. It creates nothing but a probe file it removes at once. Each probe's
/// `TETHER-FAIL` line follows the `TETHER-DOCTOR check NAME` line it belongs to.
const SCRIPT_HEAD: &str = r#"e=$1 h=$2 n=$3
if [ -n "$4" ]; then TETHER_HOME=$4; export TETHER_HOME; fi
echo "TETHER-DOCTOR uname $(uname -s) $(uname -m)"
"#;
const SCRIPT_TAIL: &str = r#"b=
if command -v "$e" >/dev/null 2>&1; then b=$(command -v "$e")
else
  f=${TETHER_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/tether}/bin/tether-$h
  if [ -x "$f" ]; then b=$f; fi
fi
echo "TETHER-DOCTOR check home"
s=${TETHER_HOME:-${XDG_STATE_HOME:-$HOME/.local/state}/tether}
tp "$s" 1048576 look - && echo "TETHER-DOCTOR home $s"
if [ -z "$b" ]; then
  echo "TETHER-DOCTOR exe -"
  echo "TETHER-DOCTOR check copy"
  d=${TETHER_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/tether}/bin
  tk && tp "$d" "$n" look exec && echo "TETHER-DOCTOR copy $d"
  exit 0
fi
echo "TETHER-DOCTOR exe $b"
echo "TETHER-DOCTOR version $("$b" --version 2>&1 | head -n 1)"
s=$("$b" daemon status 2>&1)
r=$?
echo "TETHER-DOCTOR daemon $r $(printf %s "$s" | head -n 1)""#;

fn script() -> String {
    format!(
        "{SCRIPT_HEAD}{}{SCRIPT_TAIL}",
        tether_transport::link::PROBES
    )
}

/// What the far side answered.
#[derive(Debug, Default, PartialEq)]
struct Answer {
    uname: Option<String>,
    exe: Option<String>,
    version: Option<String>,
    daemon: Option<(i32, String)>,
    /// The tether home there, when it can be written and has room.
    home: Option<String>,
    /// Where tether would be copied, when that would work.
    copy: Option<String>,
    /// Problems found by the probes, with the check each belongs to.
    failures: Vec<(String, Failure)>,
}

fn parse(stdout: &str) -> Answer {
    let mut a = Answer::default();
    let mut check = String::new();
    for line in stdout.lines() {
        if let Some(f) = Failure::parse(line.trim_end()) {
            a.failures.push((check.clone(), f));
            continue;
        }
        let Some(rest) = line.strip_prefix(MARK).map(str::trim) else {
            continue;
        };
        let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
        let value = value.trim().to_string();
        match key {
            "uname" => a.uname = Some(value),
            "exe" if value != "-" => a.exe = Some(value),
            "version" => a.version = Some(value),
            "check" => check = value,
            "home" => a.home = Some(value),
            "copy" => a.copy = Some(value),
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
    let rt = super::super::remote::target(computer, flags)?;
    let (_, ssh) = tether_transport::link::settings(&rt).map_err(|e| CliError::usage(e.message))?;
    let own = tether_transport::link::OwnBinary::of_current_exe();
    let (hash, size) = own
        .map(|b| (b.sha256, b.size))
        .unwrap_or_else(|_| ("unknown".into(), 0));
    let words = vec![
        "sh".to_string(),
        "-c".into(),
        shell_quote(&script()),
        "doctor".into(),
        shell_quote(rt.remote_exe.as_deref().unwrap_or("tether")),
        hash,
        size.to_string(),
        shell_quote(rt.remote_home.as_deref().unwrap_or("")),
    ];
    // The very command a link runs: same arguments, same agent (this call's SSH_AUTH_SOCK),
    // BatchMode.
    let (program, mut cmd) =
        tether_transport::link::ssh_command(&rt, &words).map_err(|e| CliError::usage(e.message))?;
    let limit = ssh.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT) + Duration::from_secs(30);
    let run = cmd
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
        if why.contains("Permission denied") || why.contains("Too many authentication failures") {
            let (detail, fix) = auth_failure(computer, &why, rt.ssh_auth_sock.as_deref());
            return Ok(vec![Check::new(name("ssh"), Level::Fail, detail).fix(fix)]);
        }
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

/// An authentication failure, told with what links would have had to offer: this call's
/// agent, as links use it.
fn auth_failure(computer: &str, why: &str, agent: Option<&str>) -> (String, String) {
    let why = why.trim_end_matches('.');
    let agent_state = match agent {
        None => "no ssh agent: SSH_AUTH_SOCK is not set".to_string(),
        Some(a) if std::os::unix::net::UnixStream::connect(a).is_err() => {
            format!("the ssh agent at SSH_AUTH_SOCK={a} does not answer")
        }
        Some(a) => format!("neither the ssh agent at {a} nor the key files hold a key it accepts"),
    };
    (
        format!("authentication failed ({why}); {agent_state}"),
        format!(
            "start ssh-agent and `ssh-add` the key in this shell (links use the agent of the \
             command that opens them), or name a key file for {computer} in ~/.ssh/config"
        ),
    )
}

/// A probe's outcome: `ok` (what the far side said when it passed), else its failure line.
fn probed(computer: &str, check: &str, ok: Option<&String>, a: &Answer, fine: &str) -> Check {
    let name = format!("{computer}: {check}");
    if let Some((_, f)) = a.failures.iter().find(|(c, _)| c == check) {
        let (what, mut fix) = f.explain(computer);
        if check == "home" {
            // The daemon's state needs room and writes, not a copy of tether.
            fix = format!(
                "make room there, or set TETHER_REMOTE_HOME=DIR to a writable directory on {computer}"
            );
        }
        return Check::new(name, Level::Fail, what).fix(fix);
    }
    match ok {
        Some(path) => Check::new(name, Level::Ok, format!("{path}: {fine}")),
        None => Check::new(name, Level::Warn, "no answer from the check"),
    }
}

fn tether_checks(computer: &str, uname: &str, a: &Answer) -> Vec<Check> {
    let name = |what: &str| format!("{computer}: {what}");
    let ours = env!("CARGO_PKG_VERSION");
    let home = probed(
        computer,
        "home",
        a.home.as_ref(),
        a,
        "writable, with room for the daemon's files",
    );
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
        let mut v = vec![c, home];
        if platform {
            v.push(probed(
                computer,
                "copy",
                a.copy.as_ref(),
                a,
                "a copy of tether can be checked, written and run there",
            ));
        }
        v.push(Check::new(
            name("daemon"),
            Level::Skip,
            "no tether there yet",
        ));
        return v;
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
    vec![tether, home, daemon]
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
        let s = script();
        assert!(!s.contains('\'') && !s.contains('!'));
    }

    #[test]
    fn probe_failures_belong_to_their_check() {
        let a = parse(
            "TETHER-DOCTOR uname Linux x86_64\nTETHER-DOCTOR check home\n\
             TETHER-DOCTOR home /h\nTETHER-DOCTOR exe -\nTETHER-DOCTOR check copy\n\
             TETHER-FAIL exec\t/h/bin\tPermission denied\n",
        );
        let c = tether_checks("web1", "Linux x86_64", &a);
        let by = |n: &str| c.iter().find(|c| c.name == format!("web1: {n}")).unwrap();
        assert_eq!(by("home").level, Level::Ok);
        let copy = by("copy");
        assert_eq!(copy.level, Level::Fail);
        assert!(
            copy.detail.contains("/h/bin") && copy.detail.contains("noexec"),
            "{copy:?}"
        );
        assert!(copy.fix.as_deref().unwrap().contains("TETHER_REMOTE_HOME"));
    }

    #[test]
    fn an_auth_failure_says_what_agent_there_was() {
        let (d, _) = auth_failure("h", "u@h: Permission denied (publickey).", None);
        assert!(
            d.contains("authentication failed") && d.contains("SSH_AUTH_SOCK"),
            "{d}"
        );
        let (d, _) = auth_failure("h", "x", Some("/nonexistent/agent.sock"));
        assert!(d.contains("does not answer"), "{d}");
    }

    #[test]
    fn a_missing_tether_on_another_platform_fails() {
        let a = Answer::default();
        let c = tether_checks("h", "Plan9 mips", &a);
        assert_eq!(c[0].level, Level::Fail);
    }
}
