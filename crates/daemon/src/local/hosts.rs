//! Starting session hosts and talking to them.

use std::path::PathBuf;
use std::time::Duration;
use tether_engine::{HostMeta, HostSpec};
use tether_proto::host::HostRequest;
use tether_proto::{ErrorInfo, ErrorKind, Request, Response, SessionInfo};
use tether_transport::paths::Paths;
use tether_transport::{FrameReader, FrameWriter};
use tokio::io::AsyncBufReadExt;
use tokio::net::UnixStream;

/// How long a new host may take to bind its socket.
const HOST_START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a host may take to answer a status question before we call it unresponsive.
const HOST_INFO_TIMEOUT: Duration = Duration::from_secs(3);

/// The program to run as a session host: ourselves (`tether __host`), by the path we were
/// started from. It is resolved once, at start-up: after an upgrade replaces the binary, Linux
/// reports our own executable as "(deleted)", while the original path names the new one.
pub fn host_program() -> PathBuf {
    static PROGRAM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PROGRAM
        .get_or_init(|| {
            tether_settings::get()
                .host_exe
                .clone()
                .or_else(|| std::env::current_exe().ok())
                .unwrap_or_else(|| PathBuf::from("tether"))
        })
        .clone()
}

/// Starts a host for `spec` and waits until it serves. The host runs in its own session
/// (setsid), so neither a signal to the daemon's process group nor the daemon's death reaches it.
pub async fn spawn_host(paths: &Paths, spec: &HostSpec) -> Result<HostMeta, ErrorInfo> {
    let fail = |e: String| {
        ErrorInfo::new(
            ErrorKind::Internal,
            format!("cannot start session {}: {e}", spec.name),
        )
    };
    let mut cmd = tokio::process::Command::new(host_program());
    cmd.arg("__host")
        .env(tether_settings::vars::HOME, &paths.home)
        .env(
            tether_settings::vars::SHARED_AREA,
            if paths.shared { "1" } else { "0" },
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    // SAFETY: setsid and setrlimit are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            crate::limits::restore_open_files();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| fail(e.to_string()))?;
    let line = serde_json::to_string(spec).map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| fail(e.to_string()))?;
    }
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| fail("no stdout".into()))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(HOST_START_TIMEOUT, lines.next_line()).await;
    let started = matches!(&ready, Ok(Ok(Some(l))) if l.starts_with("ready "));
    let meta = started.then(|| HostMeta::load(&paths.host_meta(&spec.instance_id)));
    if !matches!(meta, Some(Ok(_))) {
        // Not started, or started without a record nobody can find it by: a host that is
        // nobody's ends here (SIGTERM: it stops its shell on the way out).
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    // Reap the host whenever it ends, so it never lingers as a zombie of a live daemon.
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    match ready {
        Ok(Ok(Some(l))) if l.starts_with("ready ") => {}
        Ok(Ok(Some(l))) if l.starts_with("failed ") => {
            let (kind, why) = l["failed ".len()..].split_once(' ').unwrap_or(("", ""));
            let why: String = why.chars().filter(|c| !c.is_control()).take(1000).collect();
            return Err(match kind {
                "permission" => ErrorInfo::new(
                    ErrorKind::Permission,
                    format!("session {}: {why}", spec.name),
                ),
                _ => fail(why),
            });
        }
        Ok(_) => return Err(fail("the session host exited during start-up".into())),
        Err(_) => return Err(fail("the session host did not start in time".into())),
    }
    match meta {
        Some(m) => m.map_err(|e| fail(e.to_string())),
        None => Err(fail("the session host did not start".into())),
    }
}

/// A connection to one host after the version handshake.
pub struct HostConn {
    pub reader: FrameReader<tokio::net::unix::OwnedReadHalf>,
    pub writer: FrameWriter<tokio::net::unix::OwnedWriteHalf>,
    /// The host protocol both sides speak, once the host has answered
    /// ([`tether_proto::host::agreed`]); until then the oldest this daemon speaks.
    pub protocol: u32,
}

/// Connects to a host and sends `Hello` (the reply is left for the caller to read, so the first
/// request can travel in the same write).
pub async fn connect(paths: &Paths, instance_id: &str) -> std::io::Result<HostConn> {
    let stream = UnixStream::connect(paths.host_socket(instance_id)).await?;
    let (r, w) = stream.into_split();
    let mut writer = FrameWriter::new(w);
    writer
        .feed(&Request::Hello {
            version: tether_proto::host::OLDEST_HOST_PROTOCOL,
            agent: "daemon".into(),
            client: None,
        })
        .await
        .map_err(std::io::Error::other)?;
    Ok(HostConn {
        reader: FrameReader::new(r),
        writer,
        protocol: tether_proto::host::OLDEST_HOST_PROTOCOL,
    })
}

