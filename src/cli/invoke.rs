//! `tether invoke`: run a command in one or more sessions, or in a temporary local session.
//!
//! One target streams byte-exact to our own stdout and stderr and exits with the command's
//! status. Several targets run in parallel (up to `--throttle-limit`), each output line prefixed
//! with the target's label, and the exit status is 0 only if every target exited 0.
//!
//! Sessions and computers are alike here: every target is one invocation through the local
//! daemon, which reaches other computers over its warm ssh connections.

mod fanout;

use super::error::{CliError, CliResult};
use super::stream::{Notices, Waiting, json_line, note, stdout_closed, stream_name, write_fd};
use super::{captured_env, connect, current_dir, dur, remote};
use clap::Args;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::time::Duration;
use tether_client::{Client, ClientError, Event, ExitInfo, InvokeSpec};

/// SPEC §3.3: a synchronous invoke waits up to 4 minutes for a busy session.
pub(super) const DEFAULT_WAIT: Duration = Duration::from_secs(240);
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
    /// Run in a subshell of the session: it sees the session's variables, functions and
    /// directory, but keeps none of its changes (cd, variables, set -e, exit).
    #[arg(long)]
    isolated: bool,
    /// The script to run.
    script: Option<String>,
}

/// One place a command runs: a session, or a temporary session on a computer.
pub(super) struct Target {
    /// How output and errors name it (the session or computer as typed).
    pub(super) label: String,
    /// The `computer` of `--json` lines.
    pub(super) computer: String,
    pub(super) spec: InvokeSpec,
}

impl Target {
    /// A temporary session on this computer, started with our environment and directory.
    fn here(label: &str, base: &InvokeSpec) -> Target {
        Target {
            label: label.to_string(),
            computer: "localhost".into(),
            spec: InvokeSpec {
                env: captured_env(),
                cwd: current_dir(),
                ..base.clone()
            },
        }
    }

    /// A temporary session on computer `c` (here for `localhost`).
    pub(super) fn computer(c: &str, base: &InvokeSpec) -> Result<Target, CliError> {
        if remote::is_local(c) {
            return Ok(Target::here(c, base));
        }
        Ok(Target {
            label: c.to_string(),
            computer: c.to_string(),
            spec: InvokeSpec {
                remote: Some(remote::target(c, &super::ssh_flags())?),
                ..base.clone()
            },
        })
    }

    /// The session `s` names. `json`: `--json` names the computer the session is on, as
    /// `get` shows it.
    pub(super) fn session(s: &str, base: &InvokeSpec, json: bool) -> Target {
        Target {
            label: s.to_string(),
            computer: if json {
                session_computer(s)
            } else {
                "localhost".into()
            },
            spec: InvokeSpec {
                session: s.to_string(),
                ..base.clone()
            },
        }
    }
}

pub async fn run(a: InvokeArgs) -> CliResult {
    // An empty name is an error, never "no target" (which would run here instead).
    let sessions = super::sessions::session_words("--session", &a.sessions)?;
    let computers = remote::computers("--computer", &a.computer)?;
    if !computers.is_empty() && !sessions.is_empty() {
        return Err(CliError::usage("give --session or --computer, not both"));
    }
    let script = match (&a.script, &a.file) {
        (Some(s), None) => s.clone(),
        (None, Some(f)) => read_script(f)?,
        _ => return Err(CliError::usage("give a SCRIPT or --file FILE")),
    };
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
        isolated: a.isolated,
        ..Default::default()
    };
    let mut targets = Vec::new();
    for c in &computers {
        targets.push(Target::computer(c, &base)?);
    }
    for s in &sessions {
        targets.push(Target::session(s, &base, a.json));
    }
    if targets.is_empty() {
        targets.push(Target::here("localhost", &base));
    }
    tracing::info!(
        targets = targets.len(),
        as_job = a.as_job,
        throttle = a.throttle_limit,
        "invoke"
    );
    if !a.as_job && targets.len() == 1 {
        return single(targets.remove(0), a.json, Redirect::default()).await;
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
    let fan = fanout::Options {
        throttle: a.throttle_limit,
        json: a.json,
        hide_computer_name: a.hide_computer_name,
    };
    fanout::fan_out(client, targets, fan).await
}

