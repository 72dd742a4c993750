//! tether's environment variables (`TETHER_*`), read once per process.
//!
//! Each tether process (a CLI call, the daemon, a session host) reads its environment once into
//! one [`Settings`]: the binary's `main` installs it with [`init`] at start, and library code
//! asks [`get`], which reads the environment itself on first use when no binary installed one
//! (a program using the client library, a test). The CLI starts the daemon and the daemon
//! starts session hosts each with their own environment, so "once per process" is once per
//! role. `docs/CONFIGURATION.md` has the table of every variable; each field below says what
//! its variable does and its default.
//!
//! A value that does not parse never stops a process: the default is used, exactly as if the
//! variable were not set, and [`Settings::warnings`] names the variable and the value (the
//! daemon logs them when it starts, `tether doctor` lists them, `-v` shows them for a CLI
//! call).
//!
//! Two variables are read by the CLI's argument parser instead, so that `--help` shows them and
//! a flag overrides them: `TETHER_SYSTEM` (as `--system`) and `TETHER_COMPLETE` (a completion
//! request). Their names are in [`vars`] with the others. `HOME` and `XDG_STATE_HOME`, which
//! give the default `TETHER_HOME`, are the user's environment rather than tether settings and
//! are read where the home is resolved (`tether_transport::paths`).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// The names of tether's environment variables: the one place they are spelled.
pub mod vars {
    /// The home of a client and its daemon.
    pub const HOME: &str = "TETHER_HOME";
    /// Set by a system daemon for its session hosts (internal).
    pub const SHARED_AREA: &str = "TETHER_SHARED_AREA";
    /// Talk to the system daemon (read by the CLI's parser, as `--system`).
    pub const SYSTEM: &str = "TETHER_SYSTEM";
    /// The system daemon's state directory.
    pub const SYSTEM_HOME: &str = "TETHER_SYSTEM_HOME";
    /// The system daemon's configuration directory.
    pub const SYSTEM_CONFIGS: &str = "TETHER_SYSTEM_CONFIGS";
    /// The daemon's log filter.
    pub const LOG: &str = "TETHER_LOG";
    /// Size past which the daemon's log is rotated.
    pub const LOG_MAX_BYTES: &str = "TETHER_LOG_MAX_BYTES";
    /// Kept output per session or job.
    pub const OUTPUT_QUOTA: &str = "TETHER_OUTPUT_QUOTA";
    /// Kept output held in memory before spooling.
    pub const OUTPUT_MEMORY: &str = "TETHER_OUTPUT_MEMORY";
    /// Session cgroups on or off.
    pub const CGROUP: &str = "TETHER_CGROUP";
    /// Spare hosts kept per configuration.
    pub const POOL_MAX: &str = "TETHER_POOL_MAX";
    /// How long a spare host is kept unused.
    pub const POOL_IDLE: &str = "TETHER_POOL_IDLE";
    /// Open connections to a daemon at most.
    pub const MAX_CONNECTIONS: &str = "TETHER_MAX_CONNECTIONS";
    /// Open connections one user may have to the system daemon.
    pub const MAX_CONNECTIONS_PER_USER: &str = "TETHER_MAX_CONNECTIONS_PER_USER";
    /// Live sessions one user may have in the system daemon.
    pub const MAX_SESSIONS_PER_USER: &str = "TETHER_MAX_SESSIONS_PER_USER";
    /// Jobs one user may keep in the system daemon.
    pub const MAX_JOBS_PER_USER: &str = "TETHER_MAX_JOBS_PER_USER";
    /// The smallest idle timeout a user may ask for.
    pub const MIN_IDLE_TIMEOUT: &str = "TETHER_MIN_IDLE_TIMEOUT";
    /// How long a broken connection to another computer is retried.
    pub const RECONNECT_TIMEOUT: &str = "TETHER_RECONNECT_TIMEOUT";
    /// How long an unused connection to another computer stays open.
    pub const CONNECTION_IDLE: &str = "TETHER_CONNECTION_IDLE";
    /// How long a new connection may take to send its first frame.
    pub const HELLO_TIMEOUT_MS: &str = "TETHER_HELLO_TIMEOUT_MS";
    /// The default shell of sessions.
    pub const SHELL: &str = "TETHER_SHELL";
    /// The ssh program.
    pub const SSH: &str = "TETHER_SSH";
    /// An ssh configuration file.
    pub const SSH_CONFIG: &str = "TETHER_SSH_CONFIG";
    /// What carries links to other computers: `ssh` or `native`.
    pub const TRANSPORT: &str = "TETHER_TRANSPORT";
    /// The tether command on other computers.
    pub const REMOTE_EXE: &str = "TETHER_REMOTE_EXE";
    /// `TETHER_HOME` for the daemons on other computers.
    pub const REMOTE_HOME: &str = "TETHER_REMOTE_HOME";
    /// The program run to start a daemon.
    pub const EXE: &str = "TETHER_EXE";
    /// The program run as a session host.
    pub const HOST_EXE: &str = "TETHER_HOST_EXE";
    /// A shell completion request (read by the CLI's completer).
    pub const COMPLETE: &str = "TETHER_COMPLETE";

