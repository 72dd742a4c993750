//! `tether enter` (SPEC §3.16, Enter-PSSession): a prompt `[COMPUTER:NAME] CWD$ ` whose lines
//! run in the session, each on the session's terminal, with this terminal in raw mode meanwhile
//! so that full-screen programs, Ctrl-C and window resizes reach the program.
//!
//! The prompt itself is rustyline: line editing, history kept per computer in
//! `$TETHER_HOME/history/`; the session's own shell says whether a line is complete (an open
//! quote, `if` without `fi` go on on the next line) and completes words on Tab
//! ([`shell`]). Every key typed goes through one queue ([`keys`]), so keys typed while a line
//! runs or ends, and pastes, reach the program or the next prompt in order ([`mod@line`]).

mod keys;
mod line;
mod shell;
mod words;

use super::error::{CliError, CliResult};
use super::{connect, remote};
use clap::Args;
use keys::{Keys, Read};
use line::WAIT;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tether_client::RemoveSpec;
use tether_client::{ErrorKind, InvokeSpec, NewSession, Paths, SessionFilter};

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
        errln!("tether: session {} is busy; waiting for it…", found.name);
    }
    Ok(Place {
        word,
        name: found.name,
        computer: found.computer_name,
        temporary: false,
    })
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
    let mut keys = Keys::open()?;
    // Cleared when the session runs no shell (restricted): then nothing is asked of it, every
    // line is complete and the first prompt shows no directory.
    let usable = Arc::new(AtomicBool::new(true));
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let helper = shell::Lines {
        shell: shell::Shell::new(place.word.clone(), connect().await?, usable.clone()),
        events: events_tx,
    };
    let config = rustyline::Config::builder()
        .completion_type(rustyline::CompletionType::List)
        .build();
    let mut editor = keys::Editor::with_config(config)
        .map_err(|e| CliError::usage(format!("cannot use this terminal: {e}")))?;
    editor.set_helper(Some(helper));
    // Ctrl-Z would stop `enter` itself, leaving this terminal raw.
    editor.bind_sequence(
        rustyline::KeyEvent::ctrl('Z'),
        rustyline::EventHandler::Simple(rustyline::Cmd::Noop),
    );
    let history = history_file(&place.computer);
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    // Keys typed and not yet used, in order: the next prompt types them.
    let mut q: Vec<u8> = Vec::new();
    let mut known: Option<String> = None;
    let mut editor = Some(editor);
    loop {
        if keys.closed && q.is_empty() {
            break;
        }
        let cwd = match known.take() {
            Some(c) => c,
            None if !usable.load(Ordering::Relaxed) => String::new(),
            None => match cwd(place).await {
                Ok(c) => c,
                Err(e) if e.kind == ErrorKind::Permission => {
                    usable.store(false, Ordering::Relaxed);
                    String::new()
                }
                Err(e) => return Err(e),
            },
        };
        let prompt = format!("[{}:{}] {}$ ", place.computer, place.name, cwd);
        let (ed, read) = keys
            .read_line(editor.take().expect("kept"), prompt, &mut q, &mut events)
            .await;
        let ed = editor.insert(ed);
        let line = match read? {
            Read::Line(l) => l,
            Read::Interrupted => {
                known = Some(cwd);
                continue;
            }
            Read::Eof => break,
        };
        if line.trim().is_empty() {
            known = Some(cwd);
            continue;
        }
        let _ = ed.add_history_entry(line.as_str());
        if let Some(h) = &history {
            let _ = ed.append_history(h);
        }
        if line.trim() == "exit" {
            break;
        }
        // Ctrl-C typed after Enter, before the line started: it does not run.
        keys.take_read(&mut q);
        if let Some(i) = q.iter().rposition(|&b| b == keys.intr) {
            q.drain(..=i);
            out!("^C\r\n");
            let _ = std::io::stdout().flush();
            known = Some(cwd);
            continue;
        }
        match line::run(&place.word, &line, &mut keys, &mut q).await {
            Ok(cwd) => known = cwd,
            Err(e) => {
                err!("tether: {}\r\n", e.message);
                if matches!(e.kind, ErrorKind::NotFound) {
                    return Ok(e.kind.exit_code());
                }
            }
        }
    }
    Ok(0)
}

/// The session's working directory, for the prompt, when the last line did not say (the first
/// prompt; targets without `/proc`). A probe: the session's `$?` and idle clock stay as they
/// were.
async fn cwd(place: &Place) -> Result<String, CliError> {
    let client = connect().await?;
    let spec = InvokeSpec {
        session: place.word.clone(),
        script: "printf %s \"$PWD\"".into(),
        probe: true,
        wait_timeout_ms: Some(WAIT.as_millis() as u64),
        ..Default::default()
    };
    let out = client.run(spec).await?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
