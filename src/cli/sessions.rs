//! `tether new`, `tether get`, `tether remove`.

use super::error::{CliError, CliResult};
use super::{captured_env, connect, current_dir, dur, output};
use clap::Args;
use tether_client::{NewSession, RemoveSpec, SessionFilter, State};

#[derive(Args, Debug)]
pub struct NewArgs {
    /// Computers to create sessions on (none: this computer).
    computers: Vec<String>,
    /// Session name (default: "Session" followed by its Id).
    #[arg(long)]
    name: Option<String>,
    /// Session configuration on the target.
    #[arg(long)]
    configuration: Option<String>,
    /// Close the session after this long unused (e.g. 90s, 15m, 2h; 0 = never; default 2h).
    #[arg(long, value_parser = dur::parse)]
    idle_timeout: Option<std::time::Duration>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn new(a: NewArgs) -> CliResult {
    let local = |c: &String| c == "localhost" || c == "." || c.is_empty();
    if let Some(c) = a.computers.iter().find(|c| !local(c)) {
        return Err(CliError::usage(format!(
            "computer {c}: remote sessions are not available in this build yet"
        )));
    }
    let mut client = connect().await?;
    let spec = NewSession {
        name: a.name,
        configuration: a.configuration,
        idle_timeout_s: a
            .idle_timeout
            .map(|d| d.as_secs().max(u64::from(!d.is_zero()))),
        env: captured_env(),
        cwd: current_dir(),
        temporary: false,
    };
    let created = client.new_session(spec).await?;
    output::print_sessions(&created, a.json);
    Ok(0)
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// Ask these computers' daemons (none: this computer).
    #[arg(long, value_delimiter = ',')]
    computer: Vec<String>,
    /// Only sessions whose name matches this glob.
    #[arg(long)]
    name: Option<String>,
    /// Only the session with this Id.
    #[arg(long)]
    id: Option<u32>,
    /// Only the session with this InstanceId.
    #[arg(long)]
    instance_id: Option<String>,
    /// Only sessions in this state (Opened, Disconnected, Closed, Broken, …).
    #[arg(long)]
    state: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn get(a: GetArgs) -> CliResult {
    let state = match a.state.as_deref() {
        Some(s) => Some(State::parse(s).ok_or_else(|| {
            CliError::usage(format!(
                "unknown state '{s}': use Opened, Disconnected, Closed or Broken"
            ))
        })?),
        None => None,
    };
    let filter = SessionFilter {
        name_glob: a.name,
        id: a.id,
        instance_id: a.instance_id,
        state,
    };
    let remote: Vec<String> = a
        .computer
        .iter()
        .filter(|c| *c != "localhost")
        .cloned()
        .collect();
    let sessions = if remote.is_empty() {
        connect().await?.get(filter).await?
    } else {
        super::remote::get(&remote, &super::ssh_settings()?, filter).await?
    };
    output::print_sessions(&sessions, a.json);
    Ok(0)
}

#[derive(Args, Debug)]
pub struct RemoveArgs {
    /// Sessions by Name or Id.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    sessions: Vec<String>,
    /// Remove every session.
    #[arg(long)]
    all: bool,
}

pub async fn remove(a: RemoveArgs) -> CliResult {
    let mut client = connect().await?;
    let sessions = a
        .sessions
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    client
        .remove(RemoveSpec {
            sessions,
            all: a.all,
        })
        .await?;
    Ok(0)
}
