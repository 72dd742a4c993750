//! One ssh connection to another computer, carrying a [`Mux`].
//!
//! The far side runs a short POSIX `sh` script (the user's login shell only has to run `sh -c`):
//! it execs `tether bridge` if the command is on `PATH`, else a copy of this very binary kept in
//! the user's data directory under its SHA-256, else it asks for one. The client then sends its
//! own executable over the same ssh channel; the script writes it to a temporary name, checks the
//! hash, renames it into place (atomic) and execs it. Later connections reuse it.
//!
//! The bridge announces itself with one line, `TETHER-MUX <mux> <protocol> <version>`. Lines
//! before it (a chatty `.bashrc`) are skipped; different protocol numbers are refused with an
//! error naming both versions.

pub use crate::farside::{FAIL, Failure, PROBES};
use crate::farside::{SCRIPT, err};
use crate::mux::Mux;
use crate::shell_quote;
use crate::ssh::{DEFAULT_CONNECT_TIMEOUT, SshSettings, Target};
use std::path::PathBuf;
use std::time::Duration;
use tether_proto::{ErrorInfo, ErrorKind, PROTOCOL_VERSION, RemoteTarget, Transport};
use tokio::io::BufReader;
use tokio::process::Child;

mod startup;
pub use startup::check_preamble;
pub(crate) use startup::{Ended, STDERR_LINE_MAX, each_line};
use startup::{Stop, check_platform, first_line, send_binary};

/// Version of the link framing itself ([`crate::mux`]).
pub const MUX_VERSION: u32 = 1;
/// The bridge's first line starts with this.
pub const PREAMBLE: &str = "TETHER-MUX";
const NEED_BINARY: &str = "TETHER-NEED-BINARY";
/// Bytes of shell chatter tolerated before the preamble.
const MAX_CHATTER: usize = 64 * 1024;