    /// Every variable above.
    pub const ALL: &[&str] = &[
        HOME,
        SHARED_AREA,
        SYSTEM,
        SYSTEM_HOME,
        SYSTEM_CONFIGS,
        LOG,
        LOG_MAX_BYTES,
        OUTPUT_QUOTA,
        OUTPUT_MEMORY,
        CGROUP,
        POOL_MAX,
        POOL_IDLE,
        MAX_CONNECTIONS,
        MAX_CONNECTIONS_PER_USER,
        MAX_SESSIONS_PER_USER,
        MAX_JOBS_PER_USER,
        MIN_IDLE_TIMEOUT,
        RECONNECT_TIMEOUT,
        CONNECTION_IDLE,
        HELLO_TIMEOUT_MS,
        SHELL,
        SSH,
        SSH_CONFIG,
        TRANSPORT,
        REMOTE_EXE,
        REMOTE_HOME,
        EXE,
        HOST_EXE,
        COMPLETE,
    ];
}

/// Where a system daemon keeps its state unless `TETHER_SYSTEM_HOME` says otherwise.
pub const DEFAULT_SYSTEM_HOME: &str = "/var/lib/tether";
/// Where a system daemon reads configurations unless `TETHER_SYSTEM_CONFIGS` says otherwise.
pub const DEFAULT_SYSTEM_CONFIGS: &str = "/etc/tether/configurations";
/// Size past which the daemon's log is rotated, unless `TETHER_LOG_MAX_BYTES` says otherwise.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Kept output per session or job, unless `TETHER_OUTPUT_QUOTA` says otherwise.
pub const DEFAULT_OUTPUT_QUOTA: usize = 1 << 30;
/// Spare hosts per configuration, unless `TETHER_POOL_MAX` says otherwise.
pub const DEFAULT_POOL_MAX: usize = 32;
/// How long a spare host is kept unused, unless `TETHER_POOL_IDLE` says otherwise.
pub const DEFAULT_POOL_IDLE: Duration = Duration::from_secs(60);
/// Open connections to a daemon at most, unless `TETHER_MAX_CONNECTIONS` says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Sessions and jobs per user in a system daemon, unless the `TETHER_MAX_*_PER_USER` say
/// otherwise.
pub const DEFAULT_PER_USER: usize = 64;
/// The smallest idle timeout a user may ask for, unless `TETHER_MIN_IDLE_TIMEOUT` lowers it.
pub const DEFAULT_MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a broken connection is retried, unless `TETHER_RECONNECT_TIMEOUT` says otherwise.
pub const DEFAULT_RECONNECT_TIMEOUT: Duration = Duration::from_secs(240);
/// How long an unused connection stays open, unless `TETHER_CONNECTION_IDLE` says otherwise.
pub const DEFAULT_CONNECTION_IDLE: Duration = Duration::from_secs(600);
/// How long a new connection may take to send its first frame, unless
/// `TETHER_HELLO_TIMEOUT_MS` says otherwise.
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything tether takes from its environment, typed, with the defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `TETHER_HOME`: the home of this client and its daemon (state, sockets, logs). Unset or
    /// empty: `None`, and the home is `$XDG_STATE_HOME/tether`, else `~/.local/state/tether`.
    pub home: Option<PathBuf>,
    /// `TETHER_SHARED_AREA`: `1` when this process is a session host of a system daemon, in
    /// one user's area of its tree (set by the daemon; default false).
    pub shared_area: bool,
    /// `TETHER_SYSTEM_HOME`: the system daemon's state directory (default
    /// [`DEFAULT_SYSTEM_HOME`]).
    pub system_home: PathBuf,
    /// `TETHER_SYSTEM_CONFIGS`: the system daemon's configuration directory (default
    /// [`DEFAULT_SYSTEM_CONFIGS`]).
    pub system_configs: PathBuf,
    /// `TETHER_LOG`: the daemon's log filter (tracing's `EnvFilter` syntax), as given; `None`
    /// when unset, and the daemon logs at `info`, as it does for a filter that does not parse.
    pub log: Option<String>,
    /// `TETHER_LOG_MAX_BYTES`: size past which the daemon's log is rotated: bytes, or a number
    /// with K, M or G (default [`DEFAULT_LOG_MAX_BYTES`], 8 MiB).
    pub log_max_bytes: u64,
    /// `TETHER_OUTPUT_QUOTA`: bytes of output kept per session (while nobody receives it) or job
    /// child, when the session does not set its own (default [`DEFAULT_OUTPUT_QUOTA`], 1 GiB).
    pub output_quota: usize,
    /// `TETHER_OUTPUT_MEMORY`: bytes of a session's kept output held in memory before the rest
    /// spools to disk (`0`: all of it spools). `None`: the host's default, 16 MiB (1 MiB for a
    /// system daemon's hosts).
    pub output_memory: Option<usize>,
    /// `TETHER_CGROUP`: whether a session host puts its session in a cgroup of its own where it
    /// can; `0`, `off`, `no` or `false` turn that off (default true).
    pub cgroup: bool,
    /// `TETHER_POOL_MAX`: spare hosts kept per configuration for temporary invocations from
    /// other computers; `0` turns spares off (default [`DEFAULT_POOL_MAX`], 32).
    pub pool_max: usize,
    /// `TETHER_POOL_IDLE`: how long a spare host is kept unused, in whole seconds, at least 1
    /// (default [`DEFAULT_POOL_IDLE`], 60 s).
    pub pool_idle: Duration,
    /// `TETHER_MAX_CONNECTIONS`: open connections a daemon serves at once, more than 0 (default
    /// [`DEFAULT_MAX_CONNECTIONS`], 4096).
    pub max_connections: usize,
    /// `TETHER_MAX_CONNECTIONS_PER_USER`: open connections one user may have to the system
    /// daemon, more than 0 (default a quarter of [`Settings::max_connections`], at least 1).
    pub max_connections_per_user: usize,
    /// `TETHER_MAX_SESSIONS_PER_USER`: live sessions one user may have in the system daemon,
    /// temporary ones included, more than 0 (default [`DEFAULT_PER_USER`], 64).
    pub max_sessions_per_user: usize,
    /// `TETHER_MAX_JOBS_PER_USER`: jobs one user may keep in the system daemon, more than 0
    /// (default [`DEFAULT_PER_USER`], 64).
    pub max_jobs_per_user: usize,
    /// `TETHER_MIN_IDLE_TIMEOUT`: the smallest idle timeout a user may ask for, in whole seconds
    /// (default [`DEFAULT_MIN_IDLE_TIMEOUT`], 60 s; tests lower it).
    pub min_idle_timeout: Duration,
    /// `TETHER_RECONNECT_TIMEOUT`: how long a broken connection to another computer is retried,
    /// in whole seconds (default [`DEFAULT_RECONNECT_TIMEOUT`], 240 s).
    pub reconnect_timeout: Duration,
    /// `TETHER_CONNECTION_IDLE`: how long an unused connection to another computer stays open:
    /// whole seconds, or a duration such as `90s`, `10m` (default [`DEFAULT_CONNECTION_IDLE`],
    /// 10 min).
    pub connection_idle: Duration,
    /// `TETHER_HELLO_TIMEOUT_MS`: how long a new connection to a daemon may take to send its
    /// first frame, in whole milliseconds (default [`DEFAULT_HELLO_TIMEOUT`], 60 s).
    pub hello_timeout: Duration,
    /// `TETHER_SHELL`: the shell of sessions whose configuration says `engine = "bash"` or
    /// nothing. Unset or empty: `None`, and bash is looked for, else `/bin/sh`.
    pub shell: Option<String>,
    /// `TETHER_SSH`: the ssh program for other computers. Unset or empty: `None` (`ssh`).
    pub ssh: Option<String>,
    /// `TETHER_SSH_CONFIG`: an ssh configuration file, as `--ssh-config` (which wins). Unset or
    /// empty: `None`.
    pub ssh_config: Option<String>,
    /// `TETHER_TRANSPORT`: what carries links to other computers, as `--transport` (which
    /// wins): `ssh` (default: the system's ssh program, one process per computer) or `native`
    /// (an SSH client inside the daemon, for big fleets).
    pub transport: tether_proto::Transport,
    /// `TETHER_REMOTE_EXE`: the tether command on other computers. Unset or empty: `None`
    /// (`tether`, else the copy tether puts there).
    pub remote_exe: Option<String>,
    /// `TETHER_REMOTE_HOME`: `TETHER_HOME` for the daemons on other computers. Unset or empty:
    /// `None` (their own default).
    pub remote_home: Option<String>,
    /// `TETHER_EXE`: the program run as `… daemon start` when no daemon runs. Unset or empty:
    /// `None`
    /// (this executable if it is named `tether` or `tether-…`, else `tether` on PATH).
    pub exe: Option<PathBuf>,
    /// `TETHER_HOST_EXE`: the program a daemon runs as a session host. Unset: `None` (the
    /// daemon's own executable).
    pub host_exe: Option<PathBuf>,
    warnings: Vec<Warning>,
}

