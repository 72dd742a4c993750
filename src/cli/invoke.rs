//! `tether invoke`: run a command in one or more sessions, or in a temporary local session.
//!
//! One target streams byte-exact to our own stdout and stderr and exits with the command's
//! status. Several targets run in parallel (up to `--throttle-limit`), each output line prefixed
//! with the target's label, and the exit status is 0 only if every target exited 0.
//!
//! Sessions and computers are alike here: every target is one invocation through the local
//! daemon, which reaches other computers over its warm ssh connections.

use super::error::{CliError, CliResult};
use super::stream::{Notices, Prefixer, Progress, Waiting, json_line, note, stream_name, write_fd};
use super::{captured_env, connect, current_dir, dur, remote};
use clap::Args;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tether_client::{Client, ClientError, ErrorKind, Event, ExitInfo, InvokeSpec};
use tokio::sync::{Semaphore, watch};

/// SPEC §3.3: a synchronous invoke waits up to 4 minutes for a busy session.
const DEFAULT_WAIT: Duration = Duration::from_secs(240);
/// Largest stdin we buffer to copy to several targets.
const MAX_SHARED_STDIN: usize = 64 * 1024 * 1024;
/// A command that has not started after this long (a busy session, a computer being reached or
/// given a copy of tether) gets a spinner on a terminal.
const WAITING_AFTER: Duration = Duration::from_millis(800);

#[derive(Args, Debug)]
pub struct InvokeArgs {
    /// Sessions by Name or Id (repeat or separate with commas).
    #[arg(short = 's', long = "session", value_delimiter = ',', add = super::completions::sessions())]
    sessions: Vec<String>,
    /// Computers to run on in temporary sessions (separate with commas).
    #[arg(long, value_delimiter = ',')]
    computer: Vec<String>,
    /// Run in the background and print a job id.
    #[arg(long)]
    as_job: bool,
    /// Configuration of the temporary session (without --session).
    #[arg(long, conflicts_with = "sessions")]
    configuration: Option<String>,
    /// How many targets run at once.
    #[arg(long, default_value_t = 32)]
    throttle_limit: usize,
    /// Stop the command after this long (0 = never).
    #[arg(long, value_parser = dur::parse)]
    timeout: Option<Duration>,
    /// How long to wait for a busy session (default 4m; 0 = fail at once).
    #[arg(long, value_parser = dur::parse)]
    wait_timeout: Option<Duration>,
    /// A value for "$1", "$2", … in the script (repeatable); never re-parsed by the shell.
    #[arg(long = "arg", allow_hyphen_values = true)]
    args: Vec<String>,
    /// Run this local script file.
    #[arg(long, conflicts_with = "script")]
    file: Option<PathBuf>,
    /// Do not prefix output lines with the target when there are several.
    #[arg(long)]
    hide_computer_name: bool,
    /// Print JSON lines instead of raw output.
    #[arg(long)]
    json: bool,
    /// The script to run.
    script: Option<String>,
}

/// One place a command runs: a session, or a temporary session on a computer.
struct Target {
    /// How output and errors name it (the session or computer as typed).
    label: String,
    /// The `computer` of `--json` lines.
    computer: String,
    spec: InvokeSpec,
}

pub async fn run(a: InvokeArgs) -> CliResult {
    let script = match (&a.script, &a.file) {
        (Some(s), None) => s.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).map_err(|e| {
            CliError::usage(format!("cannot read script file {}: {e}", f.display()))
        })?,
        _ => return Err(CliError::usage("give a SCRIPT or --file FILE")),
    };
    if !a.computer.is_empty() && !a.sessions.is_empty() {
        return Err(CliError::usage("give --session or --computer, not both"));
    }
    let base = InvokeSpec {
        script,
        args: a.args.clone(),
        stdin: stdin_has_input(),
        // The CLI acknowledges output once written, so if it dies nothing is lost.
        acked: true,
        timeout_ms: a
            .timeout
            .filter(|d| !d.is_zero())
            .map(|d| d.as_millis() as u64),
        wait_timeout_ms: Some(a.wait_timeout.unwrap_or(DEFAULT_WAIT).as_millis() as u64),
        configuration: a.configuration.clone(),
        ..Default::default()
    };
    let temporary_here = |label: &str| Target {
        label: label.to_string(),
        computer: "localhost".into(),
        spec: InvokeSpec {
            env: captured_env(),
            cwd: current_dir(),
            ..base.clone()
        },
    };
    let mut targets = Vec::new();
    let flags = super::ssh_flags();
    for c in a.computer.iter().filter(|c| !c.is_empty()) {
        targets.push(match remote::is_local(c) {
            true => temporary_here(c),
            false => Target {
                label: c.clone(),
                computer: c.clone(),
                spec: InvokeSpec {
                    remote: Some(remote::target(c, &flags)?),
                    ..base.clone()
                },
            },
        });
    }
    for s in a.sessions.iter().filter(|s| !s.is_empty()) {
        targets.push(Target {
            label: s.clone(),
            computer: "localhost".into(),
            spec: InvokeSpec {
                session: s.clone(),
                ..base.clone()
            },
        });
    }
    if targets.is_empty() {
        targets.push(temporary_here("localhost"));
    }
    tracing::info!(
        targets = targets.len(),
        as_job = a.as_job,
        throttle = a.throttle_limit,
        "invoke"
    );
    if !a.as_job && targets.len() == 1 {
        return single(targets.remove(0), a.json).await;
    }
    let client = connect().await?;
    if a.as_job {
        // A job runs without this process: no stdin, and it never waits for a busy session.
        let children = targets
            .into_iter()
            .map(|t| tether_client::JobChild {
                location: t.label,
                spec: InvokeSpec {
                    stdin: false,
                    acked: false,
                    ..t.spec
                },
            })
            .collect();
        let command = a.script.clone().unwrap_or_else(|| {
            a.file
                .as_ref()
                .map(|f| f.display().to_string())
                .unwrap_or_default()
        });
        return super::jobs::start(client, command, children, a.json).await;
    }
    fan_out(client, targets, &a).await
}

