//! The session side of a copy, driven from this process: one invocation of `tether __copy
//! send|recv` in the session, streamed exactly as `invoke` streams one target (the same
//! reconnection, notices, errors, Ctrl-C and `SIGTERM`), on a thread with a runtime of its own,
//! while the main thread writes and reads the copy's stream through two pipes.
//!
//! Why a thread and not a child `tether invoke` (as until session 13): one process fewer on
//! the data path, no second start-up, and a copy killed outright needs no parent-death signal
//! (which only Linux has) to stop its far side: the daemon or host sees our connection end and
//! the far side reads the end of its stdin. The pipes stay because `invoke`'s machinery moves
//! bytes from and into descriptors, splicing them straight into a local session's FIFOs.

use crate::cli::error::{CliError, CliResult};
use crate::cli::invoke::{DEFAULT_WAIT, Redirect, Target, single};
use std::os::fd::OwnedFd;
use tether_client::{ErrorKind, InvokeSpec};

/// Where the session side is.
pub(super) enum Place {
    /// A session by name or id.
    Session(String),
    /// A temporary session on a computer (`--computer`).
    Computer(String),
}

pub(super) struct Far {
    pub place: Place,
    /// What errors call it ("session web", "computer db1").
    pub label: String,
}

impl Far {
    pub(super) fn new(place: Place) -> Far {
        let label = match &place {
            Place::Session(s) => format!("session {s}"),
            Place::Computer(c) => format!("computer {c}"),
        };
        Far { place, label }
    }
}

/// A running far side: its stdin and stdout as pipes, and the thread that streams them.
pub(super) struct FarSide {
    /// Into the far side's stdin.
    pub to: std::io::PipeWriter,
    /// From its stdout.
    pub from: std::io::PipeReader,
    pub driver: Driver,
}

/// The thread streaming the far side.
pub(super) struct Driver(std::thread::JoinHandle<CliResult>);

impl Driver {
    /// The far side's exit status. Our ends of its pipes must be closed (dropped) first: the
    /// command then reads the end of its stdin, or has its output refused and is stopped.
    pub(super) fn wait(self) -> Result<i32, CliError> {
        match self.0.join() {
            Ok(r) => r,
            Err(_) => Err(CliError::new(
                ErrorKind::Internal,
                "copy: the thread streaming the session side failed",
            )),
        }
    }
}

/// Starts `script` in the far session, its stdin and stdout ours to use.
pub(super) fn start(far: &Far, script: String) -> Result<FarSide, CliError> {
    let io = |e: std::io::Error| CliError::new(ErrorKind::Internal, format!("copy: {e}"));
    // Close-on-exec (std's pipes are): a daemon this process starts must not hold them open.
    let (in_r, to) = std::io::pipe().map_err(io)?;
    let (from, out_w) = std::io::pipe().map_err(io)?;
    // The stream crosses these pipes in 1 MiB writes (the sender's buffer) where a default
    // pipe takes 64 KiB: wider pipes let each side move a megabyte per wake-up.
    tether_transport::widen_pipe(&to);
    tether_transport::widen_pipe(&from);
    let base = InvokeSpec {
        script,
        stdin: true,
        // Output is acknowledged once handed to our pipe, so a lost link loses nothing.
        acked: true,
        wait_timeout_ms: Some(DEFAULT_WAIT.as_millis() as u64),
        ..Default::default()
    };
    let target = match &far.place {
        Place::Session(s) => Target::session(s, &base, false),
        Place::Computer(c) => Target::computer(c, &base)?,
    };
    let redirect = Redirect {
        stdin: Some(OwnedFd::from(in_r)),
        stdout: Some(OwnedFd::from(out_w)),
    };
    let driver = std::thread::Builder::new()
        .name("tether-copy-far".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(single(target, false, redirect))
        })
        .map_err(io)?;
    Ok(FarSide {
        to,
        from,
        driver: Driver(driver),
    })
}