impl HostConn {
    /// Reads the host's `Hello` reply.
    pub async fn expect_hello(&mut self) -> Result<(), ErrorInfo> {
        match self.reader.read::<Response>().await {
            Ok(Some(Response::Hello { version, .. })) => {
                self.protocol = tether_proto::host::agreed(version);
                Ok(())
            }
            Ok(Some(Response::Error(e))) => Err(e),
            _ => Err(ErrorInfo::new(
                ErrorKind::Internal,
                "session host did not complete the handshake",
            )),
        }
    }

    async fn call(&mut self, req: HostRequest) -> Result<Response, ErrorInfo> {
        let broken = |e: String| ErrorInfo::new(ErrorKind::Internal, e);
        self.writer
            .send(&Request::from(req))
            .await
            .map_err(|e| broken(e.to_string()))?;
        self.expect_hello().await?;
        match self.reader.read::<Response>().await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(broken("session host closed the connection".into())),
            Err(e) => Err(broken(e.to_string())),
        }
    }
}

/// Live information from a host, or `None` if it does not answer (gone or hung).
pub async fn info(paths: &Paths, instance_id: &str) -> Option<SessionInfo> {
    ask(paths, instance_id, HostRequest::Info).await
}

/// Sends a host a request it answers with its session's information (`HostInfo`,
/// `HostDisconnect`, `HostConnect`); `None` if it does not answer.
pub async fn ask(paths: &Paths, instance_id: &str, req: HostRequest) -> Option<SessionInfo> {
    ask_or_refused(paths, instance_id, req).await?.ok()
}

/// As [`ask`], but a host that answers with a refusal (another client holds the session)
/// gives that error: `None` still means no answer.
pub async fn ask_or_refused(
    paths: &Paths,
    instance_id: &str,
    req: HostRequest,
) -> Option<Result<SessionInfo, ErrorInfo>> {
    let fut = async {
        let mut conn = connect(paths, instance_id).await.ok()?;
        match conn.call(req).await.ok()? {
            Response::Sessions(mut v) if v.len() == 1 => v.pop().map(Ok),
            Response::Error(e) => Some(Err(e)),
            _ => None,
        }
    };
    tokio::time::timeout(HOST_INFO_TIMEOUT, fut)
        .await
        .ok()
        .flatten()
}

/// The first host protocol with `HostAside`.
const ASIDE_SINCE: u32 = 10;

/// Passes a `HostAside` to a host that speaks it ([`ASIDE_SINCE`]); an older host, or
/// one that does not answer, is an error (the in-band `Cancel` still reaches it).
pub async fn aside(paths: &Paths, instance_id: &str, req: HostRequest) -> Result<(), ErrorInfo> {
    let unanswered = || ErrorInfo::new(ErrorKind::Internal, "session host did not answer");
    let fut = async {
        let mut conn = connect(paths, instance_id)
            .await
            .map_err(|_| unanswered())?;
        conn.writer.flush().await.map_err(|_| unanswered())?;
        conn.expect_hello().await?;
        if conn.protocol < ASIDE_SINCE {
            return Err(ErrorInfo::new(
                ErrorKind::Usage,
                "the session's host is of a release that takes frames only in band",
            ));
        }
        let req = tether_proto::Request::from(req);
        conn.writer.send(&req).await.map_err(|_| unanswered())?;
        match conn.reader.read::<Response>().await {
            Ok(Some(Response::Ok)) => Ok(()),
            Ok(Some(Response::Error(e))) => Err(e),
            _ => Err(unanswered()),
        }
    };
    tokio::time::timeout(HOST_INFO_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| Err(unanswered()))
}

/// Asks a host to end its shell and exit. A host that is already gone counts as closed.
pub async fn close(paths: &Paths, instance_id: &str) -> Result<(), ErrorInfo> {
    let fut = async {
        let Ok(mut conn) = connect(paths, instance_id).await else {
            return Ok(());
        };
        match conn.call(HostRequest::Close).await {
            Ok(Response::Ok) | Err(_) => Ok(()),
            Ok(Response::Error(e)) => Err(e),
            Ok(_) => Ok(()),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| {
            Err(ErrorInfo::new(
                ErrorKind::Internal,
                "the session host did not close in time",
            ))
        })
}
