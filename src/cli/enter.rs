//! `tether enter` (SPEC §3.16, Enter-PSSession): a prompt `[COMPUTER:NAME] CWD$ ` whose lines
//! run in the session, each on the session's terminal, with this terminal in raw mode meanwhile
//! so that full-screen programs, Ctrl-C and window resizes reach the program.
//!
//! The prompt itself is rustyline: line editing, history kept per computer in
//! `$TETHER_HOME/history/`, and a line the shell would find incomplete (an open quote, `if`
//! without `fi`) continues on the next one.

use super::error::{CliError, CliResult};
use super::{connect, remote};
use clap::Args;
use rustyline::error::ReadlineError;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Completer, Helper, Highlighter, Hinter};
use std::io::{IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::time::Duration;
use tether_client::{ErrorKind, Event, InvokeSpec, NewSession, Paths, SessionFilter};
use tether_client::{RemoveSpec, TtySpec};

/// As `invoke`: a busy session is waited for up to 4 minutes.
const WAIT: Duration = Duration::from_secs(240);

#[derive(Args, Debug)]
pub struct EnterArgs {
    /// The session, by Name or Id.
    #[arg(required_unless_present = "computer", conflicts_with = "computer", add = super::completions::sessions())]
    session: Option<String>,
    /// Enter a temporary session on this computer, closed on exit.
    #[arg(long)]
    computer: Option<String>,
    /// Configuration of a temporary session.
    #[arg(long)]
    configuration: Option<String>,
}

/// Where the prompt's lines go.
struct Place {
    /// The session as this client names it.
    word: String,
    name: String,
    computer: String,
    /// Removed on exit.
    temporary: bool,
}

pub async fn run(a: EnterArgs) -> CliResult {
    // An empty name names nothing (and `--computer ''` is not this computer).
    if let Some(s) = &a.session
        && super::sessions::session_words("enter", std::slice::from_ref(s))?.len() != 1
    {
        return Err(CliError::usage("enter takes one session"));
    }
    if let Some(c) = &a.computer
        && remote::computers("--computer", std::slice::from_ref(c))?.len() != 1
    {
        return Err(CliError::usage("enter --computer takes one computer"));
    }
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        return Err(CliError::usage(
            "enter needs a terminal; use 'tether invoke' from scripts",
        ));
    }
    let place = open(&a).await?;
    let result = prompt_loop(&place).await;
    if place.temporary {
        let mut client = connect().await?;
        let _ = client
            .remove(RemoveSpec {
                sessions: vec![place.word.clone()],
                all: false,
            })
            .await;
    }
    result
}

async fn open(a: &EnterArgs) -> Result<Place, CliError> {
    let mut client = connect().await?;
    if let Some(c) = &a.computer {
        let remote = match remote::is_local(c) {
            true => None,
            false => Some(remote::target(c, &super::ssh_flags())?),
        };
        let spec = NewSession {
            configuration: a.configuration.clone(),
            remote,
            env: super::captured_env(),
            cwd: super::current_dir(),
            ..Default::default()
        };
        let s = client.new_session(spec).await?.remove(0);
        return Ok(Place {
            word: s.instance_id.clone(),
            name: s.name,
            computer: s.computer_name,
            temporary: true,
        });
    }
    let word = a.session.clone().unwrap_or_default();
    let filter = SessionFilter::default();
    let found = client
        .get(filter)
        .await?
        .into_iter()
        .find(|s| s.name == word || s.id.to_string() == word || s.instance_id == word)
        .ok_or_else(|| {
            CliError::new(
                ErrorKind::NotFound,
                format!("session {word} not found; 'tether get' lists the sessions"),
            )
        })?;
    if found.availability == tether_client::Availability::Busy {
        eprintln!("tether: session {} is busy; waiting for it…", found.name);
    }
    Ok(Place {
        word,
        name: found.name,
        computer: found.computer_name,
        temporary: false,
    })
}

#[derive(Completer, Helper, Highlighter, Hinter)]
struct Lines;

impl Validator for Lines {
    /// Asks a local shell whether the text so far is a whole command: "unexpected end of file"
    /// means it goes on.
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        Ok(if incomplete(ctx.input()) {
            ValidationResult::Incomplete
        } else {
            ValidationResult::Valid(None)
        })
    }
}

fn incomplete(text: &str) -> bool {
    let Ok(mut child) = std::process::Command::new("bash")
        .arg("-n")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        return false;
    };
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(text.as_bytes());
    }
    child
        .wait_with_output()
        .map(|o| String::from_utf8_lossy(&o.stderr).contains("unexpected end of file"))
        .unwrap_or(false)
}

fn history_file(computer: &str) -> Option<std::path::PathBuf> {
    let paths = Paths::from_env().ok()?;
    let dir = paths.home.join("history");
    tether_transport::paths::private_dir(&dir).ok()?;
    let safe: String = computer
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    Some(dir.join(safe))
}