/// The line `tether bridge` prints before speaking the mux protocol.
pub fn preamble() -> String {
    format!(
        "{PREAMBLE} {MUX_VERSION} {PROTOCOL_VERSION} {}\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// This executable, as offered to computers that lack tether.
#[derive(Debug, Clone)]
pub struct OwnBinary {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

impl OwnBinary {
    /// Hashes the running executable (once per daemon; a few hundred ms for a debug build).
    pub fn of_current_exe() -> std::io::Result<OwnBinary> {
        use sha2::Digest;
        use std::io::Read;
        let path = std::env::current_exe()?;
        let mut f = std::fs::File::open(&path).map_err(crate::at(&path))?;
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(crate::at(&path))?;
            if n == 0 {
                break;
            }
            size += n as u64;
            h.update(&buf[..n]);
        }
        let sha256 = h
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        Ok(OwnBinary { path, sha256, size })
    }
}

/// A live link: the mux, and what carries it (an ssh process, killed when this is dropped, or
/// the native transport's connection, closed when this is dropped).
pub struct Link {
    pub mux: Mux,
    /// The ssh process's pid; 0 for the native transport (no process of its own).
    pub pid: u32,
    /// The far side's tether version.
    pub version: String,
    _carrier: Carrier,
}

/// Held only to be dropped with the link.
enum Carrier {
    Ssh(#[allow(dead_code)] Child),
    Native(#[allow(dead_code)] crate::native::Connection),
}

/// The ssh settings a [`RemoteTarget`] carries, validated.
pub fn settings(rt: &RemoteTarget) -> Result<(Target, SshSettings), ErrorInfo> {
    let target =
        Target::parse(&rt.computer).map_err(|e| ErrorInfo::new(ErrorKind::Usage, e.to_string()))?;
    let s = SshSettings {
        program: rt.ssh_program.as_ref().map(PathBuf::from),
        config: rt.ssh_config.as_ref().map(PathBuf::from),
        options: rt.ssh_options.clone(),
        connect_timeout: rt.connect_timeout_ms.map(Duration::from_millis),
    };
    s.validate()
        .map_err(|e| ErrorInfo::new(ErrorKind::Usage, e.to_string()))?;
    Ok((target, s))
}

/// The ssh command a link runs for `rt` with `remote` words: the same arguments
/// ([`SshSettings::command_line`]) and the same agent for links and `tether doctor`. ssh gets
/// `rt.ssh_auth_sock` as `SSH_AUTH_SOCK` (the agent of the CLI call that asked), never the
/// environment of whoever started the calling process; without one it runs with no agent.
pub fn ssh_command(
    rt: &RemoteTarget,
    remote: &[String],
) -> Result<(PathBuf, tokio::process::Command), ErrorInfo> {
    let (target, ssh) = settings(rt)?;
    let (program, args) = ssh.command_line(&target, remote);
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&args).env_remove("SSH_AUTH_SOCK");
    if let Some(sock) = rt.ssh_auth_sock.as_deref().filter(|s| !s.is_empty()) {
        cmd.env("SSH_AUTH_SOCK", sock);
    }
    Ok((program, cmd))
}

/// The far-side command: `sh -c SCRIPT tether EXE HASH SIZE HOME`, each word quoted for the
/// remote shell (ssh joins them with spaces, as the native transport does).
pub(crate) fn bootstrap_words(rt: &RemoteTarget, own: &OwnBinary) -> Vec<String> {
    let exe = rt.remote_exe.as_deref().unwrap_or("tether");
    vec![
        "sh".to_string(),
        "-c".into(),
        shell_quote(SCRIPT),
        "tether".into(),
        shell_quote(exe),
        own.sha256.clone(),
        own.size.to_string(),
        shell_quote(rt.remote_home.as_deref().unwrap_or("")),
    ]
}

/// Opens the connection (ssh, or the native transport, as `rt.transport` says), bootstraps
/// tether if needed and checks versions.
pub async fn connect(rt: &RemoteTarget, own: &OwnBinary) -> Result<Link, ErrorInfo> {
    match rt.transport {
        Transport::Ssh => connect_ssh(rt, own).await,
        Transport::Native => connect_native(rt, own).await,
    }
}

/// The native transport: the mux over one SSH channel of the daemon's own connection.
async fn connect_native(rt: &RemoteTarget, own: &OwnBinary) -> Result<Link, ErrorInfo> {
    let (_, ssh) = settings(rt)?;
    let limit = ssh.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let command = bootstrap_words(rt, own).join(" ");
    let (mut conn, out, mut input) =
        tokio::time::timeout(limit, crate::native::connect(rt, &command))
            .await
            .map_err(|_| {
                err(
                    ErrorKind::Connection,
                    &rt.computer,
                    format!("no answer within {}s (--connect-timeout)", limit.as_secs()),
                )
            })??;
    // Small buffers: a warm link's memory is what a fleet multiplies (BENCHMARKS.md).
    let mut out = BufReader::with_capacity(crate::native::BUFFER, out);
    let version = handshake(rt, own, &mut out, &mut input, &mut conn, limit, |e| e).await?;
    let (mux, _) = Mux::start_sized(unbuffered(out), input, crate::native::BUFFER);
    Ok(Link {
        mux,
        pid: 0,
        version,
        _carrier: Carrier::Native(conn),
    })
}

/// Reads the far side's first line, sends this binary when it asks for one, and checks the
/// preamble: the same for every transport. `hint` adds to an error that ends the first try.
async fn handshake<R, W>(
    rt: &RemoteTarget,
    own: &OwnBinary,
    out: &mut BufReader<R>,
    input: &mut W,
    far: &mut dyn Ended,
    limit: Duration,
    hint: impl FnOnce(ErrorInfo) -> ErrorInfo,
) -> Result<String, ErrorInfo>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let c = rt.computer.as_str();
    let mut first = first_line(c, out, far, limit)
        .await
        .map_err(|s| hint(s.error(c)))?;
    if first.starts_with(NEED_BINARY) {
        check_platform(c, &first)?;
        if let Err(e) = send_binary(c, own, input).await {
            // The far side stopped reading: it says why on its next line, if it can.
            let grace = Duration::from_secs(5);
            return Err(match first_line(c, out, far, grace).await {
                Err(Stop::Failed(f)) => f.error(c),
                _ => e,
            });
        }
        first = first_line(c, out, far, limit)
            .await
            .map_err(|s| s.error(c))?;
    }
    check_preamble(c, &first)
}

/// The ssh transport: one `ssh` process per computer, the mux over its stdin and stdout.
async fn connect_ssh(rt: &RemoteTarget, own: &OwnBinary) -> Result<Link, ErrorInfo> {
    let c = rt.computer.as_str();
    let (_, ssh) = settings(rt)?;
    let (program, mut cmd) = ssh_command(rt, &bootstrap_words(rt, own))?;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            err(
                ErrorKind::Connection,
                c,
                format!("cannot run {}: {e}", program.display()),
            )
        })?;
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(err(ErrorKind::Connection, c, "ssh has no stdio"));
    };
    crate::widen_pipe(&stdin);
    crate::widen_pipe(&stdout);
    let mut out = BufReader::with_capacity(64 * 1024, stdout);
    let limit = ssh.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let version = handshake(rt, own, &mut out, &mut stdin, &mut child, limit, |e| {
        with_agent_hint(rt, e)
    })
    .await?;
    let pid = child.id().unwrap_or(0);
    // Keep ssh's stderr drained (a full pipe would stop ssh) and log what the far side says.
    if let Some(err) = child.stderr.take() {
        let label = c.to_string();
        tokio::spawn(each_line(err, move |line| {
            tracing::info!("{label}: {line}")
        }));
    }
    let (mux, _) = Mux::start(unbuffered(out), stdin);
    Ok(Link {
        mux,
        pid,
        version,
        _carrier: Carrier::Ssh(child),
    })
}