/// Reads standard input whole, to copy it to several targets (or over ssh, for now).
fn read_shared_stdin() -> Result<Vec<u8>, CliError> {
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_SHARED_STDIN as u64 + 1)
        .read_to_end(&mut buf)?;
    if buf.len() > MAX_SHARED_STDIN {
        return Err(CliError::usage(
            "standard input over 64 MiB cannot be copied to several targets",
        ));
    }
    Ok(buf)
}

/// Standard input is forwarded unless it is a terminal or /dev/null (which would only add work).
fn stdin_has_input() -> bool {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return false;
    }
    use std::os::unix::fs::MetadataExt;
    let fd0 = std::fs::metadata("/dev/stdin");
    let null = std::fs::metadata("/dev/null");
    match (fd0, null) {
        (Ok(a), Ok(b)) => !(a.dev() == b.dev() && a.ino() == b.ino()),
        _ => true,
    }
}

/// Runs on one target, streaming raw output; returns the command's exit status.
///
/// A local session named by name is tried straight at its host first (no daemon hop, about a
/// tenth of a short call); anything else, or any doubt, goes through the daemon.
async fn single(t: Target, json: bool) -> CliResult {
    let paths = super::daemon_paths()?;
    let Target {
        label,
        computer,
        spec,
    } = t;
    let view = View {
        label,
        computer,
        session: spec.session.clone(),
        json,
    };
    let forward_stdin = spec.stdin;
    let start = async move {
        if !spec.session.is_empty()
            && let Some(started) = Client::invoke_direct(&paths, &spec).await
        {
            return started;
        }
        Client::connect_or_start(&paths)
            .await?
            .into_invocation(spec)
            .await
    };
    stream(start, view, forward_stdin).await
}

/// How one streamed target is named in output and errors.
pub(super) struct View {
    pub label: String,
    pub computer: String,
    pub session: String,
    pub json: bool,
}

/// Streams one invocation (or `receive`) to our stdout and stderr and returns its status.
pub(super) async fn stream(
    start: impl std::future::Future<Output = Result<tether_client::Invocation, ClientError>>,
    view: View,
    forward_stdin: bool,
) -> CliResult {
    let View {
        label,
        computer,
        session,
        json,
    } = view;
    let label = label.as_str();
    // Registered before the session is acquired: Ctrl-C while waiting for a busy session gives
    // up (closing the connection, so the command never starts); once running, it stops the
    // command and a third one gives up waiting for it.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let started = std::time::Instant::now();
    let waiting = Waiting::start(format!("tether: waiting for {label}…"), WAITING_AFTER);
    let mut inv = tokio::select! {
        inv = start => inv.map_err(|e| annotate(e, label))?,
        _ = sigint.recv() => return Ok(130),
    };
    drop(waiting);
    tracing::info!(on = label, elapsed = ?started.elapsed(), "command started");
    if forward_stdin {
        let ctl = inv.control();
        tokio::spawn(async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
            std::thread::spawn(move || {
                let mut stdin = std::io::stdin().lock();
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = stdin.read(&mut buf) {
                    if n == 0 || tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            });
            while let Some(chunk) = rx.recv().await {
                if !ctl.stdin(chunk).await {
                    return;
                }
            }
            ctl.eof().await;
        });
    }
    let ctl = inv.control();
    let mut interrupts = 0;
    let mut notices = Notices::default();
    loop {
        tokio::select! {
            ev = inv.next() => match ev.map_err(|e| annotate(e, label))? {
                Event::Notice(n) => notices.show(&n),
                Event::Output { stream, data } => {
                    notices.clear();
                    if json {
                        json_line(serde_json::json!({"computer": computer, "session": session,
                            "stream": stream_name(stream), "data": String::from_utf8_lossy(&data)}));
                    } else {
                        write_fd(stream, &data);
                    }
                    inv.delivered();
                }
                Event::Exit(exit) => {
                    notices.clear();
                    tracing::info!(on = label, code = exit.code, elapsed = ?started.elapsed(),
                        "command ended");
                    if json {
                        json_line(serde_json::json!({"computer": computer, "session": session,
                            "exit_code": exit.code}));
                    }
                    report_exit(label, &exit);
                    return Ok(exit.code);
                }
            },
            _ = sigint.recv() => {
                interrupts += 1;
                if interrupts > 2 {
                    return Ok(130);
                }
                ctl.cancel().await;
            }
        }
    }
}