/// A variable whose value was not used: it did not parse, or was out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The variable's name.
    pub var: &'static str,
    /// Its value (lossily, when it is not UTF-8).
    pub value: String,
    /// What was expected instead.
    pub expected: &'static str,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ignoring {}={:?}: expected {}; the default applies",
            self.var, self.value, self.expected
        )
    }
}

impl Default for Settings {
    /// The defaults: an empty environment.
    fn default() -> Settings {
        Settings::from_os_vars(std::iter::empty::<(OsString, OsString)>())
    }
}

/// The variables being read, and what was wrong with them.
struct Reader {
    vars: HashMap<String, OsString>,
    warnings: Vec<Warning>,
}

const WHOLE: &str = "a whole number";
const POSITIVE: &str = "a whole number more than 0";
const SECONDS: &str = "a whole number of seconds";

impl Reader {
    fn os(&self, name: &str) -> Option<&OsStr> {
        self.vars.get(name).map(|v| v.as_os_str())
    }

    fn warn(&mut self, var: &'static str, expected: &'static str) {
        let value = self
            .os(var)
            .map_or_else(String::new, |v| v.to_string_lossy().into_owned());
        self.warnings.push(Warning {
            var,
            value,
            expected,
        });
    }

    /// The value as text (not UTF-8: a warning, and as if unset).
    fn text(&mut self, var: &'static str) -> Option<String> {
        match self.os(var)?.to_str() {
            Some(s) => Some(s.to_owned()),
            None => {
                self.warn(var, "UTF-8 text");
                None
            }
        }
    }

