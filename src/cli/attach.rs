//! `tether disconnect`, `tether connect`, `tether receive` (SPEC §3.11).

use super::error::{CliError, CliResult};
use super::invoke::{View, stream};
use super::{connect, output, remote};
use clap::Args;
use tether_client::SessionList;

/// Sessions named on the command line; an empty name is a usage error.
fn words(what: &str, v: &[String]) -> Result<Vec<String>, CliError> {
    super::sessions::session_words(what, v)
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
    let sessions = words("disconnect", &a.sessions)?;
    let mut client = connect().await?;
    let list = SessionList {
        sessions,
        remote: None,
        keep: false,
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
    let computer = match &a.computer {
        Some(c) => match remote::computers("--computer", std::slice::from_ref(c))?.as_slice() {
            [one] => Some(one.clone()),
            _ => return Err(CliError::usage("connect --computer takes one computer")),
        },
        None => None,
    };
    let list = match &computer {
        Some(c) if !remote::is_local(c) => SessionList {
            sessions: words("--name", &a.name)?,
            remote: Some(remote::target(c, &super::ssh_flags())?),
            keep: false,
        },
        Some(_) => SessionList {
            sessions: words("--name", &a.name)?,
            remote: None,
            keep: false,
        },
        None => SessionList {
            sessions: words("connect", &a.sessions)?,
            remote: None,
            keep: false,
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
    /// Show the kept output (and the rest, live, until the command ends) without consuming
    /// it: the session stays Disconnected and the next receive gets it all again.
    #[arg(long)]
    keep: bool,
    /// Print JSON lines instead of raw output.
    #[arg(long)]
    json: bool,
}

/// Prints what the command wrote while disconnected, then the rest live, and exits with its
/// status; the session is attached again (with `--keep`: it stays as it was, and so does
/// its output).
pub async fn receive(a: ReceiveArgs) -> CliResult {
    if words("receive", std::slice::from_ref(&a.session))?.len() != 1 {
        return Err(CliError::usage("receive takes one session"));
    }
    let client = connect().await?;
    let view = View {
        label: a.session.clone(),
        computer: if a.json {
            super::invoke::session_computer(&a.session)
        } else {
            "localhost".into()
        },
        session: a.session.clone(),
        json: a.json,
        to: Default::default(),
    };
    stream(client.into_receive(&a.session, a.keep), view, false).await
}