/// The most a script may have: a session host refuses scripts (with their arguments) over
/// 4 MiB (`MAX_SCRIPT` in crates/engine/src/driver.rs), so a bigger `--file` is refused here.
const MAX_SCRIPT: usize = 4 << 20;

/// Reads a `--file` script: at most [`MAX_SCRIPT`] bytes plus one, so that a huge file (or
/// `/dev/zero`) is refused without being read whole.
fn read_script(f: &std::path::Path) -> Result<String, CliError> {
    let name = f.display();
    let mut buf = Vec::new();
    std::fs::File::open(f)
        .and_then(|file| file.take(MAX_SCRIPT as u64 + 1).read_to_end(&mut buf))
        .map_err(|e| CliError::usage(format!("cannot read script file {name}: {e}")))?;
    if buf.len() > MAX_SCRIPT {
        return Err(CliError::usage(format!(
            "script file {name} is too big for a script: the limit is {} MiB (pass data on \
             standard input instead)",
            MAX_SCRIPT >> 20
        )));
    }
    String::from_utf8(buf)
        .map_err(|_| CliError::usage(format!("script file {name} is not UTF-8 text")))
}

/// The computer a session named by `word` is on, as `get` shows it (this client's records
/// say; `localhost` for a local session or one it does not know).
pub(super) fn session_computer(word: &str) -> String {
    match super::daemon_paths() {
        Ok(paths) => tether_daemon::computer_of(&paths, word),
        Err(_) => "localhost".into(),
    }
}