/// ssh's "Permission denied" says nothing of the agent it had: say which (links use the agent
/// of the command that opened them, not the daemon's).
fn with_agent_hint(rt: &RemoteTarget, mut e: ErrorInfo) -> ErrorInfo {
    if e.message.contains("Permission denied") {
        let agent = match rt.ssh_auth_sock.as_deref() {
            None => "no ssh agent: SSH_AUTH_SOCK is not set".to_string(),
            Some(a) => format!("ssh agent {a}"),
        };
        e.message = format!(
            "{} ({agent}; `tether doctor --computer {}` tells more)",
            e.message.trim_end_matches('.'),
            rt.computer
        );
    }
    e
}

/// The stream under the buffer the preamble was read with, behind whatever that buffer had
/// read past it: the mux reads through a buffer of its own, and two would copy every byte
/// twice.
fn unbuffered<R: tokio::io::AsyncRead>(
    r: BufReader<R>,
) -> tokio::io::Chain<std::io::Cursor<Vec<u8>>, R> {
    use tokio::io::AsyncReadExt;
    std::io::Cursor::new(r.buffer().to_vec()).chain(r.into_inner())
}

#[cfg(test)]
mod tests {
    use super::startup::STDERR_LINE_MAX;
    use super::*;

    #[tokio::test]
    async fn a_far_side_stderr_line_without_end_is_cut_with_a_note() {
        let mut input = vec![b'y'; 1 << 20];
        input.extend_from_slice(b"\nPermission denied\n");
        let mut seen = Vec::new();
        each_line(&input[..], |l| seen.push(l.to_string())).await;
        assert_eq!(
            seen.len(),
            2,
            "{:?}",
            seen.iter().map(|l| l.len()).collect::<Vec<_>>()
        );
        assert!(seen[0].len() < STDERR_LINE_MAX + 64, "{}", seen[0].len());
        assert!(
            seen[0].ends_with("(line cut at 4096 bytes)"),
            "{}",
            &seen[0][4000..]
        );
        assert_eq!(seen[1], "Permission denied");
    }
    use crate::farside::FAIL_FIELD;

    #[test]
    fn preamble_round_trips_and_mismatch_names_both_versions() {
        let p = preamble();
        assert!(check_preamble("h", p.trim_end()).is_ok());
        let e = check_preamble("web1", "TETHER-MUX 1 999 9.9.9").unwrap_err();
        assert!(e.message.contains("web1"), "{}", e.message);
        assert!(e.message.contains("9.9.9"), "{}", e.message);
        assert!(
            e.message.contains(env!("CARGO_PKG_VERSION")),
            "{}",
            e.message
        );
    }

    #[test]
    fn platform_names_from_uname_match_this_build() {
        let os = match std::env::consts::OS {
            "macos" => "Darwin",
            "linux" => "Linux",
            o => o,
        };
        let line = format!("{NEED_BINARY} {os} {}", std::env::consts::ARCH);
        assert!(check_platform("h", &line).is_ok());
        assert!(check_platform("h", &format!("{NEED_BINARY} Plan9 mips")).is_err());
    }

