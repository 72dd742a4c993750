//! Background jobs inside a session (SPEC §3.18, `job start --session N SCRIPT`).
//!
//! The session's shell forks the job (a short invocation starts it), so the job sees the
//! session's variables, functions and directory at that moment, and then runs beside the
//! session's commands without holding the session. Its output goes to files in the session's
//! own directory (`hosts/<id>/jobs/<job>/out`, `err`, then `status`), so it needs no client
//! and survives disconnects; the files go with the session. Reading and stopping are done by
//! the daemon of the session's computer, from those files; a client daemon forwards requests
//! for sessions on other computers (through the [`Afar`](crate::state::Afar) seam).
//!
//! Recording such a job in the client's job table and following its output is the remote
//! role's, as for every job (`remote::jobs`); it asks this module through the
//! [`Here`](crate::state::Here) seam.

use crate::state::Daemon;
use crate::state::registry::Found;
use std::io::{Read, Seek};
use std::path::Path;
use tether_proto::{
    ClientId, ErrorInfo, ErrorKind, InvokeSpec, Request, Response, SessionJob, SessionJobAction,
    SessionJobData,
};

/// Most bytes of each stream one read returns.
const READ_MAX: u64 = 1 << 20;

/// The invocation that forks a job: `$1` is the script, `$2` the job's id. The job's own
/// status is written after everything it wrote, so a reader that sees the status has the
/// whole output. The job's files are made under umask 077 (private, as spool files are: SPEC
/// §3.20), while the job itself runs with the session's own umask. Every command is called
/// through `command`, so functions or aliases the user defined in the session (`echo`,
/// `mkdir`, `umask`…) cannot change what it does.
const FORK: &str = r#"__tj="${__tether_w%/*}/jobs/$2"
__tu=$(\command umask)
\command umask 077
\command mkdir -p "$__tj" || { \command umask "$__tu"; return 1; }
{ ( \command umask "$__tu"; \command eval " $1" ); \command printf '%s\n' "$?" > "$__tj/status"; } > "$__tj/out" 2> "$__tj/err" < /dev/null &
\command printf '%s\n' "$!" > "$__tj/pid"; \command umask "$__tu"; \command unset __tj __tu"#;

/// Serves a session-job request for `client` (the job is started in its name, so a session
/// another client holds is refused as for `invoke`).
pub async fn handle(
    daemon: &Daemon,
    req: SessionJob,
    client: &ClientId,
) -> Result<Response, ErrorInfo> {
    if !tether_proto::is_instance_id(&req.job) {
        return Err(ErrorInfo::new(
            ErrorKind::Usage,
            "a session job id is a UUID",
        ));
    }
    let found = {
        let reg = daemon.registry.lock().await;
        match reg.resolve(&req.session)? {
            Found::Local(m) => Ok((m.info.clone(), m.shell_pid)),
            Found::Remote(h) => Err((h.target.clone(), h.info.instance_id.clone())),
        }
    };
    let (info, shell_pid) = match found {
        Ok(local) => local,
        Err((rt, iid)) => {
            let far = SessionJob {
                session: iid,
                ..req
            };
            // Over the link this client names itself.
            return daemon
                .afar
                .call(daemon, &rt, Request::SessionJob(far))
                .await;
        }
    };
    let dir = daemon
        .paths
        .host_fifo_dir(&info.instance_id)
        .join("jobs")
        .join(&req.job);
    match req.action {
        SessionJobAction::Start { script } => {
            let spec = InvokeSpec {
                session: info.instance_id.clone(),
                script: FORK.into(),
                args: vec![script, req.job.clone()],
                wait_timeout_ms: Some(240_000),
                client: Some(client.clone()),
                ..Default::default()
            };
            let (code, stderr) = run_on_host(daemon, &info.instance_id, spec).await?;
            if code != 0 || !is_real_dir(&dir) {
                return Err(ErrorInfo::new(
                    ErrorKind::Internal,
                    format!(
                        "session {}: the job did not start: {}",
                        info.name,
                        String::from_utf8_lossy(&stderr).trim()
                    ),
                ));
            }
            Ok(Response::Ok)
        }
        SessionJobAction::Read { out_from, err_from } => {
            if !is_real_dir(&dir) {
                return Err(ErrorInfo::new(
                    ErrorKind::NotFound,
                    format!(
                        "session {}: no job {} (the session may have closed)",
                        info.name, req.job
                    ),
                ));
            }
            // The status first: if the job had ended, everything it wrote is in the files.
            let exit = read_from(&dir, "status", 0)
                .ok()
                .and_then(|s| String::from_utf8(s).ok())
                .and_then(|s| s.trim().parse().ok());
            let io = |e: std::io::Error| {
                ErrorInfo::new(ErrorKind::Internal, format!("session {}: {e}", info.name))
            };
            let out = read_from(&dir, "out", out_from).map_err(io)?;
            let err = read_from(&dir, "err", err_from).map_err(io)?;
            let whole = out.len() < READ_MAX as usize && err.len() < READ_MAX as usize;
            Ok(Response::SessionJobData(SessionJobData {
                out,
                err,
                exit: exit.filter(|_| whole),
            }))
        }
        SessionJobAction::Stop => {
            stop(&dir, shell_pid);
            Ok(Response::Ok)
        }
    }
}