    /// The value as text, unset when empty.
    fn nonempty(&mut self, var: &'static str) -> Option<String> {
        self.text(var).filter(|s| !s.is_empty())
    }

    /// A path, unset when empty.
    fn path(&self, var: &'static str) -> Option<PathBuf> {
        self.os(var).filter(|v| !v.is_empty()).map(PathBuf::from)
    }

    /// The value parsed by `parse`; one that does not parse is a warning, and as if unset.
    fn parsed<T>(
        &mut self,
        var: &'static str,
        expected: &'static str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Option<T> {
        let text = self.text(var)?;
        let value = parse(&text);
        if value.is_none() {
            self.warn(var, expected);
        }
        value
    }

    fn number<T: std::str::FromStr>(&mut self, var: &'static str) -> Option<T> {
        self.parsed(var, WHOLE, |s| s.parse().ok())
    }

    fn positive(&mut self, var: &'static str) -> Option<usize> {
        self.parsed(var, POSITIVE, |s| s.parse().ok().filter(|n| *n > 0))
    }

    fn seconds(&mut self, var: &'static str) -> Option<Duration> {
        self.parsed(var, SECONDS, |s| s.parse().ok().map(Duration::from_secs))
    }
}

impl Settings {
    /// Reads this process's environment.
    pub fn from_env() -> Settings {
        Settings::from_os_vars(std::env::vars_os())
    }

    /// Reads these variables instead of the environment (tests; variables not named `TETHER_…`
    /// are ignored).
    pub fn from_vars<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Settings {
        Settings::from_os_vars(
            vars.into_iter()
                .map(|(k, v)| (OsString::from(k.into()), OsString::from(v.into()))),
        )
    }

