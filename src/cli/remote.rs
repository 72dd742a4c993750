//! Other computers, as the CLI names them. The CLI never runs ssh itself: it describes the
//! computer (name, ssh flags and environment) in a [`RemoteTarget`] and the local daemon, which
//! keeps one warm ssh connection per computer, does the rest.

use super::error::CliError;
use std::time::Duration;
use tether_client::{SessionFilter, SessionInfo};
use tether_proto::RemoteTarget;

/// Calls to other computers that take longer than this get a spinner on a terminal.
pub(super) const WAITING_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// The ssh flags given on the command line.
#[derive(Debug, Clone, Default)]
pub struct SshFlags {
    pub config: Option<std::path::PathBuf>,
    pub options: Vec<String>,
    pub connect_timeout: Option<Duration>,
    /// `--transport`; `None`: `TETHER_TRANSPORT`, else ssh.
    pub transport: Option<tether_proto::Transport>,
}

/// True for the names that mean this computer, reached without ssh.
pub fn is_local(c: &str) -> bool {
    matches!(c, "localhost" | "." | "")
}

/// The computers `values` name (each may hold several, separated by commas). An empty name
/// (`''`, `a,,b`, a stray comma) is a usage error, never "this computer": a script that built
/// the list from an empty variable must not run its command here instead.
pub fn computers(what: &str, values: &[String]) -> Result<Vec<String>, CliError> {
    split_words(what, "computer", "computer names", values)
}

/// Splits `values` at commas; an empty item is a usage error naming `what` (the flag or the
/// subcommand) and the value it was in.
pub fn split_words(
    what: &str,
    kind: &str,
    several: &str,
    values: &[String],
) -> Result<Vec<String>, CliError> {
    let mut out = Vec::new();
    for v in values {
        for w in v.split(',') {
            if w.is_empty() {
                let within = if v.is_empty() {
                    String::new()
                } else {
                    format!(" in '{v}'")
                };
                return Err(CliError::usage(format!(
                    "{what}: an empty {kind} name{within}; give {several} separated by single commas"
                )));
            }
            out.push(w.to_string());
        }
    }
    Ok(out)
}

/// Describes `computer` for the daemon, from the flags and `TETHER_SSH`, `TETHER_SSH_CONFIG`,
/// `TETHER_REMOTE_EXE`, `TETHER_REMOTE_HOME` and `TETHER_TRANSPORT`. A name or option that could inject ssh
/// options is refused here, before anything runs.
pub fn target(computer: &str, flags: &SshFlags) -> Result<RemoteTarget, CliError> {
    let text = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let settings = tether_settings::get();
    let rt = RemoteTarget {
        computer: computer.to_string(),
        ssh_program: settings.ssh.clone(),
        ssh_config: flags
            .config
            .as_deref()
            .map(text)
            .or_else(|| settings.ssh_config.clone()),
        ssh_options: flags.options.clone(),
        connect_timeout_ms: flags
            .connect_timeout
            .filter(|d| !d.is_zero())
            .map(|d| d.as_millis() as u64),
        remote_exe: settings.remote_exe.clone(),
        remote_home: settings.remote_home.clone(),
        // The agent of this call (absolute: the daemon runs elsewhere), for the link it opens.
        ssh_auth_sock: env("SSH_AUTH_SOCK").map(|s| {
            std::path::absolute(&s)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or(s)
        }),
        transport: flags.transport.unwrap_or(settings.transport),
    };
    tether_transport::link::settings(&rt).map_err(|e| CliError::usage(e.message))?;
    Ok(rt)
}

/// `get --computer C…`: each computer's daemon lists this user's sessions there.
pub async fn get(
    computers: &[String],
    flags: &SshFlags,
    filter: SessionFilter,
) -> Result<Vec<SessionInfo>, CliError> {
    let mut client = super::connect().await?;
    let mut all = Vec::new();
    for c in computers {
        let f = SessionFilter {
            remote: Some(target(c, flags)?),
            ..filter.clone()
        };
        let waiting = super::stream::Waiting::start(format!("tether: asking {c}…"), WAITING_AFTER);
        tracing::info!(computer = %c, "listing sessions");
        let found = client.get(f).await;
        drop(waiting);
        all.extend(found?);
    }
    Ok(all)
}
