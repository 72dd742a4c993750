//! `tether`: PowerShell-style persistent sessions for Unix. This file only dispatches; each
//! subcommand lives in `cli/`.

mod cli;

fn main() {
    let code = cli::main();
    std::process::exit(code);
}
