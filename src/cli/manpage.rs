//! `tether man [--dir DIR]`: manual pages generated from the command definitions, so they
//! always match the installed binary's flags and examples.

use super::error::{CliError, CliResult};
use clap::{Args, CommandFactory};
use clap_mangen::Man;
use std::io::Write;
use std::path::{Path, PathBuf};
use tether_client::ErrorKind;

pub const EXAMPLES: &str = "Examples:\n  \
tether man | man -l -                     # read tether(1) now\n  \
tether man --dir ~/.local/share/man/man1  # tether.1, tether-invoke.1, tether-job-list.1, …";

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write one page per command and subcommand (tether.1, tether-invoke.1, …) into DIR,
    /// creating it if needed, instead of printing tether.1.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub fn run(a: ManArgs) -> CliResult {
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    // Building gives each subcommand its display name (`tether-invoke`), which names its page.
    cmd.build();
    let fail = |what: &dyn std::fmt::Display, e: std::io::Error| {
        CliError::new(ErrorKind::Internal, format!("man: {what}: {e}"))
    };
    match a.dir {
        None => {
            let page = render(cmd).map_err(|e| fail(&"rendering", e))?;
            match std::io::stdout().write_all(&page) {
                // `tether man | head` is not an error.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(fail(&"stdout", e));
                }
                _ => {}
            }
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).map_err(|e| fail(&dir.display(), e))?;
            let mut written = Vec::new();
            write_all(cmd, &dir, &mut written).map_err(|e| fail(&dir.display(), e))?;
            for p in written {
                outln!("{}", p.display());
            }
        }
    }
    Ok(0)
}

/// Writes `cmd`'s page and its visible subcommands' pages, recording each file written.
fn write_all(cmd: clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_all(sub.clone(), dir, written)?;
    }
    let path = dir.join(Man::new(cmd.clone()).get_filename());
    std::fs::write(&path, render(cmd)?)?;
    written.push(path);
    Ok(())
}

/// One page. Our `after_help` text is always examples, so its section is called EXAMPLES (the
/// conventional name) rather than clap_mangen's generic EXTRA.
fn render(cmd: clap::Command) -> std::io::Result<Vec<u8>> {
    let mut page = Vec::new();
    Man::new(cmd).render(&mut page)?;
    let text = String::from_utf8_lossy(&page).replace(".SH EXTRA\n", ".SH EXAMPLES\n");
    Ok(text.into_bytes())
}