/// Runs a short invocation on the session's host directly (in `spec.client`'s name); returns
/// its status and stderr.
async fn run_on_host(
    daemon: &Daemon,
    iid: &str,
    spec: InvokeSpec,
) -> Result<(i32, Vec<u8>), ErrorInfo> {
    let lost = |e: String| ErrorInfo::new(ErrorKind::NotFound, format!("session {iid}: {e}"));
    let mut conn = super::hosts::connect(&daemon.paths, iid)
        .await
        .map_err(|e| lost(e.to_string()))?;
    conn.writer
        .send(&Request::Invoke(spec))
        .await
        .map_err(|e| lost(e.to_string()))?;
    conn.expect_hello().await?;
    let mut stderr = Vec::new();
    loop {
        match conn.reader.read::<Response>().await {
            Ok(Some(Response::Output {
                stream: tether_proto::Stream::Stderr,
                data,
            })) => stderr.extend_from_slice(&data),
            Ok(Some(Response::Exit(e))) => return Ok((e.code, stderr)),
            Ok(Some(Response::Error(e))) => return Err(e),
            Ok(Some(_)) => {}
            Ok(None) => return Err(lost("the host closed the connection".into())),
            Err(e) => return Err(lost(e.to_string())),
        }
    }
}

fn is_real_dir(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir())
}

/// Reads file `name` of a job's directory from offset `from`. The directory and its files are
/// the session user's to change, while the daemon reading them may be root (system mode): so
/// no symbolic link is followed, and only a regular file owned by the directory's owner is
/// read. A missing file reads as empty (the job has not written it yet).
fn read_from(dir: &Path, name: &str, from: u64) -> std::io::Result<Vec<u8>> {
    use nix::fcntl::OFlag;
    use nix::sys::stat::{Mode, SFlag, fstat};
    let refused = || std::io::Error::other(format!("{name} is not a file of the job"));
    let no_follow = OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
    let d = nix::fcntl::open(dir, no_follow | OFlag::O_DIRECTORY, Mode::empty())
        .map_err(std::io::Error::from)?;
    let owner = fstat(&d).map_err(std::io::Error::from)?.st_uid;
    let fd = match nix::fcntl::openat(&d, name, no_follow | OFlag::O_NONBLOCK, Mode::empty()) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let st = fstat(&fd).map_err(std::io::Error::from)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG || st.st_uid != owner
    {
        return Err(refused());
    }
    let mut f = std::fs::File::from(fd);
    f.seek(std::io::SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    f.take(READ_MAX).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Ends the job's process group, if its recorded pid is still a process of this session
/// (a pid can be reused once the job is gone).
fn stop(dir: &Path, shell_pid: u32) {
    let Some(pid) = read_from(dir, "pid", 0)
        .ok()
        .and_then(|s| String::from_utf8(s).ok())
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|p| *p > 1)
    else {
        return;
    };
    if !in_session(pid, shell_pid) {
        return;
    }
    let pg = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGTERM);
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        if in_session(pid, shell_pid) {
            let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGKILL);
        }
    });
}

/// Whether `pid` is a live process of the session whose shell is `shell_pid`.
fn in_session(pid: i32, shell_pid: u32) -> bool {
    match nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid))) {
        Ok(sid) => sid.as_raw() == shell_pid as i32,
        Err(_) => false,
    }
}
