//! Command-line definitions and dispatch. Each subcommand's behaviour is in its own file.

/// `print!` for a command's output: see [`stream::out`] (a closed stdout ends the command with
/// status 141 instead of a panic).
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::stream::out(format_args!($($t)*)) };
}

/// `eprint!` for tether's own messages: see [`stream::err`] (a closed stderr loses the message,
/// not the status).
macro_rules! err {
    ($($t:tt)*) => { $crate::cli::stream::err(format_args!($($t)*)) };
}

/// `eprintln!` for tether's own messages: see [`stream::err`].
macro_rules! errln {
    ($($t:tt)*) => { $crate::cli::stream::err(format_args!("{}\n", format_args!($($t)*))) };
}

/// `println!` for a command's output: see [`stream::out`].
macro_rules! outln {
    () => { $crate::cli::stream::out(format_args!("\n")) };
    ($($t:tt)*) => { $crate::cli::stream::out(format_args!("{}\n", format_args!($($t)*))) };
}

mod attach;
mod bridge;
mod completions;
mod config;
mod copy;
mod daemon;
mod doctor;
mod dur;
mod enter;
mod error;
mod hostlog;
mod install;
mod invoke;
mod jobs;
mod logging;
mod manpage;
mod output;
mod remote;
mod sessions;
mod stream;

use clap::{Parser, Subcommand};
use error::{CliError, CliResult};
use tether_client::{Client, Paths};

#[derive(Parser, Debug)]
#[command(
    name = "tether",
    version,
    about = "PowerShell-style persistent sessions for Unix",
    long_about = "PowerShell-style persistent sessions for Unix: named shells that keep their \
state, run one command at a time with separate stdout, stderr and exit status, and outlive the \
client that created them.",
    after_help = "Examples:\n  tether new --name web\n  tether invoke -s web 'cd /srv; x=1'\n  \
tether invoke -s web 'echo $x $PWD'\n  tether get\n  tether remove web"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log this call's steps to stderr: -v info, -vv debug, -vvv trace (overrides TETHER_LOG).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// ssh configuration file for other computers (passed to ssh as -F).
    #[arg(long, global = true, value_name = "FILE")]
    ssh_config: Option<std::path::PathBuf>,
    /// An ssh option for other computers, as Key=Value (repeatable; passed to ssh as -o).
    #[arg(long, global = true, value_name = "K=V")]
    ssh_option: Vec<String>,
    /// How long reaching another computer may take before it counts as unreachable.
    #[arg(long, global = true, value_name = "DUR", value_parser = dur::parse)]
    connect_timeout: Option<std::time::Duration>,
    /// What carries links to other computers: the system's ssh (default; one process per
    /// computer) or native (an SSH client inside the daemon, for big fleets; env
    /// TETHER_TRANSPORT).
    #[arg(long, global = true, value_name = "ssh|native", value_parser = parse_transport)]
    transport: Option<tether_proto::Transport>,
    /// Use the system daemon (one root daemon for every user) instead of your own.
    #[arg(long, global = true, env = tether_settings::vars::SYSTEM, value_parser = clap::builder::FalseyValueParser::new())]
    system: bool,
}

static SYSTEM: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether `--system` (or `TETHER_SYSTEM`) was given.
pub fn system_mode() -> bool {
    SYSTEM.load(std::sync::atomic::Ordering::Relaxed)
}

/// The daemon this command talks to: the system daemon with `--system`, else the user's own
/// (`TETHER_HOME`).
pub fn daemon_paths() -> std::io::Result<Paths> {
    if system_mode() {
        Ok(Paths::system())
    } else {
        Paths::from_env()
    }
}

fn parse_transport(s: &str) -> Result<tether_proto::Transport, String> {
    match s {
        "ssh" => Ok(tether_proto::Transport::Ssh),
        "native" => Ok(tether_proto::Transport::Native),
        _ => Err("expected ssh or native".into()),
    }
}

static SSH_FLAGS: std::sync::OnceLock<remote::SshFlags> = std::sync::OnceLock::new();

