//! The session host: one process per session that owns one shell and runs its invocations.
//!
//! A host is `tether` re-executed in a hidden mode. It listens on its own socket, so it outlives
//! the daemon that started it and the next daemon adopts it (SPEC §3.15). See `shell` for how the
//! shell is driven out of band, `driver` for one invocation, `procs` for stopping commands.

mod cgroup;
mod cleanup;
mod conn;
mod console;
mod deliver;
mod driver;
mod fifos;
pub mod foreground;
mod holder;
mod host;
mod invocation;
pub mod leader;
mod lend;
mod outbox;
mod procs;
mod receive;
mod requests;
pub mod restricted;
mod runas;
mod session;
pub mod shell;
pub mod spec;
mod spool;
mod stopping;
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
    /// The session's user cannot enter its starting directory (tried as that user, after the
    /// switch: root's view of the file system never decides what a user may reach).
    #[error("cannot enter directory {dir} as {user}: {err}")]
    Directory {
        dir: String,
        user: String,
        err: std::io::Error,
    },
}

impl HostError {
    /// Whether the user was refused something (rather than the host failing): the daemon
    /// reports it as a permission error.
    pub fn is_permission(&self) -> bool {
        matches!(self, HostError::Directory { .. })
    }
}

/// Narrow access to internals for the criterion benchmarks in the workspace's `benches/`
/// (`cargo bench --bench spool`). Not a stable API: it exists so the benchmarks measure the same
/// code the session host runs, and may change with it.
#[doc(hidden)]
pub mod bench_support {
    use tether_proto::Stream;

    /// A session's kept-output store (`spool::Chunks`): chunks in memory up to
    /// `TETHER_OUTPUT_MEMORY` (read when it is made), then in the spool file, if one is given.
    pub struct Spool(crate::spool::Chunks);

    impl Spool {
        /// `path`: where the spool file goes once memory is full; `None` keeps everything in
        /// memory.
        pub fn new(path: Option<std::path::PathBuf>) -> Spool {
            Spool(crate::spool::Chunks::new(path))
        }

        /// Appends one chunk.
        pub fn push(&mut self, stream: Stream, data: &[u8]) {
            self.0.push(stream, data)
        }

        /// Copies of about `max` bytes from byte `skip` on.
        pub fn read(&self, skip: usize, max: usize) -> std::io::Result<Vec<(Stream, Vec<u8>)>> {
            self.0.read(skip, max)
        }

        /// Forgets the first `n` bytes (as an acknowledgement does).
        pub fn pop_front(&mut self, n: usize) {
            self.0.pop_front(n)
        }

        /// Bytes kept.
        pub fn len(&self) -> usize {
            self.0.len()
        }

        /// Whether nothing is kept.
        pub fn is_empty(&self) -> bool {
            self.0.len() == 0
        }
    }
}
