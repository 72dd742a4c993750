//! Wire types shared by every tether process: the CLI, the client library, the daemon and the
//! session hosts.
//!
//! This crate is pure data: message enums, error kinds, the frame header and its size cap. It does
//! no I/O, so the same types can be golden-tested, fuzzed and reused over any transport (a unix
//! socket today, an ssh channel later).
//!
//! Encoding is postcard (a stable, compact, non-self-describing format). Because postcard cannot
//! skip unknown variants, compatibility is guarded by [`PROTOCOL_VERSION`] in the `Hello`
//! handshake, and a payload that does not decode is reported as [`DecodeError`], never a panic.

mod frame;
pub mod host;
mod ids;
mod jobs;
pub mod peer;
mod session;

pub use frame::{
    BULK_PREFIX_MAX, DecodeError, FRAME_HEADER_LEN, MAX_FRAME_LEN, bulk_frame_header, bulk_start,
    decode, encode, frame_len, output_data_len, output_frame_header, output_prefix,
    stdin_frame_header, stdin_prefix,
};
pub use ids::{is_instance_id, validate_client, validate_name, validate_word};
pub use jobs::{
    ChildJobInfo, JobChild, JobChunk, JobInfo, JobQuery, JobStart, SessionJob, SessionJobAction,
    SessionJobData,
};
pub use session::{Availability, SessionInfo, State};

use serde::{Deserialize, Serialize};

/// Bumped whenever a message changes shape. Peers with different versions refuse to talk.
pub const PROTOCOL_VERSION: u32 = 7;

/// Largest output chunk a host sends in one frame; keeps frames far below [`MAX_FRAME_LEN`].
pub const OUTPUT_CHUNK: usize = 64 * 1024;

