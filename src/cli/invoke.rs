//! `tether invoke`: run a command in one or more sessions, or in a temporary local session.
//!
//! One target streams byte-exact to our own stdout and stderr and exits with the command's
//! status. Several targets run in parallel (up to `--throttle-limit`), each output line prefixed
//! with the target's label, and the exit status is 0 only if every target exited 0.

use super::error::{CliError, CliResult};
use super::{captured_env, connect, current_dir, dur};
use clap::Args;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tether_client::{Client, ClientError, ErrorKind, Event, ExitInfo, InvokeSpec, Stream};
use tokio::sync::Semaphore;

/// SPEC §3.3: a synchronous invoke waits up to 4 minutes for a busy session.
const DEFAULT_WAIT: Duration = Duration::from_secs(240);
/// Largest stdin we buffer to copy to several targets.
const MAX_SHARED_STDIN: usize = 64 * 1024 * 1024;

#[derive(Args, Debug)]
pub struct InvokeArgs {
    /// Sessions by Name or Id (repeat or separate with commas).
    #[arg(short = 's', long = "session", value_delimiter = ',')]
    sessions: Vec<String>,
    /// Computers to run on in temporary sessions (separate with commas).
    #[arg(long, value_delimiter = ',')]
    computer: Vec<String>,
    /// Run in the background and print a job id.
    #[arg(long)]
    as_job: bool,
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

pub async fn run(a: InvokeArgs) -> CliResult {
    if a.as_job {
        return Err(CliError::usage(
            "--as-job is not available in this build yet",
        ));
    }
    let script = match (&a.script, &a.file) {
        (Some(s), None) => s.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).map_err(|e| {
            CliError::usage(format!("cannot read script file {}: {e}", f.display()))
        })?,
        _ => return Err(CliError::usage("give a SCRIPT or --file FILE")),
    };
    if !a.computer.is_empty() {
        if !a.sessions.is_empty() {
            return Err(CliError::usage("give --session or --computer, not both"));
        }
        let spec = InvokeSpec {
            script,
            args: a.args.clone(),
            timeout_ms: a
                .timeout
                .filter(|d| !d.is_zero())
                .map(|d| d.as_millis() as u64),
            wait_timeout_ms: Some(DEFAULT_WAIT.as_millis() as u64),
            ..Default::default()
        };
        let ssh = super::ssh_settings()?;
        let opts = super::remote::InvokeOpts {
            throttle: a.throttle_limit,
            hide: a.hide_computer_name,
            json: a.json,
            stdin: if stdin_has_input() {
                Some(Arc::new(read_shared_stdin()?))
            } else {
                None
            },
        };
        return super::remote::invoke(a.computer.clone(), ssh, spec, opts).await;
    }
    let client = connect().await?;
    let base = InvokeSpec {
        session: String::new(),
        script,
        args: a.args.clone(),
        stdin: stdin_has_input(),
        timeout_ms: a
            .timeout
            .filter(|d| !d.is_zero())
            .map(|d| d.as_millis() as u64),
        wait_timeout_ms: Some(a.wait_timeout.unwrap_or(DEFAULT_WAIT).as_millis() as u64),
        env: Vec::new(),
        cwd: None,
    };
    let targets: Vec<String> = a
        .sessions
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect();
    if targets.len() <= 1 {
        let mut spec = base;
        match targets.first() {
            Some(t) => spec.session = t.clone(),
            None => {
                spec.env = captured_env();
                spec.cwd = current_dir();
            }
        }
        let label = targets
            .first()
            .cloned()
            .unwrap_or_else(|| "localhost".into());
        return single(client, spec, &label, a.json).await;
    }
    fan_out(client, base, targets, &a).await
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

/// Writes straight to fd 1/2: output is already chunked, and std's line buffering would only
/// add copies. A closed stdout (e.g. `| head`) is not an error; we keep draining to the exit.
pub(super) fn write_fd(stream: Stream, data: &[u8]) {
    use std::os::fd::FromRawFd;
    let fd = match stream {
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    };
    // SAFETY: fds 1 and 2 stay open for the life of the process; ManuallyDrop never closes them.
    let mut file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    let _ = file.write_all(data);
}

fn json_line(value: serde_json::Value) {
    println!("{value}");
}

/// Runs on one target, streaming raw output; returns the command's exit status.
async fn single(client: Client, spec: InvokeSpec, label: &str, json: bool) -> CliResult {
    let forward_stdin = spec.stdin;
    let session = spec.session.clone();
    // Registered before the session is acquired: Ctrl-C while waiting for a busy session gives
    // up (closing the connection, so the command never starts); once running, it stops the
    // command and a third one gives up waiting for it.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut inv = tokio::select! {
        inv = client.into_invocation(spec) => inv.map_err(|e| annotate(e, label))?,
        _ = sigint.recv() => return Ok(130),
    };
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
    loop {
        tokio::select! {
            ev = inv.next() => match ev.map_err(|e| annotate(e, label))? {
                Event::Output { stream, data } => {
                    if json {
                        json_line(serde_json::json!({"computer": "localhost", "session": session,
                            "stream": stream_name(stream), "data": String::from_utf8_lossy(&data)}));
                    } else {
                        write_fd(stream, &data);
                    }
                }
                Event::Exit(exit) => {
                    if json {
                        json_line(serde_json::json!({"computer": "localhost", "session": session,
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

fn stream_name(s: Stream) -> &'static str {
    match s {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    }
}

fn report_exit(label: &str, exit: &ExitInfo) {
    if exit.timed_out {
        eprintln!("tether: session {label}: the command timed out and was stopped");
    }
    if let Some(reason) = &exit.broken {
        eprintln!("tether: session {label} is now Broken: {reason}");
    }
}

/// Errors for a target name the session, as SPEC §2 asks.
fn annotate(e: ClientError, label: &str) -> CliError {
    let kind = e.kind();
    let msg = e.to_string();
    if msg.contains(label) {
        CliError::new(kind, msg)
    } else {
        CliError::new(kind, format!("session {label}: {msg}"))
    }
}

/// Splits output into lines and prefixes each with the target's label.
pub(super) struct Prefixer {
    prefix: Vec<u8>,
    partial: [Vec<u8>; 2],
}

impl Prefixer {
    pub(super) fn new(prefix: Vec<u8>) -> Prefixer {
        Prefixer {
            prefix,
            partial: [Vec::new(), Vec::new()],
        }
    }

    pub(super) fn push(&mut self, stream: Stream, data: &[u8]) {
        let i = stream as usize;
        self.partial[i].extend_from_slice(data);
        if let Some(last_nl) = self.partial[i].iter().rposition(|b| *b == b'\n') {
            let rest = self.partial[i].split_off(last_nl + 1);
            let lines = std::mem::replace(&mut self.partial[i], rest);
            let mut out = Vec::with_capacity(lines.len() + 32);
            for line in lines.split_inclusive(|b| *b == b'\n') {
                out.extend_from_slice(&self.prefix);
                out.extend_from_slice(line);
            }
            write_fd(stream, &out);
        }
    }

    pub(super) fn finish(&mut self) {
        for (i, stream) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
            if !self.partial[i].is_empty() {
                let mut out = self.prefix.clone();
                out.append(&mut self.partial[i]);
                out.push(b'\n');
                write_fd(stream, &out);
            }
        }
    }
}

async fn fan_out(
    client: Client,
    base: InvokeSpec,
    targets: Vec<String>,
    a: &InvokeArgs,
) -> CliResult {
    let stdin = if base.stdin {
        Some(Arc::new(read_shared_stdin()?))
    } else {
        None
    };
    let client = Arc::new(client);
    let limit = Arc::new(Semaphore::new(a.throttle_limit.max(1)));
    let mut tasks = Vec::new();
    for t in targets {
        let (client, limit, stdin) = (client.clone(), limit.clone(), stdin.clone());
        let mut spec = base.clone();
        spec.session = t.clone();
        let (json, hide) = (a.json, a.hide_computer_name);
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire().await;
            one_of_many(&client, spec, &t, stdin, json, hide).await
        }));
    }
    let mut status = 0;
    for t in tasks {
        let code = t.await.unwrap_or(1);
        if status == 0 && code != 0 {
            status = code;
        }
    }
    Ok(status)
}

async fn one_of_many(
    client: &Client,
    spec: InvokeSpec,
    label: &str,
    stdin: Option<Arc<Vec<u8>>>,
    json: bool,
    hide: bool,
) -> i32 {
    let session = spec.session.clone();
    let mut inv = match client.invoke(spec).await {
        Ok(i) => i,
        Err(e) => {
            let e = annotate(e, label);
            if json {
                json_line(
                    serde_json::json!({"computer": "localhost", "session": session,
                    "error": e.message, "exit_code": e.kind.exit_code()}),
                );
            }
            eprintln!("tether: {}", e.message);
            return e.kind.exit_code();
        }
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
    let mut px = Prefixer {
        prefix: if hide {
            Vec::new()
        } else {
            format!("{label}: ").into_bytes()
        },
        partial: [Vec::new(), Vec::new()],
    };
    loop {
        match inv.next().await {
            Ok(Event::Output { stream, data }) => {
                if json {
                    json_line(
                        serde_json::json!({"computer": "localhost", "session": session,
                        "stream": stream_name(stream), "data": String::from_utf8_lossy(&data)}),
                    );
                } else {
                    px.push(stream, &data);
                }
            }
            Ok(Event::Exit(exit)) => {
                px.finish();
                if json {
                    json_line(
                        serde_json::json!({"computer": "localhost", "session": session,
                        "exit_code": exit.code}),
                    );
                }
                report_exit(label, &exit);
                return exit.code;
            }
            Err(e) => {
                px.finish();
                let e = annotate(e, label);
                eprintln!("tether: {}", e.message);
                return if e.kind == ErrorKind::Internal {
                    1
                } else {
                    e.kind.exit_code()
                };
            }
        }
    }
}