/// The ssh flags given on the command line, for the commands that reach other computers.
pub fn ssh_flags() -> remote::SshFlags {
    SSH_FLAGS.get().cloned().unwrap_or_default()
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create persistent sessions (New-PSSession).
    #[command(
        after_help = "Examples:\n  tether new --name web\n  tether new --name build --idle-timeout 0 --json"
    )]
    New(sessions::NewArgs),
    /// List sessions (Get-PSSession).
    #[command(
        after_help = "Examples:\n  tether get\n  tether get --name 'web*' --json\n  tether get --state Broken"
    )]
    Get(sessions::GetArgs),
    /// Run a command in sessions (Invoke-Command).
    #[command(
        after_help = "Examples:\n  tether invoke -s web 'systemctl status nginx'\n  \
tether invoke -s web --arg \"$file\" 'wc -l \"$1\"'\n  tar c . | tether invoke -s web 'tar x'\n  \
tether invoke 'uname -a'   # a temporary local session"
    )]
    Invoke(invoke::InvokeArgs),
    /// Close sessions and forget their handles (Remove-PSSession).
    #[command(
        after_help = "Examples:\n  tether remove web\n  tether remove 1 2\n  tether remove --all"
    )]
    Remove(sessions::RemoveArgs),
    /// Detach sessions; running commands go on (Disconnect-PSSession).
    #[command(
        after_help = "Examples:\n  tether disconnect web\n  tether receive web   # later, from any client"
    )]
    Disconnect(attach::DisconnectArgs),
    /// Reattach disconnected sessions, or adopt them from another computer (Connect-PSSession).
    #[command(
        after_help = "Examples:\n  tether connect web\n  tether connect --computer db1 --name nightly"
    )]
    Connect(attach::ConnectArgs),
    /// Collect what a disconnected command wrote, then the rest of it (Receive-PSSession).
    #[command(after_help = "Example:\n  tether receive web > build.log; echo \"status $?\"")]
    Receive(attach::ReceiveArgs),
    /// Open an interactive prompt in a session (Enter-PSSession).
    #[command(
        after_help = "Examples:\n  tether enter web\n  tether enter --computer db1   # a temporary session"
    )]
    Enter(enter::EnterArgs),
    /// Print a shell completion script (bash, zsh or fish) that also completes session names.
    #[command(after_help = completions::EXAMPLES)]
    Completions(completions::CompletionsArgs),
    /// Print the manual page, or write one page per subcommand into a directory.
    #[command(after_help = manpage::EXAMPLES)]
    Man(manpage::ManArgs),
    /// Manage background jobs (Get-Job, Wait-Job, Receive-Job, Stop-Job, Remove-Job).
    #[command(
        after_help = "Examples:\n  tether invoke -s web --as-job './build.sh'\n  tether job list\n  \
tether job wait 1 --timeout 10m\n  tether job receive 1 --keep\n  tether job remove 1"
    )]
    Job(jobs::JobArgs),
    /// Copy files and trees between this computer and a session (Copy-Item -ToSession).
    #[command(
        after_help = "Examples:\n  tether copy app.tar.gz web:/srv/\n  tether copy -rp ./site web:/srv/site\n  \
tether copy web:/var/log/nginx/access.log .\n  tether copy --computer db1 dump.sql :/tmp/"
    )]
    Copy(copy::CopyArgs),
    /// Internal: one side of a copy (run by `tether copy`, here and in the session).
    #[command(name = "__copy", hide = true)]
    CopySide(copy::CopySideArgs),
    /// Session configurations of this or another computer.
    #[command(
        after_help = "Examples:\n  tether config list\n  tether config show ops --computer db1"
    )]
    Config(config::ConfigArgs),
    /// Manage the per-user daemon that keeps sessions.
    #[command(
        after_help = "Examples:\n  tether daemon status\n  tether daemon restart   # after an upgrade\n  tether daemon stop"
    )]
    Daemon(daemon::DaemonArgs),
    /// Check this computer (and others) for what tether needs, and say what to fix.
    #[command(after_help = "Examples:\n  tether doctor\n  tether doctor --computer db1 --json")]
    Doctor(doctor::DoctorArgs),
    /// Connect stdin/stdout to this computer's daemon (run by ssh on the target).
    #[command(after_help = "Example (what a client runs):\n  ssh -T host tether bridge")]
    Bridge(bridge::BridgeArgs),
    /// Internal: a session host (started by the daemon).
    #[command(name = "__host", hide = true)]
    Host,
    /// Internal: a restricted session's leader (started by its host).
    #[command(name = "__leader", hide = true)]
    Leader,
    /// Internal: moves a session terminal's foreground (run by the session's shell).
    #[command(name = "__tty", hide = true)]
    Tty { what: String },
}

