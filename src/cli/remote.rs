//! Other computers, reached with the system's ssh and `tether bridge` on the far side.
//!
//! This first step connects straight from the CLI, one ssh per target per call: `get
//! --computer` and `invoke --computer` (temporary sessions, fanned out with a throttle). Warm
//! connections kept by the client daemon, persistent remote sessions and bootstrap are next
//! (issue 3).

use super::error::{CliError, CliResult};
use super::invoke::Prefixer;
use std::sync::Arc;
use std::time::Duration;
use tether_client::{ErrorKind, InvokeSpec, SessionFilter, SessionInfo};
use tether_proto::{PROTOCOL_VERSION, Request, Response};
use tether_transport::ssh::{SshSettings, Target};
use tether_transport::{FrameReader, FrameWriter};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// The user's ssh settings from the environment (`TETHER_SSH`, `TETHER_SSH_CONFIG`) and flags.
pub fn settings(
    config: Option<std::path::PathBuf>,
    options: Vec<String>,
    connect_timeout: Option<Duration>,
) -> Result<SshSettings, CliError> {
    let s = SshSettings {
        program: std::env::var_os("TETHER_SSH").map(Into::into),
        config: config.or_else(|| std::env::var_os("TETHER_SSH_CONFIG").map(Into::into)),
        options,
        connect_timeout,
    };
    s.validate().map_err(|e| CliError::usage(e.to_string()))?;
    Ok(s)
}

/// A protocol connection to one computer's daemon, through ssh.
pub struct Remote {
    pub reader: FrameReader<ChildStdout>,
    pub writer: FrameWriter<ChildStdin>,
    /// Killed when dropped: the ssh process lives exactly as long as this connection.
    child: Child,
}

/// What runs on the far side: `tether bridge`, or `TETHER_REMOTE_EXE` (tests point it at the
/// binary under test), with `TETHER_REMOTE_HOME` as its `TETHER_HOME` when set. Every word is
/// shell-quoted, because ssh hands the command to the remote user's shell.
fn remote_command() -> Vec<String> {
    use tether_engine::shell::quote;
    let exe = std::env::var("TETHER_REMOTE_EXE").unwrap_or_else(|_| "tether".into());
    let mut words = Vec::new();
    if let Ok(home) = std::env::var("TETHER_REMOTE_HOME") {
        words.push("env".to_string());
        words.push(quote(&format!("TETHER_HOME={home}")));
    }
    words.push(quote(&exe));
    words.push("bridge".into());
    words
}

fn unreachable(label: &str, why: impl std::fmt::Display) -> CliError {
    CliError::new(ErrorKind::Connection, format!("computer {label}: {why}"))
}

pub async fn connect(computer: &str, ssh: &SshSettings) -> Result<Remote, CliError> {
    let target = Target::parse(computer).map_err(|e| CliError::usage(e.to_string()))?;
    let (program, args) = ssh.command_line(&target, &remote_command());
    let mut child = tokio::process::Command::new(&program)
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| unreachable(computer, format!("cannot run {}: {e}", program.display())))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(unreachable(computer, "ssh has no stdio"));
    };
    let mut remote = Remote {
        reader: FrameReader::new(stdout),
        writer: FrameWriter::new(stdin),
        child,
    };
    let hello = Request::Hello {
        version: PROTOCOL_VERSION,
        agent: format!("tether/{}", env!("CARGO_PKG_VERSION")),
    };
    let limit = ssh
        .connect_timeout
        .unwrap_or(tether_transport::ssh::DEFAULT_CONNECT_TIMEOUT);
    let answer = tokio::time::timeout(limit, async {
        remote.writer.send(&hello).await.ok()?;
        remote.reader.read::<Response>().await.ok().flatten()
    })
    .await;
    match answer {
        Ok(Some(Response::Hello { .. })) => Ok(remote),
        Ok(Some(Response::Error(e))) => Err(CliError::new(
            e.kind,
            format!("computer {computer}: {}", e.message),
        )),
        Ok(_) => Err(unreachable(computer, remote.ssh_error().await)),
        Err(_) => Err(unreachable(
            computer,
            format!("no answer within {}s (--connect-timeout)", limit.as_secs()),
        )),
    }
}

impl Remote {
    /// The last line ssh printed, once it has exited (why the connection failed).
    async fn ssh_error(&mut self) -> String {
        use tokio::io::AsyncReadExt;
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), e.read_to_string(&mut err)).await;
        }
        let status = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        match (last.is_empty(), status) {
            (false, _) => last.to_string(),
            (true, Ok(Ok(st))) => format!("ssh exited with {st}"),
            _ => "the connection closed during the handshake".into(),
        }
    }
}

/// `get --computer C…`: each computer's daemon lists this user's sessions there.
pub async fn get(
    computers: &[String],
    ssh: &SshSettings,
    filter: SessionFilter,
) -> Result<Vec<SessionInfo>, CliError> {
    let mut all = Vec::new();
    for c in computers {
        let mut r = connect(c, ssh).await?;
        r.writer
            .send(&Request::Get(filter.clone()))
            .await
            .map_err(|e| unreachable(c, e))?;
        match r
            .reader
            .read::<Response>()
            .await
            .map_err(|e| unreachable(c, e))?
        {
            Some(Response::Sessions(v)) => all.extend(v.into_iter().map(|mut s| {
                s.computer_name = c.clone();
                s.computer_type = "remote".into();
                s
            })),
            Some(Response::Error(e)) => {
                return Err(CliError::new(
                    e.kind,
                    format!("computer {c}: {}", e.message),
                ));
            }
            other => return Err(unreachable(c, format!("unexpected reply {other:?}"))),
        }
    }
    Ok(all)
}