/// Which output stream a chunk belongs to.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A request from a client to a daemon, or from a daemon to a session host.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Request {
    /// First frame on every connection. A client daemon names itself (`client`) to the daemons
    /// of other computers; without it the connection speaks for the daemon's own client.
    Hello {
        version: u32,
        agent: String,
        client: Option<ClientId>,
    },
    /// Create a session.
    New(NewSession),
    /// List sessions matching a filter.
    Get(SessionFilter),
    /// Close sessions and forget their handles.
    Remove(RemoveSpec),
    /// Run a command; the connection then carries its stdin, output and exit.
    Invoke(InvokeSpec),
    /// Standard input for the running invocation.
    Stdin(#[serde(with = "serde_bytes")] Vec<u8>),
    /// End of standard input for the running invocation.
    StdinEof,
    /// Stop the running invocation (Ctrl-C).
    Cancel,
    /// Daemon status.
    DaemonStatus,
    /// Ask the daemon to shut down.
    DaemonStop,
    /// Host only: report the session's live information.
    HostInfo,
    /// Host only: end the shell and everything it started, then exit.
    HostClose,
    /// Host only, sent by the daemon with the client's connection attached (SCM_RIGHTS): run
    /// this invocation and talk to that client directly. `prefix` holds bytes the daemon had
    /// already read from the client past the `Invoke` (pipelined stdin, say).
    Handoff {
        spec: InvokeSpec,
        #[serde(with = "serde_bytes")]
        prefix: Vec<u8>,
    },
    /// Detach sessions: a running command goes on, its output is kept (SPEC §3.11).
    Disconnect(SessionList),
    /// Reattach disconnected sessions (or, with `remote` and names, adopt sessions found there).
    Connect(SessionList),
    /// Stream the output a disconnected command produced, then its exit; the connection then
    /// carries that stream as for `Invoke` (`Output`… `Exit`).
    Receive(SessionList),
    /// Host only: detach the client of the running command and mark the session Disconnected.
    HostDisconnect(ClientId),
    /// Host only: mark a Disconnected session Opened again, held by this client.
    HostConnect(ClientId),
    /// Host only, with the client's connection attached: serve a `Receive` (or a `Resume`,
    /// from byte `from` of the output, acknowledged with `Ack`).
    HandoffReceive {
        #[serde(with = "serde_bytes")]
        prefix: Vec<u8>,
        from: Option<u64>,
        acked: bool,
        client: ClientId,
        keep_stdin: bool,
        /// `receive --keep`: nothing is consumed and the session is not reattached.
        keep: bool,
    },
    /// Continue an invocation's stream after a lost connection, from output byte `from`; the
    /// client acknowledges with `Ack`.
    /// `keep_stdin`: the invocation's own client is back and goes on feeding its stdin (the
    /// reply's `stdin_from` says from which byte); otherwise (a user's `receive`) stdin ends.
    /// `keep`: a `receive --keep` relayed from another computer (nothing is consumed).
    Resume {
        session: String,
        from: u64,
        keep_stdin: bool,
        keep: bool,
    },
    /// The client has the invocation's output up to this byte (and, past its end, the exit):
    /// the host may forget it.
    Ack(u64),
    /// A client daemon's link is up: the connection stays open while it is. Its end without a
    /// `Goodbye` means the client vanished, and its idle sessions become Disconnected
    /// (SPEC §3.13–14).
    Presence,
    /// The client closes its link on purpose and still holds its sessions.
    Goodbye,
    /// Host only: this client vanished; an idle session it holds becomes Disconnected.
    HostClientGone(ClientId),
    /// The client's terminal changed size (a line run on the session's terminal).
    Resize { rows: u16, cols: u16 },
    /// Start a job (`invoke --as-job`); answered with `Jobs` holding it.
    JobStart(JobStart),
    /// `job list`: answered with `Jobs`.
    JobList(JobQuery),
    /// `job wait`: answered with `Jobs` once the condition holds, or an error at the timeout.
    JobWait(JobQuery),
    /// `job receive`: answered with `JobOutput` frames, then `Ok`.
    JobReceive(JobQuery),
    /// `job stop`: answered with `Jobs`.
    JobStop(JobQuery),
    /// `job remove`: answered with `Ok`.
    JobRemove(JobQuery),
    /// A background job inside a session.
    SessionJob(SessionJob),
    /// `config list|show`: answered with `Configs`.
    Configs(ConfigQuery),
    /// Written by a bridge pinned to a configuration (`bridge --configuration`) before the
    /// client's bytes: only as a connection's first frame, and only then does it count.
    Pin(String),
    /// Host only, from its daemon, for a pooled host: answered with `Ok` each time the host
    /// is ready for another temporary invocation, until the host closes.
    HostPoolWatch,
    /// Written by an unpinned `tether bridge` before any byte of its client's: the connection
    /// comes from another computer, so the client's environment and directory are not
    /// believed. Honoured only as a connection's first frame.
    /// `agent`: the bridge's own `SSH_AUTH_SOCK` (an agent forwarded by the client's ssh),
    /// which sessions this client makes reach through a stable per-client link; the daemon
    /// checks it (an absolute path to a socket of its own user) before using it.
    Bridged { agent: Option<String> },
    /// During an invocation: the client is leaving for good (its output was closed, or it was
    /// told to end): stop the command as for `Cancel`, keep none of its output, and leave the
    /// session usable (not Disconnected) once the command has stopped.
    Abandon,
    /// Host only, host protocol 7: written by the daemon right after a `Handoff`, in the same
    /// message. `resumes`: the client is a client daemon of another computer, which may come
    /// back with a `Resume` and go on with stdin; otherwise (a local CLI) the command's stdin
    /// ends when the client's connection does. Hosts before 7 never read past the `Handoff`.
    HandoffClient { resumes: bool },
    /// Host only, host protocol 8, on a connection of its own: the client of invocation
    /// `invocation` (a local CLI straight at the host) asks for the read end of the command's
    /// stdout FIFO, to move the bytes to its own stdout with `splice` instead of through the
    /// socket. Answered with `Ok` carrying the descriptor (SCM_RIGHTS), or an `Error`.
    Lend { invocation: u64 },
    /// Host protocol 8, on the invocation's connection: the client reads the lent FIFO no
    /// more (after `Reclaim`, having drained it; after a `Lent` without a descriptor; or on
    /// leaving).
    Returned,
    /// Host only, host protocol 9, on a connection of its own: the client of invocation
    /// `invocation`, having sent `after` bytes of stdin in frames and nothing since, asks for a
    /// write end of the command's stdin FIFO, to splice the rest of its stdin into it. The
    /// host answers once those bytes are in the FIFO: `Ok` carrying the descriptor, or an
    /// `Error` (then stdin goes on in frames). The client's `StdinEof` still ends stdin.
    LendStdin { invocation: u64, after: u64 },
    /// Client daemon only, on a connection of its own, with the descriptor attached to its
    /// first bytes (SCM_RIGHTS, sent together with the `Hello`): the CLI behind the relay that
    /// answered `Relayed { token }` gives the relay its stdin (a pipe), so the daemon reads it
    /// straight into the link instead of the CLI copying it into frames. Only the process at
    /// the other end of that invocation's connection may give (`SO_PEERCRED`). Answered with
    /// `Ok` (then the CLI sends `StdinGiven` and reads its stdin no more) or an `Error` (then
    /// stdin goes on in frames).
    GiveStdin { token: u64 },
    /// On the invocation's connection, after every `Stdin` frame the CLI sent before giving
    /// its stdin (`GiveStdin`): from here on the relay reads it, up to its end.
    StdinGiven,
    /// Client daemon to the daemon of the session's computer, on a connection of its own:
    /// a frame of invocation `invocation` (its `Started` number) in session `session` (an
    /// instance id) that must not wait behind stdin ([`Aside`]). On the invocation's own
    /// connection it comes after every byte of stdin the command has not read yet, and a
    /// command that reads none would never hear a Ctrl-C, nor would its output be
    /// acknowledged (its host stops at the output quota). The relay still sends the frame in
    /// band too: a second Ctrl-C changes nothing, acknowledgements are cumulative, and a
    /// daemon without this request only answers with an error. Answered `Ok` or an `Error`.
    Aside {
        session: String,
        invocation: u64,
        what: Aside,
    },
    /// Host only, host protocol 10, from its daemon: [`Request::Aside`] for the session's
    /// holder `client`. Answered `Ok` when invocation `invocation` is the one running, else
    /// an `Error`.
    HostAside {
        client: ClientId,
        invocation: u64,
        what: Aside,
    },
}

