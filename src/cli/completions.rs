//! `tether completions bash|zsh|fish`: shell completion that also knows session names.
//!
//! The scripts are clap_complete's dynamic ones: each TAB runs `tether` again with
//! `TETHER_COMPLETE=<shell>` and the words typed so far, and the binary answers from its own
//! command definition. So completion never lags behind the installed version (new subcommands
//! and flags appear by themselves), and values that only the daemon knows (session names, job
//! ids, configuration names) are completed from the daemon, as `tether get` would list them.
//!
//! The variable is `TETHER_COMPLETE`, not clap's default `COMPLETE`, so that an unrelated
//! `COMPLETE` in a user's environment can never turn a normal call into a completion.

use super::error::{CliError, CliResult};
use clap::{Args, CommandFactory, ValueEnum};
use clap_complete::engine::{ArgValueCandidates, CompletionCandidate};
use clap_complete::env::{Bash, CompleteEnv, EnvCompleter, Fish, Zsh};
use std::future::Future;
use std::time::Duration;
use tether_client::{ConfigQuery, ErrorKind, JobQuery, SessionFilter};

/// The environment variable that turns a call into a completion request.
const VAR: &str = tether_settings::vars::COMPLETE;

/// A completion must feel instant; a daemon that is slow to answer (say, it is refreshing a
/// session on an unreachable computer) gives no candidates rather than a frozen prompt.
const DEADLINE: Duration = Duration::from_secs(2);

pub const EXAMPLES: &str = "Examples:\n  \
source <(tether completions bash)                     # in ~/.bashrc\n  \
source <(tether completions zsh)                      # in ~/.zshrc, after compinit\n  \
tether completions fish > ~/.config/fish/completions/tether.fish\n  \
tether enter <TAB>                                    # completes session names";

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to print the script for.
    shell: Shell,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Answers a completion request and exits, when `TETHER_COMPLETE` asks for one; otherwise
/// returns at once (one environment lookup).
pub fn complete_from_env() {
    CompleteEnv::with_factory(super::Cli::command)
        .var(VAR)
        .complete();
}

/// Prints the registration script. The script runs this same executable: by name when it was
/// called by name (found on PATH then, so an upgrade in place is picked up), else by its
/// absolute path.
pub fn run(a: CompletionsArgs) -> CliResult {
    let shell: &dyn EnvCompleter = match a.shell {
        Shell::Bash => &Bash,
        Shell::Zsh => &Zsh,
        Shell::Fish => &Fish,
    };
    let completer = completer_path();
    let mut out = std::io::stdout().lock();
    match shell.write_registration(VAR, "tether", "tether", &completer, &mut out) {
        // `tether completions bash | head` is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::new(
            ErrorKind::Internal,
            format!("completions: {e}"),
        )),
        _ => Ok(0),
    }
}

/// How the completion script names this executable.
fn completer_path() -> String {
    let argv0 = std::env::args_os()
        .next()
        .unwrap_or_else(|| "tether".into());
    let path = std::path::PathBuf::from(&argv0);
    if path.components().count() <= 1 {
        return path.to_string_lossy().into_owned();
    }
    std::env::current_exe()
        .or_else(|_| std::path::absolute(&path))
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// Runs one daemon query for a completion, with a deadline; any failure means no candidates.
fn ask<F, Fut>(query: F) -> Vec<CompletionCandidate>
where
    F: FnOnce(tether_client::Client) -> Fut,
    Fut: Future<Output = Result<Vec<CompletionCandidate>, tether_client::ClientError>>,
{
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    rt.block_on(async {
        let work = async {
            let client = super::connect().await.ok()?;
            query(client).await.ok()
        };
        tokio::time::timeout(DEADLINE, work)
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    })
}

/// Session names, described by Id, state and computer (zsh and fish show the description).
pub fn sessions() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        ask(|mut c| async move {
            let list = c.get(SessionFilter::default()).await?;
            Ok(list
                .into_iter()
                .map(|s| {
                    let help = format!("Id {}, {} on {}", s.id, s.state.as_str(), s.computer_name);
                    CompletionCandidate::new(s.name).help(Some(help.into()))
                })
                .collect())
        })
    })
}

/// Job ids, described by state and command.
pub fn jobs() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        ask(|mut c| async move {
            let list = c.job_list(JobQuery::default()).await?;
            Ok(list
                .into_iter()
                .map(|j| {
                    let command = j.command.lines().next().unwrap_or("").to_string();
                    let help = format!("{}: {command}", j.state);
                    CompletionCandidate::new(j.id.to_string()).help(Some(help.into()))
                })
                .collect())
        })
    })
}

/// Configuration names of this computer's daemon.
pub fn configurations() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        ask(|mut c| async move {
            let list = c
                .configs(ConfigQuery {
                    name: None,
                    remote: None,
                })
                .await?;
            Ok(list
                .into_iter()
                .map(|c| {
                    let help = format!("{} ({})", c.engine, c.file);
                    CompletionCandidate::new(c.name).help(Some(help.into()))
                })
                .collect())
        })
    })
}

/// The states `get --state` accepts.
pub fn states() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        ["Opened", "Disconnected", "Closed", "Broken"]
            .into_iter()
            .map(CompletionCandidate::new)
            .collect()
    })
}