/// Parses arguments, runs the command, prints any error as one line, and returns the exit status.
pub fn main() -> i32 {
    // This process's `TETHER_*` settings, read once (a daemon forked from here keeps them; a
    // session host is a process of its own and reads its own).
    let _ = tether_settings::init(tether_settings::Settings::from_env());
    completions::complete_from_env();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            errln!("tether: {}", e.message);
            e.kind.exit_code()
        }
    }
}

fn run(cli: Cli) -> CliResult {
    SYSTEM.store(cli.system, std::sync::atomic::Ordering::Relaxed);
    daemon::announce_replacements();
    let _ = SSH_FLAGS.set(remote::SshFlags {
        config: cli.ssh_config.clone(),
        options: cli.ssh_option.clone(),
        connect_timeout: cli.connect_timeout,
        transport: cli.transport,
    });
    match cli.command {
        // These two fork or block before any runtime exists.
        Command::Daemon(args) => daemon::run(args),
        Command::Host => daemon::run_host(),
        Command::Leader => Ok(tether_engine::leader::run().map(|()| 0)?),
        // A copy is two processes joined by a pipe; neither side needs a runtime here.
        Command::Copy(a) => copy::run(a),
        Command::CopySide(a) => copy::side(a),
        Command::Tty { what } => match tether_engine::foreground::Move::parse(&what) {
            Some(how) => Ok(tether_engine::foreground::run(how)),
            None => Err(CliError::usage(format!("__tty: unknown move {what:?}"))),
        },
        command => {
            logging::init(cli.verbose);
            // Seen with -v; the daemon logs them, and `tether doctor` lists them.
            for w in tether_settings::get().warnings() {
                tracing::warn!("{w}");
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                match command {
                    Command::New(a) => sessions::new(a).await,
                    Command::Get(a) => sessions::get(a).await,
                    Command::Remove(a) => sessions::remove(a).await,
                    Command::Invoke(a) => invoke::run(a).await,
                    Command::Disconnect(a) => attach::disconnect(a).await,
                    Command::Connect(a) => attach::connect_cmd(a).await,
                    Command::Receive(a) => attach::receive(a).await,
                    Command::Bridge(a) => bridge::run(a).await,
                    Command::Job(a) => jobs::run(a).await,
                    Command::Enter(a) => enter::run(a).await,
                    Command::Config(a) => config::run(a).await,
                    Command::Completions(a) => completions::run(a),
                    Command::Man(a) => manpage::run(a),
                    Command::Doctor(a) => doctor::run(a).await,
                    Command::Daemon(_)
                    | Command::Host
                    | Command::Leader
                    | Command::Tty { .. }
                    | Command::Copy(_)
                    | Command::CopySide(_) => {
                        unreachable!("handled above")
                    }
                }
            })
        }
    }
}

/// Resolves `TETHER_HOME` (or the system daemon) and connects to its daemon, starting it if
/// needed (never the system daemon: root starts that).
pub async fn connect() -> Result<Client, CliError> {
    let paths = daemon_paths()?;
    Ok(Client::connect_or_start(&paths).await?)
}

/// The calling process's environment, captured for a new local session (SPEC §3.2).
pub fn captured_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

pub fn current_dir() -> Option<String> {
    std::env::current_dir()
        .ok()
        .and_then(|d| d.into_os_string().into_string().ok())
}