/// What goes beside an invocation's connection ([`Request::Aside`]).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aside {
    /// As `Request::Cancel`.
    Cancel,
    /// As `Request::Abandon`.
    Abandon,
    /// As `Request::Ack`.
    Ack(u64),
}

/// `config list` (no name) or `config show NAME`, here or on another computer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct ConfigQuery {
    pub name: Option<String>,
    pub remote: Option<RemoteTarget>,
}

/// A session configuration as `config list|show` reports it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct ConfigInfo {
    pub name: String,
    /// Its file, or `(built in)` for the default without one.
    pub file: String,
    pub engine: String,
    /// Why the file cannot be used (file, line and reason).
    pub error: Option<String>,
    /// The file as written.
    pub text: String,
}

/// A size such as `65536`, `64K`, `100M` or `1G` (binary multiples).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("'{s}' is not a size: use bytes or a number with K, M or G"))
}

/// The client's terminal, for a line run by `tether enter`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct TtySpec {
    /// `TERM` for the program.
    pub term: String,
    pub rows: u16,
    pub cols: u16,
}

/// A client (one client daemon, that is one `TETHER_HOME`), as sessions record who holds
/// them. `id` is stable for the home's life; `label` names it for people.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct ClientId {
    pub id: String,
    pub label: String,
}

/// Sessions named by Name, Id or InstanceId, optionally on another computer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct SessionList {
    pub sessions: Vec<String>,
    pub remote: Option<RemoteTarget>,
    /// `receive --keep`: show what is kept without consuming it or reattaching the session.
    pub keep: bool,
}

/// A reply or event on a connection.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Response {
    Hello {
        version: u32,
        pid: u32,
    },
    Sessions(Vec<SessionInfo>),
    /// The invocation acquired the session and is running. `session` is its instance id and
    /// `from` the output byte the stream starts at (both for resuming after a lost connection).
    /// On a resume, `stdin_from` is how many stdin bytes the command has been given, while its
    /// stdin is still open: the client sends again what followed.
    Started {
        invocation: u64,
        session: String,
        from: u64,
        stdin_from: Option<u64>,
    },
    Output {
        stream: Stream,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Always the last event of an invocation, sequenced after its last output byte.
    Exit(ExitInfo),
    Ok,
    Status(DaemonStatus),
    Error(ErrorInfo),
    /// A line for the user about the connection ("reconnecting…", "restored"). Last, so the
    /// variant numbers before it (which `output_frame_header` relies on) stay put.
    Notice(String),
    Jobs(Vec<JobInfo>),
    JobOutput(Vec<JobChunk>),
    SessionJobData(SessionJobData),
    Configs(Vec<ConfigInfo>),
    /// Host protocol 8: from here on the command's stdout comes through the descriptor the
    /// client was lent (`Request::Lend`), not in `Output` frames; every stdout byte the host
    /// read before it came in frames before this one.
    Lent,
    /// Host protocol 8: the command is done; read what is left in the lent FIFO, then send
    /// `Returned` (the `Exit` follows it).
    Reclaim,
    /// Client daemon only, before `Started`, to a CLI of the same release (its `Hello` agent)
    /// that forwards stdin to another computer: this relay takes the CLI's stdin on a
    /// connection of its own (`Request::GiveStdin` with this token).
    Relayed {
        token: u64,
    },
}

