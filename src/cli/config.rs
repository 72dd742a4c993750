//! `tether config list|show` (SPEC §3.19): the session configurations of this computer's
//! daemon, or of another computer's.

use super::error::{CliError, CliResult};
use super::{connect, remote};
use clap::{Args, Subcommand};
use comfy_table::{Table, presets::NOTHING};
use tether_client::{ConfigQuery, ErrorKind};

#[derive(Args, Debug)]
pub struct ConfigArgs {
    #[command(subcommand)]
    cmd: ConfigCmd,
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// List configurations (with the error of any that cannot be used).
    List {
        #[arg(long)]
        computer: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one configuration's file.
    Show {
        name: String,
        #[arg(long)]
        computer: Option<String>,
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
    let remote = match computer.as_deref() {
        Some(c) if !remote::is_local(c) => Some(remote::target(c, &super::ssh_flags())?),
        _ => None,
    };
    let show = name.is_some();
    let mut client = connect().await?;
    let configs = client.configs(ConfigQuery { name, remote }).await?;
    if json {
        println!(
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
        println!("# {} ({})", c.name, c.file);
        print!("{}", c.text);
        return Ok(0);
    }
    let mut table = Table::new();
    table.load_style(NOTHING);
    table.set_header(vec!["Name", "Engine", "File", "Error"]);
    for c in &configs {
        table.add_row(vec![
            c.name.clone(),
            c.engine.clone(),
            c.file.clone(),
            c.error.clone().unwrap_or_default(),
        ]);
    }
    for line in table.to_string().lines() {
        println!("{}", line.trim_end());
    }
    Ok(0)
}
