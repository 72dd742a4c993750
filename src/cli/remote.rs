//! Other computers, as the CLI names them. The CLI never runs ssh itself: it describes the
//! computer (name, ssh flags and environment) in a [`RemoteTarget`] and the local daemon, which
//! keeps one warm ssh connection per computer, does the rest.

use super::error::CliError;
use std::time::Duration;
use tether_client::{SessionFilter, SessionInfo};
use tether_proto::RemoteTarget;

/// The ssh flags given on the command line.
#[derive(Debug, Clone, Default)]
pub struct SshFlags {
    pub config: Option<std::path::PathBuf>,
    pub options: Vec<String>,
    pub connect_timeout: Option<Duration>,
}

/// True for the names that mean this computer, reached without ssh.
pub fn is_local(c: &str) -> bool {
    matches!(c, "localhost" | "." | "")
}

/// Describes `computer` for the daemon, from the flags and `TETHER_SSH`, `TETHER_SSH_CONFIG`,
/// `TETHER_REMOTE_EXE` and `TETHER_REMOTE_HOME`. A name or option that could inject ssh
/// options is refused here, before anything runs.
pub fn target(computer: &str, flags: &SshFlags) -> Result<RemoteTarget, CliError> {
    let text = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let rt = RemoteTarget {
        computer: computer.to_string(),
        ssh_program: env("TETHER_SSH"),
        ssh_config: flags
            .config
            .as_deref()
            .map(text)
            .or_else(|| env("TETHER_SSH_CONFIG")),
        ssh_options: flags.options.clone(),
        connect_timeout_ms: flags
            .connect_timeout
            .filter(|d| !d.is_zero())
            .map(|d| d.as_millis() as u64),
        remote_exe: env("TETHER_REMOTE_EXE"),
        remote_home: env("TETHER_REMOTE_HOME"),
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
        let waiting = super::stream::Waiting::start(
            format!("tether: asking {c}…"),
            super::sessions::WAITING_AFTER,
        );
        tracing::info!(computer = %c, "listing sessions");
        let found = client.get(f).await;
        drop(waiting);
        all.extend(found?);
    }
    Ok(all)
}