/// Parameters of `tether new`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct NewSession {
    pub name: Option<String>,
    pub configuration: Option<String>,
    /// Skip the configuration's start-up script (`--no-profile`).
    pub no_profile: bool,
    /// Seconds; `None` = the default (2 h); `Some(0)` = never.
    pub idle_timeout_s: Option<u64>,
    /// The environment the session starts with (captured from the client for local sessions).
    pub env: Vec<(String, String)>,
    /// Starting directory; `None` = the user's home.
    pub cwd: Option<String>,
    /// A temporary session is hidden from `get` and closed by its creator after one use.
    pub temporary: bool,
    /// Create it on another computer (the client daemon keeps the handle).
    pub remote: Option<RemoteTarget>,
    /// How much output is kept for a disconnected client (bytes; `None` = the default, 1 GiB).
    pub output_quota: Option<u64>,
    /// What happens at the quota, as the user chose it (`new --output-mode`); `None`: as the
    /// configuration says (`output_buffering`), else `block`. An explicit choice wins over
    /// the configuration's either way.
    pub output_mode: Option<OutputMode>,
}

/// What a disconnected command's kept output does at the quota (SPEC §3.12).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// The command is paused until its output is received.
    Block,
    /// The oldest kept output is dropped, and `receive` says how much.
    Drop,
}

/// Which sessions `get` returns. Empty fields match everything.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct SessionFilter {
    pub name_glob: Option<String>,
    pub id: Option<u32>,
    pub instance_id: Option<String>,
    pub state: Option<State>,
    /// Ask another computer's daemon instead (`get --computer`).
    pub remote: Option<RemoteTarget>,
}

/// Parameters of `tether remove`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct RemoveSpec {
    /// Names or ids.
    pub sessions: Vec<String>,
    pub all: bool,
}

/// One command to run in a session.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct InvokeSpec {
    /// Session name or id (for the daemon); ignored by a host.
    pub session: String,
    pub script: String,
    /// Bound to `$1`, `$2`, … without any re-parsing by the shell.
    pub args: Vec<String>,
    /// Whether `Stdin` frames follow; otherwise the command's stdin is /dev/null.
    pub stdin: bool,
    /// Stop the command after this many milliseconds (`None` = never).
    pub timeout_ms: Option<u64>,
    /// How long to wait for a busy session (`Some(0)` = fail at once).
    pub wait_timeout_ms: Option<u64>,
    /// For a temporary session (empty `session`): the environment it starts with.
    pub env: Vec<(String, String)>,
    /// For a temporary session: its starting directory.
    pub cwd: Option<String>,
    /// The client acknowledges output (`Ack`), so the host keeps what is unacknowledged and a
    /// lost connection can resume without loss.
    pub acked: bool,
    /// Run on the session's terminal (`tether enter`) instead of pipes.
    pub tty: Option<TtySpec>,
    /// The configuration of a temporary session (`invoke --configuration`).
    pub configuration: Option<String>,
    /// Who asks: set by the daemon that hands the invocation to the host, from the
    /// connection's `Hello` (`None`: the host's own daemon).
    pub client: Option<ClientId>,
    /// With an empty `session`: run in a temporary session on this computer instead.
    pub remote: Option<RemoteTarget>,
    /// `invoke --isolated`: run in a subshell of the session's shell, which sees the session's
    /// state but keeps none of the script's changes (`cd`, variables, `set -e`, `exit`), so the
    /// script cannot break the session.
    pub isolated: bool,
    /// A helper invocation of a prompt (`enter`'s syntax check and completion): it runs in a
    /// subshell like `isolated`, never on the terminal, and leaves the session's `$?` and idle
    /// clock as they were.
    pub probe: bool,
}

