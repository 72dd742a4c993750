//! `tether config list|show` (SPEC §3.19): the session configurations of this computer's
//! daemon, or of another computer's.

use super::error::{CliError, CliResult};
use super::output::Rows;
use super::{connect, remote};
use clap::{Args, Subcommand};
use tether_client::{ConfigQuery, ErrorKind};

#[derive(Args, Debug)]
pub struct ConfigArgs {
    #[command(subcommand)]
    cmd: ConfigCmd,
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// List configurations (with the error of any that cannot be used).
    #[command(
        after_help = "Examples:\n  tether config list\n  tether config list --computer db1 --json"
    )]
    List {
        /// Ask this computer's daemon (default: this computer).
        #[arg(long)]
        computer: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one configuration's file.
    #[command(
        after_help = "Examples:\n  tether config show default\n  tether config show ops --computer db1 --json"
    )]
    Show {
        /// The configuration's name.
        #[arg(add = super::completions::configurations())]
        name: String,
        /// Ask this computer's daemon (default: this computer).
        #[arg(long)]
        computer: Option<String>,
        /// Print JSON (name, file, engine, error, text).
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(a: ConfigArgs) -> CliResult {
    let (name, computer, json) = match a.cmd {
        ConfigCmd::List { computer, json } => (None, computer, json),
        ConfigCmd::Show {
            name,
            computer,
            json,
        } => (Some(name), computer, json),
    };
    let computer = match &computer {
        Some(c) => match remote::computers("--computer", std::slice::from_ref(c))?.as_slice() {
            [one] => Some(one.clone()),
            _ => return Err(CliError::usage("config --computer takes one computer")),
        },
        None => None,
    };
    let remote = match computer.as_deref() {
        Some(c) if !remote::is_local(c) => Some(remote::target(c, &super::ssh_flags())?),
        _ => None,
    };
    let show = name.is_some();
    let mut client = connect().await?;
    let configs = client.configs(ConfigQuery { name, remote }).await?;
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&configs).unwrap_or_else(|_| "[]".into())
        );
        return Ok(0);
    }
    if show {
        let Some(c) = configs.first() else {
            return Ok(0);
        };
        if let Some(e) = &c.error {
            return Err(CliError::new(ErrorKind::Usage, e.clone()));
        }
        outln!("# {} ({})", c.name, c.file);
        out!("{}", c.text);
        return Ok(0);
    }
    let mut rows = Rows::new(vec!["Name", "Engine", "File", "Error"]);
    for c in &configs {
        rows.push(vec![
            c.name.clone(),
            c.engine.clone(),
            c.file.clone(),
            c.error.clone().unwrap_or_default(),
        ]);
    }
    rows.print();
    Ok(0)
}