/// Reads standard input whole, to copy it to several targets (or over ssh, for now).
pub(super) fn read_shared_stdin() -> Result<Vec<u8>, CliError> {
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

/// Where one target's stdin comes from and its stdout goes when not from and to ours: pipes
/// of a caller in this process that feeds and reads the command itself (`copy`).
#[derive(Default)]
pub(super) struct Redirect {
    pub stdin: Option<std::os::fd::OwnedFd>,
    pub stdout: Option<std::os::fd::OwnedFd>,
}

/// Runs on one target, streaming raw output; returns the command's exit status.
///
/// A local session named by name is tried straight at its host first (no daemon hop, about a
/// tenth of a short call); anything else, or any doubt, goes through the daemon.
pub(super) async fn single(t: Target, json: bool, to: Redirect) -> CliResult {
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
        to,
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

/// How one streamed target is named in output and errors, and where its streams go.
pub(super) struct View {
    pub label: String,
    pub computer: String,
    pub session: String,
    pub json: bool,
    pub to: Redirect,
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
        to,
    } = view;
    // A caller's stdout pipe is written without blocking this thread: the caller may be
    // blocked feeding our stdin, which this runtime's tasks send on.
    let mut piped = match to.stdout {
        Some(fd) => {
            let splice = fd.try_clone().ok();
            Some((tokio::net::unix::pipe::Sender::from_owned_fd(fd)?, splice))
        }
        None => None,
    };
    let label = label.as_str();
    // Registered before the session is acquired: Ctrl-C while waiting for a busy session gives
    // up (closing the connection, so the command never starts); once running, it stops the
    // command and a third one gives up waiting for it.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    // SIGTERM (`timeout`, a service manager) and SIGHUP (a closed terminal) stop the command as
    // Ctrl-C does, and we leave: the session stays usable for the next command.
    let mut ends = Ends::new()?;
    let started = std::time::Instant::now();
    let waiting = Waiting::start(format!("tether: waiting for {label}…"), WAITING_AFTER);
    let mut inv = tokio::select! {
        inv = start => inv.map_err(|e| annotate(e, label))?,
        _ = sigint.recv() => return Ok(130),
        // Closing the connection gives up the wait: the command never starts.
        code = ends.next() => return Ok(code),
    };
    drop(waiting);
    tracing::info!(on = label, elapsed = ?started.elapsed(), "command started");
    if forward_stdin {
        use std::os::fd::AsFd;
        let input = match to.stdin {
            Some(fd) => Ok(fd),
            None => std::io::stdin().as_fd().try_clone_to_owned(),
        };
        match input {
            Ok(input) => inv.forward_stdin(input),
            // No descriptor to spare: the command reads end-of-file.
            Err(_) => {
                inv.control().eof().await;
            }
        }
    }
    let splice = match &mut piped {
        Some((_, splice)) => splice.take(),
        None if !json => super::stream::stdout_pipe(),
        None => None,
    };
    if let Some(out) = splice {
        inv.splice_stdout(out);
    }
    // Whose output closed: ours is the user's to hear of, a caller's is its own.
    let closed_note = if piped.is_some() {
        ""
    } else {
        session.as_str()
    };
    let ctl = inv.control();
    let mut interrupts = 0;
    let mut notices = Notices::default();
    loop {
        tokio::select! {
            ev = inv.next() => match ev.map_err(|e| annotate(e, label))? {
                Event::Notice(n) => notices.show(&n),
                Event::Output { stream: tether_client::Stream::Stdout, data }
                    if let Some((pipe, _)) = &mut piped =>
                {
                    use tokio::io::AsyncWriteExt;
                    notices.clear();
                    if pipe.write_all(&data).await.is_err() {
                        return Ok(output_closed(&ctl, closed_note, label).await);
                    }
                    inv.delivered();
                }
                Event::Output { stream, data } => {
                    notices.clear();
                    if json {
                        json_line(serde_json::json!({"computer": computer, "session": session,
                            "stream": stream_name(stream), "data": String::from_utf8_lossy(&data)}));
                    } else {
                        write_fd(stream, &data);
                    }
                    if stdout_closed() {
                        return Ok(output_closed(&ctl, closed_note, label).await);
                    }
                    inv.delivered();
                }
                Event::OutputClosed => return Ok(output_closed(&ctl, closed_note, label).await),
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
                    // Giving up on a command that would not stop: it is stopped for good
                    // (escalating to SIGKILL), and nothing of it is kept.
                    leave(&ctl).await;
                    return Ok(130);
                }
                ctl.cancel().await;
            }
            code = ends.next() => {
                leave(&ctl).await;
                return Ok(code);
            }
        }
    }
}

/// `| head` has what it wanted: stop the command and leave, as `ssh host cmd | head` does.
async fn output_closed(ctl: &tether_client::InvocationControl, session: &str, label: &str) -> i32 {
    leave(ctl).await;
    if !session.is_empty() {
        note(&format!(
            "output closed; the command in session {label} was stopped"
        ));
    }
    141
}

/// Leaves a running command for good: it is stopped and none of its output is kept. Bounded,
/// so that a stuck connection never keeps us from exiting.
pub(super) async fn leave(ctl: &tether_client::InvocationControl) {
    let _ = tokio::time::timeout(Duration::from_secs(2), ctl.abandon()).await;
}

/// SIGTERM and SIGHUP, with the exit status a process killed by them would have.
pub(super) struct Ends {
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Ends {
    pub(super) fn new() -> std::io::Result<Ends> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Ends {
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    pub(super) async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.term.recv() => 128 + libc::SIGTERM,
            _ = self.hup.recv() => 128 + libc::SIGHUP,
        }
    }
}

pub(super) fn report_exit(label: &str, exit: &ExitInfo) {
    if exit.timed_out {
        note(&format!("{label}: the command timed out and was stopped"));
    }
    if let Some(reason) = &exit.broken {
        note(&format!("session {label} is now Broken: {reason}"));
    }
}

/// Errors for a target name the session or computer, as SPEC §2 asks.
pub(super) fn annotate(e: ClientError, label: &str) -> CliError {
    let kind = e.kind();
    let msg = e.to_string();
    if msg.contains(label) {
        CliError::new(kind, msg)
    } else {
        CliError::new(kind, format!("session {label}: {msg}"))
    }
}