/// Another computer and how to reach it. It travels with each request because the client
/// daemon, not the CLI, runs ssh: the CLI's flags and environment must reach it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RemoteTarget {
    /// `[user@]host[:port]` or an ssh alias, as the user typed it.
    pub computer: String,
    /// `TETHER_SSH`: the ssh program.
    pub ssh_program: Option<String>,
    /// `--ssh-config`: passed as `ssh -F`.
    pub ssh_config: Option<String>,
    /// `--ssh-option K=V`, each passed as `ssh -o`.
    pub ssh_options: Vec<String>,
    /// `--connect-timeout`.
    pub connect_timeout_ms: Option<u64>,
    /// The tether command on the far side (`TETHER_REMOTE_EXE`; default `tether`).
    pub remote_exe: Option<String>,
    /// `TETHER_HOME` for the far side's daemon (`TETHER_REMOTE_HOME`; default its own).
    pub remote_home: Option<String>,
    /// The CLI's `SSH_AUTH_SOCK` (absolute): the ssh agent a new link authenticates with, in
    /// place of the daemon's own (stale) environment. Not part of what makes two links the
    /// same: a warm link needs no agent again.
    #[serde(default)]
    pub ssh_auth_sock: Option<String>,
    /// How the client daemon reaches the computer (`--transport`, `TETHER_TRANSPORT`). Part of
    /// what makes two links the same: a native and an ssh link to one computer are two links.
    #[serde(default)]
    pub transport: Transport,
}

/// What carries a link to another computer.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Transport {
    /// The system's `ssh` program, one process per computer: it honours everything in the
    /// user's ssh configuration (the default).
    #[default]
    Ssh,
    /// An SSH client inside the client daemon (no process per computer), configured from
    /// `ssh -G`: for big fleets, where an ssh process per computer costs too much memory.
    Native,
}

impl Transport {
    /// The word users type (`--transport ssh|native`).
    pub fn name(self) -> &'static str {
        match self {
            Transport::Ssh => "ssh",
            Transport::Native => "native",
        }
    }
}

/// How an invocation ended.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct ExitInfo {
    /// Exit status as a shell reports it (128 + N for a signal).
    pub code: i32,
    /// The command was stopped by `--timeout`.
    pub timed_out: bool,
    /// The command was stopped by a `Cancel`.
    pub cancelled: bool,
    /// Set when the shell itself ended: the session is now Broken for this reason.
    pub broken: Option<String>,
    /// The session's working directory afterwards, for a line run on its terminal (the
    /// prompt of `tether enter` shows it).
    pub cwd: Option<String>,
    /// For a line run on the terminal: what was typed into it during the line that no program
    /// read (type-ahead, the rest of a paste), in order, for the next prompt.
    #[serde(with = "serde_bytes")]
    pub typeahead: Vec<u8>,
    /// For a line run on the terminal: how many bytes of the client's stdin the terminal took
    /// (typed into it, or acted on, as Ctrl-C). What the client sent beyond that reached the
    /// host after the line ended and was not used: the client keeps it for its next prompt.
    pub stdin_taken: Option<u64>,
}

/// What `tether daemon status` reports.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct DaemonStatus {
    pub pid: u32,
    pub version: String,
    pub home: String,
    pub sessions: u32,
    /// Warm connections to other computers.
    pub links: Vec<LinkStatus>,
}

/// One warm ssh connection held by the client daemon.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct LinkStatus {
    pub computer: String,
    /// The ssh process's pid (0: a native link, the daemon's own connection).
    pub pid: u32,
    /// Channels (sessions' requests and invocations) open on it now.
    pub channels: u32,
    /// The far side's tether version.
    pub version: String,
}

/// Error categories; each maps to one CLI exit status (SPEC §2).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Usage,
    NotFound,
    Busy,
    Connection,
    Permission,
    Lost,
    Internal,
}

impl ErrorKind {
    /// The process exit status tether uses for this kind of error.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Usage => 2,
            ErrorKind::NotFound => 3,
            ErrorKind::Busy => 4,
            ErrorKind::Connection => 5,
            ErrorKind::Permission => 6,
            ErrorKind::Lost => 255,
            ErrorKind::Internal => 1,
        }
    }
}

/// A failed request: a kind for programs and one human line naming the session or computer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ErrorInfo {
    pub kind: ErrorKind,
    pub message: String,
}

impl ErrorInfo {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorInfo {
            kind,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;
