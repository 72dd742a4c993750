//! `tether new`, `tether get`, `tether remove`.

use super::error::{CliError, CliResult};
use super::stream::Waiting;
use super::{captured_env, connect, current_dir, dur, output, remote};
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
    /// Skip the configuration's start-up script.
    #[arg(long)]
    no_profile: bool,
    /// Close the session after this long unused (e.g. 90s, 15m, 2h; 0 = never; default 2h).
    #[arg(long, value_parser = dur::parse)]
    idle_timeout: Option<std::time::Duration>,
    /// What happens to output kept while nobody is connected, at the quota: `block` pauses
    /// the command until `receive`, `drop` discards the oldest output (default: as the
    /// configuration says, else block; given, it wins over the configuration).
    #[arg(long, value_parser = ["block", "drop"])]
    output_mode: Option<String>,
    /// How much output is kept while nobody is connected (e.g. 64K, 100M, 1G; default 1G).
    #[arg(long, value_parser = parse_size)]
    output_quota: Option<u64>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// The sessions `values` name (Names or Ids, each value possibly several separated by
/// commas). An empty one is a usage error: it names no session (and for `invoke` it must not
/// mean a temporary session instead).
pub(super) fn session_words(what: &str, values: &[String]) -> Result<Vec<String>, CliError> {
    remote::split_words(what, "session", "Names or Ids", values)
}

/// `512`, `64K`, `100M`, `1G` (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    tether_client::parse_size(s)
}

/// `new [COMPUTER…]`: a local session, or one per computer. Computers are tried in order; the
/// first failure stops the rest and is reported (what was created is printed first).
pub async fn new(a: NewArgs) -> CliResult {
    let computers: Vec<String> = if a.computers.is_empty() {
        vec!["localhost".into()]
    } else {
        remote::computers("new", &a.computers)?
    };
    if a.name.is_some() && computers.len() > 1 {
        return Err(CliError::usage(
            "--name names one session; give one computer, or leave names to their default",
        ));
    }
    let flags = super::ssh_flags();
    let targets = computers
        .iter()
        .map(|c| match remote::is_local(c) {
            true => Ok(None),
            false => remote::target(c, &flags).map(Some),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut client = connect().await?;
    let mut created = Vec::new();
    let mut failed = None;
    for rt in targets {
        let local = rt.is_none();
        // Reaching a computer the first time may mean an ssh handshake and copying tether there.
        let waiting = rt.as_ref().map(|rt| {
            tracing::info!(computer = %rt.computer, "creating a session");
            Waiting::start(
                format!("tether: connecting to {}…", rt.computer),
                remote::WAITING_AFTER,
            )
        });
        let spec = NewSession {
            name: a.name.clone(),
            configuration: a.configuration.clone(),
            no_profile: a.no_profile,
            idle_timeout_s: a
                .idle_timeout
                .map(|d| d.as_secs().max(u64::from(!d.is_zero()))),
            env: if local { captured_env() } else { Vec::new() },
            cwd: if local { current_dir() } else { None },
            temporary: false,
            remote: rt,
            output_quota: a.output_quota,
            output_mode: a.output_mode.as_deref().map(|m| match m {
                "drop" => tether_proto::OutputMode::Drop,
                _ => tether_proto::OutputMode::Block,
            }),
        };
        let result = client.new_session(spec).await;
        drop(waiting);
        match result {
            Ok(v) => created.extend(v),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    if !created.is_empty() {
        output::print_sessions(&created, a.json);
    }
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(0),
    }
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// Ask these computers' daemons (none: this computer).
    #[arg(long, value_delimiter = ',')]
    computer: Vec<String>,
    /// Only sessions whose name matches this glob.
    #[arg(long, add = super::completions::sessions())]
    name: Option<String>,
    /// Only the session with this Id.
    #[arg(long)]
    id: Option<u32>,
    /// Only the session with this InstanceId.
    #[arg(long)]
    instance_id: Option<String>,
    /// Only sessions in this state (Opened, Disconnected, Closed, Broken, …).
    #[arg(long, add = super::completions::states())]
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
        remote: None,
    };
    let computers = remote::computers("--computer", &a.computer)?;
    let (here, far): (Vec<String>, Vec<String>) =
        computers.into_iter().partition(|c| remote::is_local(c));
    let mut sessions = if far.is_empty() {
        connect().await?.get(filter).await?
    } else {
        let mut v = remote::get(&far, &super::ssh_flags(), filter.clone()).await?;
        if !here.is_empty() {
            // This computer too: its sessions, without the handles already listed from afar.
            let mine = connect().await?.get(filter).await?;
            v.extend(
                mine.into_iter()
                    .filter(|s| !v.iter().any(|f| f.instance_id == s.instance_id))
                    .collect::<Vec<_>>(),
            );
        }
        v
    };
    // By Id, whatever order the daemon (or several computers) answered in.
    sessions.sort_by(|x, y| (x.id, &x.computer_name).cmp(&(y.id, &y.computer_name)));
    output::print_sessions(&sessions, a.json);
    Ok(0)
}

#[derive(Args, Debug)]
pub struct RemoveArgs {
    /// Sessions by Name or Id.
    #[arg(required_unless_present = "all", conflicts_with = "all", add = super::completions::sessions())]
    sessions: Vec<String>,
    /// Remove every session.
    #[arg(long)]
    all: bool,
}

pub async fn remove(a: RemoveArgs) -> CliResult {
    let sessions = session_words("remove", &a.sessions)?;
    let mut client = connect().await?;
    client
        .remove(RemoveSpec {
            sessions,
            all: a.all,
        })
        .await?;
    Ok(0)
}
