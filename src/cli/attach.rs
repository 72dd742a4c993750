//! `tether disconnect`, `tether connect`, `tether receive` (SPEC §3.11).

use super::error::{CliError, CliResult};
use super::invoke::{View, stream};
use super::{connect, output, remote};
use clap::Args;
use tether_client::SessionList;

fn words(v: &[String]) -> Vec<String> {
    v.iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

#[derive(Args, Debug)]
pub struct DisconnectArgs {
    /// Sessions by Name or Id. A running command goes on; its output is kept for `receive`.
    #[arg(required = true, add = super::completions::sessions())]
    sessions: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn disconnect(a: DisconnectArgs) -> CliResult {
    let mut client = connect().await?;
    let list = SessionList {
        sessions: words(&a.sessions),
        remote: None,
    };
    let done = client.disconnect(list).await?;
    output::print_sessions(&done, a.json);
    Ok(0)
}

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// Sessions by Name or Id (this client's handles).
    #[arg(conflicts_with_all = ["computer", "name"], required_unless_present = "computer", add = super::completions::sessions())]
    sessions: Vec<String>,
    /// Find the sessions on this computer (made by any client) and connect to them.
    #[arg(long, requires = "name")]
    computer: Option<String>,
    /// With --computer: the names of the sessions there (repeat or separate with commas).
    #[arg(long, value_delimiter = ',')]
    name: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn connect_cmd(a: ConnectArgs) -> CliResult {
    let list = match &a.computer {
        Some(c) if !remote::is_local(c) => SessionList {
            sessions: words(&a.name),
            remote: Some(remote::target(c, &super::ssh_flags())?),
        },
        Some(_) => SessionList {
            sessions: words(&a.name),
            remote: None,
        },
        None => SessionList {
            sessions: words(&a.sessions),
            remote: None,
        },
    };
    let mut client = connect().await?;
    let done = client.connect_sessions(list).await?;
    output::print_sessions(&done, a.json);
    Ok(0)
}

#[derive(Args, Debug)]
pub struct ReceiveArgs {
    /// The session (Name or Id) whose disconnected command's output to collect.
    #[arg(add = super::completions::sessions())]
    session: String,
    /// Keep the output for the next receive (not available yet).
    #[arg(long)]
    keep: bool,
    /// Print JSON lines instead of raw output.
    #[arg(long)]
    json: bool,
}

/// Prints what the command wrote while disconnected, then the rest live, and exits with its
/// status; the session is attached again.
pub async fn receive(a: ReceiveArgs) -> CliResult {
    if a.keep {
        return Err(CliError::usage(
            "receive --keep is not available in this build yet",
        ));
    }
    let client = connect().await?;
    let view = View {
        label: a.session.clone(),
        computer: "localhost".into(),
        session: a.session.clone(),
        json: a.json,
    };
    stream(client.into_receive(&a.session), view, false).await
}