/// How `invoke --computer` presents and feeds each target.
#[derive(Clone)]
pub struct InvokeOpts {
    pub throttle: usize,
    pub hide: bool,
    pub json: bool,
    /// Standard input, read once and sent to every target.
    pub stdin: Option<Arc<Vec<u8>>>,
}

/// `invoke --computer A,B,… SCRIPT`: a temporary session on each, in parallel up to the throttle.
/// Ctrl-C is passed on to every target (a third one gives up waiting).
pub async fn invoke(
    computers: Vec<String>,
    ssh: SshSettings,
    spec: InvokeSpec,
    opts: InvokeOpts,
) -> CliResult {
    let several = computers.len() > 1;
    let limit = Arc::new(tokio::sync::Semaphore::new(opts.throttle.max(1)));
    let ssh = Arc::new(ssh);
    let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(0u32);
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, c) in computers.into_iter().enumerate() {
        let (limit, ssh, spec, opts) = (limit.clone(), ssh.clone(), spec.clone(), opts.clone());
        let cancel = cancel_rx.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire().await;
            let code = match one(&c, &ssh, spec, several, &opts, cancel).await {
                Ok(code) => code,
                Err(e) => {
                    if opts.json {
                        json_line(serde_json::json!({"computer": c, "error": e.message,
                            "exit_code": e.kind.exit_code()}));
                    }
                    eprintln!("tether: {}", e.message);
                    e.kind.exit_code()
                }
            };
            (i, code)
        });
    }
    let mut codes = Vec::new();
    loop {
        tokio::select! {
            done = tasks.join_next() => match done {
                Some(Ok(ic)) => codes.push(ic),
                Some(Err(_)) => codes.push((usize::MAX, 1)),
                None => break,
            },
            _ = sigint.recv() => {
                let n = *cancel_tx.borrow() + 1;
                if n > 2 {
                    return Ok(130);
                }
                let _ = cancel_tx.send(n);
            }
        }
    }
    codes.sort_unstable();
    Ok(codes.iter().map(|(_, c)| *c).find(|c| *c != 0).unwrap_or(0))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn json_line(v: serde_json::Value) {
    println!("{v}");
}

async fn one(
    c: &str,
    ssh: &SshSettings,
    mut spec: InvokeSpec,
    several: bool,
    opts: &InvokeOpts,
    mut cancel: tokio::sync::watch::Receiver<u32>,
) -> CliResult {
    let mut r = connect(c, ssh).await?;
    spec.stdin = opts.stdin.is_some();
    r.writer
        .feed(&Request::Invoke(spec))
        .await
        .map_err(|e| unreachable(c, e))?;
    if let Some(data) = &opts.stdin {
        for chunk in data.chunks(64 * 1024) {
            r.writer
                .feed(&Request::Stdin(chunk.to_vec()))
                .await
                .map_err(|e| unreachable(c, e))?;
        }
    }
    r.writer
        .send(&Request::StdinEof)
        .await
        .map_err(|e| unreachable(c, e))?;
    let prefix = if several && !opts.hide {
        format!("{c}: ").into_bytes()
    } else {
        Vec::new()
    };
    let mut px = Prefixer::new(prefix);
    // Ctrl-C goes out through a task of its own: reading a frame must never be interrupted.
    let Remote {
        mut reader,
        mut writer,
        child: _child,
    } = r;
    let canceller = tokio::spawn(async move {
        while cancel.changed().await.is_ok() {
            if writer.send(&Request::Cancel).await.is_err() {
                return;
            }
        }
    });
    let _stop = AbortOnDrop(canceller);
    loop {
        let msg = reader.read::<Response>().await;
        match msg {
            Ok(Some(Response::Started { .. })) => {}
            Ok(Some(Response::Output { stream, data })) => {
                if opts.json {
                    let name = match stream {
                        tether_client::Stream::Stdout => "stdout",
                        tether_client::Stream::Stderr => "stderr",
                    };
                    json_line(
                        serde_json::json!({"computer": c, "session": "", "stream": name,
                        "data": String::from_utf8_lossy(&data)}),
                    );
                } else if several {
                    px.push(stream, &data)
                } else {
                    super::invoke::write_fd(stream, &data)
                }
            }
            Ok(Some(Response::Exit(e))) => {
                px.finish();
                if opts.json {
                    json_line(
                        serde_json::json!({"computer": c, "session": "", "exit_code": e.code}),
                    );
                }
                if e.timed_out {
                    eprintln!("tether: computer {c}: the command timed out and was stopped");
                }
                return Ok(e.code);
            }
            Ok(Some(Response::Error(e))) => {
                return Err(CliError::new(
                    e.kind,
                    format!("computer {c}: {}", e.message),
                ));
            }
            Ok(_) | Err(_) => {
                px.finish();
                return Err(CliError::new(
                    ErrorKind::Lost,
                    format!("computer {c}: connection lost"),
                ));
            }
        }
    }
}