fn report_exit(label: &str, exit: &ExitInfo) {
    if exit.timed_out {
        note(&format!("{label}: the command timed out and was stopped"));
    }
    if let Some(reason) = &exit.broken {
        note(&format!("session {label} is now Broken: {reason}"));
    }
}

/// Errors for a target name the session or computer, as SPEC §2 asks.
fn annotate(e: ClientError, label: &str) -> CliError {
    let kind = e.kind();
    let msg = e.to_string();
    if msg.contains(label) {
        CliError::new(kind, msg)
    } else {
        CliError::new(kind, format!("session {label}: {msg}"))
    }
}

/// Runs every target, up to the throttle at once. Ctrl-C is passed on to each running target;
/// a third one gives up waiting.
async fn fan_out(client: Client, targets: Vec<Target>, a: &InvokeArgs) -> CliResult {
    let stdin = if targets[0].spec.stdin {
        Some(Arc::new(read_shared_stdin()?))
    } else {
        None
    };
    let client = Arc::new(client);
    let limit = Arc::new(Semaphore::new(a.throttle_limit.max(1)));
    let progress = Arc::new(Progress::start(targets.len(), !a.json));
    let (cancel_tx, cancel_rx) = watch::channel(0u32);
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, t) in targets.into_iter().enumerate() {
        let (client, limit, stdin) = (client.clone(), limit.clone(), stdin.clone());
        let (progress, cancel) = (progress.clone(), cancel_rx.clone());
        let show = Show {
            json: a.json,
            prefix: if a.hide_computer_name {
                Vec::new()
            } else {
                format!("{}: ", t.label).into_bytes()
            },
        };
        tasks.spawn(async move {
            let _permit = limit.acquire().await;
            let code = one_of_many(&client, t, stdin, show, cancel).await;
            progress.finished(code == 0);
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
                    progress.done();
                    return Ok(130);
                }
                let _ = cancel_tx.send(n);
            }
        }
    }
    progress.done();
    codes.sort_unstable();
    Ok(codes.iter().map(|(_, c)| *c).find(|c| *c != 0).unwrap_or(0))
}

/// How one target of several is shown.
struct Show {
    json: bool,
    prefix: Vec<u8>,
}

async fn one_of_many(
    client: &Client,
    t: Target,
    stdin: Option<Arc<Vec<u8>>>,
    show: Show,
    mut cancel: watch::Receiver<u32>,
) -> i32 {
    let Target {
        label,
        computer,
        spec,
    } = t;
    let session = spec.session.clone();
    let failed = |e: CliError| {
        if show.json {
            json_line(serde_json::json!({"computer": computer, "session": session,
                "error": e.message, "exit_code": e.kind.exit_code()}));
        }
        note(&e.message);
        if e.kind == ErrorKind::Internal {
            1
        } else {
            e.kind.exit_code()
        }
    };
    let mut inv = tokio::select! {
        inv = client.invoke(spec) => match inv {
            Ok(i) => i,
            Err(e) => return failed(annotate(e, &label)),
        },
        // Ctrl-C before the command started: give up on this target.
        _ = cancel.changed() => return 130,
    };
    if let Some(data) = stdin {
        let ctl = inv.control();
        tokio::spawn(async move {
            for chunk in data.chunks(64 * 1024) {
                if !ctl.stdin(chunk.to_vec()).await {
                    return;
                }
            }
            ctl.eof().await;
        });
    }
    let mut px = Prefixer::new(show.prefix.clone());
    let ctl = inv.control();
    loop {
        let ev = tokio::select! {
            ev = inv.next() => ev,
            changed = cancel.changed() => {
                if changed.is_ok() {
                    ctl.cancel().await;
                }
                continue;
            }
        };
        match ev {
            Ok(Event::Notice(n)) => note(&n),
            Ok(Event::Output { stream, data }) => {
                if show.json {
                    json_line(serde_json::json!({"computer": computer, "session": session,
                        "stream": stream_name(stream), "data": String::from_utf8_lossy(&data)}));
                } else {
                    px.push(stream, &data);
                }
                inv.delivered();
            }
            Ok(Event::Exit(exit)) => {
                px.finish();
                tracing::info!(on = %label, code = exit.code, "command ended");
                if show.json {
                    json_line(serde_json::json!({"computer": computer, "session": session,
                        "exit_code": exit.code}));
                }
                report_exit(&label, &exit);
                return exit.code;
            }
            Err(e) => {
                px.finish();
                return failed(annotate(e, &label));
            }
        }
    }
}