async fn prompt_loop(place: &Place) -> CliResult {
    let mut editor = rustyline::Editor::<Lines, rustyline::history::FileHistory>::new()
        .map_err(|e| CliError::usage(format!("cannot use this terminal: {e}")))?;
    editor.set_helper(Some(Lines));
    let history = history_file(&place.computer);
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let mut known: Option<String> = None;
    // A restricted session runs no shell to ask (its lines are checked commands): no cwd then.
    let mut can_ask = true;
    loop {
        let cwd = match known.take() {
            Some(c) => c,
            None if !can_ask => String::new(),
            None => match cwd(place).await {
                Ok(c) => c,
                Err(e) if e.kind == ErrorKind::Permission => {
                    can_ask = false;
                    String::new()
                }
                Err(e) => return Err(e),
            },
        };
        let prompt = format!("[{}:{}] {}$ ", place.computer, place.name, cwd);
        let line = match editor.readline(&prompt) {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(CliError::usage(format!("terminal: {e}"))),
        };
        if line.trim().is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line.as_str());
        if let Some(h) = &history {
            let _ = editor.append_history(h);
        }
        if line.trim() == "exit" {
            break;
        }
        match run_line(place, &line).await {
            Ok(cwd) => known = cwd,
            Err(e) => {
                eprintln!("tether: {}", e.message);
                if matches!(e.kind, ErrorKind::NotFound) {
                    return Ok(e.kind.exit_code());
                }
            }
        }
    }
    Ok(0)
}

/// The session's working directory, for the prompt, when the last line did not say (the first
/// prompt; targets without `/proc`, where the next line's `$?` then reads 0).
async fn cwd(place: &Place) -> Result<String, CliError> {
    let client = connect().await?;
    let spec = InvokeSpec {
        session: place.word.clone(),
        // Ends with the last line's status, which the session keeps for the next line's `$?`.
        script: "printf %s \"$PWD\"".into(),
        wait_timeout_ms: Some(WAIT.as_millis() as u64),
        ..Default::default()
    };
    let out = client.run(spec).await?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs one line on the session's terminal, with ours in raw mode; returns the session's
/// working directory afterwards, when the target says.
async fn run_line(place: &Place, line: &str) -> Result<Option<String>, CliError> {
    let (rows, cols) = window_size();
    let spec = InvokeSpec {
        session: place.word.clone(),
        script: line.to_string(),
        stdin: true,
        acked: true,
        wait_timeout_ms: Some(WAIT.as_millis() as u64),
        tty: Some(TtySpec {
            term: std::env::var("TERM").unwrap_or_else(|_| "xterm".into()),
            rows,
            cols,
        }),
        ..Default::default()
    };
    let client = connect().await?;
    let mut inv = client.into_invocation(spec).await?;
    let ctl = inv.control();
    let _raw = RawMode::on()?;
    let input = NonBlocking::on()?;
    // SAFETY: fd 0 stays open, the same descriptor, for as long as this AsyncFd (dropped at
    // the end of this function, before `input` restores the flags); an i32 closes nothing.
    let stdin = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(input.fd, tokio::io::Interest::READABLE)
    }
    .map_err(|e| CliError::from(std::io::Error::from(e)))?;
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    let mut buf = [0u8; 4096];
    let mut out = std::io::stdout();
    loop {
        tokio::select! {
            ev = inv.next() => match ev {
                Ok(Event::Output { data, .. }) => {
                    let _ = out.write_all(&data);
                    let _ = out.flush();
                    inv.delivered();
                }
                Ok(Event::Notice(n)) => eprint!("\r\ntether: {n}\r\n"),
                Ok(Event::Exit(e)) => {
                    inv.delivered();
                    return Ok(e.cwd);
                }
                Err(e) => return Err(e.into()),
            },
            r = stdin.readable() => {
                let Ok(mut guard) = r else { continue };
                match guard.try_io(|_| nix::unistd::read(std::io::stdin(), &mut buf).map_err(Into::into)) {
                    Ok(Ok(0)) => { let _ = ctl.eof().await; }
                    Ok(Ok(n)) => { let _ = ctl.stdin(buf[..n].to_vec()).await; }
                    Ok(Err(_)) | Err(_) => {}
                }
            }
            _ = winch.recv() => {
                let (rows, cols) = window_size();
                let _ = ctl.resize(rows, cols).await;
            }
        }
    }
}

/// This terminal's size (rows, columns).
fn window_size() -> (u16, u16) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize we pass, which outlives the call.
    let ok = unsafe { libc::ioctl(std::io::stdout().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    if ok == 0 && ws.ws_row > 0 && ws.ws_col > 0 {
        (ws.ws_row, ws.ws_col)
    } else {
        (24, 80)
    }
}

/// Raw mode on this terminal while a line runs; restored when dropped.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn on() -> Result<RawMode, CliError> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).map_err(std::io::Error::from)?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).map_err(std::io::Error::from)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

/// Standard input non-blocking while a line runs (so reading it never outlasts the line and
/// steals what is typed at the next prompt); restored when dropped.
struct NonBlocking {
    fd: std::os::fd::RawFd,
    saved: nix::fcntl::OFlag,
}

impl NonBlocking {
    fn on() -> Result<NonBlocking, CliError> {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let stdin = std::io::stdin();
        let saved = OFlag::from_bits_truncate(
            fcntl(&stdin, FcntlArg::F_GETFL).map_err(std::io::Error::from)?,
        );
        fcntl(&stdin, FcntlArg::F_SETFL(saved | OFlag::O_NONBLOCK))
            .map_err(std::io::Error::from)?;
        Ok(NonBlocking {
            fd: stdin.as_raw_fd(),
            saved,
        })
    }
}

impl Drop for NonBlocking {
    fn drop(&mut self) {
        use nix::fcntl::{FcntlArg, fcntl};
        let _ = fcntl(std::io::stdin(), FcntlArg::F_SETFL(self.saved));
    }
}
