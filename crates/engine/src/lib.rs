//! The session host: one process per session that owns one shell and runs its invocations.
//!
//! A host is `tether` re-executed in a hidden mode. It listens on its own socket, so it outlives
//! the daemon that started it and the next daemon adopts it (SPEC §3.15). See `shell` for how the
//! shell is driven out of band, `driver` for one invocation, `procs` for stopping commands.

mod conn;
mod driver;
mod fifos;
mod holder;
mod host;
pub mod leader;
mod procs;
pub mod restricted;
mod retain;
mod runas;
pub mod shell;
pub mod spec;
mod spool;
mod tty;

pub use host::run_host;
pub use spec::{HostMeta, HostSpec, RunAs, default_shell};

/// Errors that end a host before it could serve.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("cannot start shell {shell}: {err}")]
    Spawn { shell: String, err: std::io::Error },
}