    /// Reads these variables, as the operating system gives them.
    pub fn from_os_vars(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Settings {
        let vars = vars
            .into_iter()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v)))
            .filter(|(k, _)| k.starts_with("TETHER_"))
            .collect();
        let mut r = Reader {
            vars,
            warnings: Vec::new(),
        };
        use vars::*;
        let max_connections = r
            .positive(MAX_CONNECTIONS)
            .unwrap_or(DEFAULT_MAX_CONNECTIONS);
        let cgroup = match r.text(CGROUP) {
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "0" | "off" | "no" | "false" => false,
                "" | "1" | "on" | "yes" | "true" => true,
                _ => {
                    r.warn(CGROUP, "0, off, no or false (or 1, on, yes, true)");
                    true
                }
            },
            None => true,
        };
        Settings {
            home: r.path(HOME),
            shared_area: r.os(SHARED_AREA).is_some_and(|v| v == "1"),
            system_home: r
                .path(SYSTEM_HOME)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SYSTEM_HOME)),
            system_configs: r
                .path(SYSTEM_CONFIGS)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SYSTEM_CONFIGS)),
            log: r.text(LOG),
            log_max_bytes: r
                .parsed(LOG_MAX_BYTES, "bytes, or a number with K, M or G", |s| {
                    tether_proto::parse_size(s.trim()).ok()
                })
                .unwrap_or(DEFAULT_LOG_MAX_BYTES),
            output_quota: r.positive(OUTPUT_QUOTA).unwrap_or(DEFAULT_OUTPUT_QUOTA),
            output_memory: r.number(OUTPUT_MEMORY),
            cgroup,
            pool_max: r.number(POOL_MAX).unwrap_or(DEFAULT_POOL_MAX),
            pool_idle: r
                .seconds(POOL_IDLE)
                .map_or(DEFAULT_POOL_IDLE, |d| d.max(Duration::from_secs(1))),
            max_connections,
            max_connections_per_user: r
                .positive(MAX_CONNECTIONS_PER_USER)
                .unwrap_or((max_connections / 4).max(1)),
            max_sessions_per_user: r
                .positive(MAX_SESSIONS_PER_USER)
                .unwrap_or(DEFAULT_PER_USER),
            max_jobs_per_user: r.positive(MAX_JOBS_PER_USER).unwrap_or(DEFAULT_PER_USER),
            min_idle_timeout: r
                .seconds(MIN_IDLE_TIMEOUT)
                .unwrap_or(DEFAULT_MIN_IDLE_TIMEOUT),
            reconnect_timeout: r
                .seconds(RECONNECT_TIMEOUT)
                .unwrap_or(DEFAULT_RECONNECT_TIMEOUT),
            connection_idle: r
                .parsed(
                    CONNECTION_IDLE,
                    "a whole number of seconds or a duration such as 90s or 10m",
                    |s| {
                        s.parse::<u64>()
                            .ok()
                            .map(Duration::from_secs)
                            .or_else(|| humantime::parse_duration(s).ok())
                    },
                )
                .unwrap_or(DEFAULT_CONNECTION_IDLE),
            hello_timeout: r
                .parsed(HELLO_TIMEOUT_MS, "a whole number of milliseconds", |s| {
                    s.parse().ok().map(Duration::from_millis)
                })
                .unwrap_or(DEFAULT_HELLO_TIMEOUT),
            shell: r.nonempty(SHELL),
            ssh: r.nonempty(SSH),
            ssh_config: r.nonempty(SSH_CONFIG),
            transport: r
                .parsed(TRANSPORT, "ssh or native", |s| {
                    match s.trim().to_ascii_lowercase().as_str() {
                        "ssh" => Some(tether_proto::Transport::Ssh),
                        "native" => Some(tether_proto::Transport::Native),
                        _ => None,
                    }
                })
                .unwrap_or_default(),
            remote_exe: r.nonempty(REMOTE_EXE),
            remote_home: r.nonempty(REMOTE_HOME),
            exe: r.os(EXE).filter(|v| !v.is_empty()).map(PathBuf::from),
            host_exe: r.os(HOST_EXE).filter(|v| !v.is_empty()).map(PathBuf::from),
            warnings: r.warnings,
        }
    }

    /// The variables whose values were not used (each once).
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }
}

static GLOBAL: OnceLock<Settings> = OnceLock::new();

/// This process's settings: the ones [`init`] installed, else the environment's, read on the
/// first call.
pub fn get() -> &'static Settings {
    GLOBAL.get_or_init(Settings::from_env)
}

/// Installs this process's settings (a binary's `main`, at start, before anything asks
/// [`get`]). False when settings were already in place: they stay.
pub fn init(settings: Settings) -> bool {
    GLOBAL.set(settings).is_ok()
}

#[cfg(test)]
mod tests;