    /// Runs the bootstrap script as ssh would, with `input` as the bytes "sent by the client".
    fn bootstrap(home: &std::path::Path, hash: &str, input: &[u8]) -> std::process::Output {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .args(["-c", SCRIPT, "tether", "tether-absent-for-this-test", hash])
            .arg(input.len().to_string())
            .arg(home)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    #[test]
    fn a_copy_that_fails_its_hash_is_discarded_and_a_good_one_is_installed() {
        use sha2::Digest;
        let home = std::env::temp_dir().join(format!("tether-link-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        // A stand-in "binary": a script that says it is the bridge.
        let good = b"#!/bin/sh\necho bridged \"$1\"\n".to_vec();
        let hash: String = sha2::Sha256::digest(&good)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut bad = good.clone();
        bad[12] ^= 1;
        let out = bootstrap(&home, &hash, &bad);
        assert!(!out.status.success());
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(said.starts_with(NEED_BINARY), "{said}");
        let fail = said
            .lines()
            .find_map(Failure::parse)
            .expect("a TETHER-FAIL line");
        assert_eq!(fail.kind, "corrupt", "{said}");
        assert!(fail.error("h").message.contains("did not arrive intact"));
        let bin = home.join("bin");
        assert_eq!(
            std::fs::read_dir(&bin).unwrap().count(),
            0,
            "damaged copy kept"
        );

        let out = bootstrap(&home, &hash, &good);
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).ends_with("bridged bridge\n"));
        let installed = bin.join(format!("tether-{hash}"));
        assert_eq!(std::fs::read(&installed).unwrap(), good);
        // Next time it is used as it is: nothing is read from the client.
        let out = bootstrap(&home, &hash, b"");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "bridged bridge\n");
        let _ = std::fs::remove_dir_all(&home);
    }

    #[test]
    fn the_script_survives_single_quoting() {
        assert!(!SCRIPT.contains('\''));
        assert!(!SCRIPT.contains('!'));
    }

    /// The checks made before any byte is sent, with `PATH` and the directory as given.
    fn probe(dir: &std::path::Path, path: &str, need: u64) -> String {
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "{PROBES}tk && tp \"$1\" \"$2\" make exec && echo fine"
            ))
            .arg("probe")
            .arg(dir)
            .arg(need.to_string())
            .env("PATH", path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn the_probes_name_what_is_missing_and_pass_otherwise() {
        let dir = std::env::temp_dir().join(format!("tether-probe-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = std::env::var("PATH").unwrap_or_default();
        assert_eq!(probe(&dir.join("bin"), &path, 10), "fine\n");
        assert_eq!(
            std::fs::read_dir(dir.join("bin")).unwrap().count(),
            0,
            "probe left behind"
        );
        // No room for an exabyte.
        let f = Failure::parse(probe(&dir.join("bin"), &path, 1 << 60).trim_end()).unwrap();
        assert_eq!(f.kind, "space");
        assert!(f.error("h").message.contains("not enough space"), "{f:?}");
        // An empty PATH: no hash tool (the shell's builtins still work).
        let f = Failure::parse(probe(&dir.join("bin"), "/nonexistent", 10).trim_end()).unwrap();
        assert_eq!((f.kind.as_str(), f.path.as_str()), ("hash", "/nonexistent"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn failure_lines_are_cleaned_and_explained_in_one_line() {
        let f = Failure::parse("TETHER-FAIL write\t/x/tether/bin\tRead-only file system").unwrap();
        let e = f.error("web1");
        assert_eq!(e.kind, ErrorKind::Connection);
        assert!(
            e.message.starts_with(
                "computer web1: cannot write /x/tether/bin (read-only file system); set TETHER_REMOTE_HOME="
            ),
            "{}",
            e.message
        );
        let f = Failure::parse(&format!(
            "TETHER-FAIL exec\t{}\u{1b}[2J\tx",
            "a".repeat(5000)
        ))
        .unwrap();
        assert!(f.path.chars().count() <= FAIL_FIELD + 1 && !f.path.contains('\u{1b}'));
        assert!(!f.error("h").message.contains('\n'));
        assert_eq!(Failure::parse("TETHER-FAILED"), None);
        let line = Failure::line("daemon", "/h\tx", "No space left on device");
        assert_eq!(Failure::parse(line.trim_end()).unwrap().path, "/h x");
    }
}
