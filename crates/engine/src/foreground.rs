//! `tether __tty fg|park`: which process group owns a session terminal's foreground between
//! lines (issue 18 point 7; SPEC §3.16).
//!
//! A shell that has taken the session's terminal as its controlling terminal and runs its
//! commands in its own process group (dash once job control is off again, zsh always) leaves
//! that group in the terminal's foreground. A later plain `invoke` of a `/dev/tty` reader
//! (sudo without -n) would then wait for keys nobody types. So after each line the shell runs
//! `park`: a process of the session moves the foreground to a process group of its own and
//! exits, leaving the foreground to a group with nobody in it. Every reader is then in the
//! background, and as SIGTTIN is ignored in sessions its read fails at once. Before the next
//! line the shell runs `fg`, which gives the foreground back to the shell's group (dash's
//! `set -m` would otherwise wait forever for it to come back).
//!
//! Only a process in the terminal's session can change its foreground (the host is not in
//! it), and no standard tool does it, hence this tiny mode of tether's own binary.

use nix::sys::signal::{SigHandler, Signal, signal};
use nix::unistd::{Pid, getpgrp, getpid, setpgid, tcsetpgrp};

/// Which way the foreground goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// To the caller's process group (the shell's, as the shell runs it without job control).
    Fg,
    /// To a new, soon empty process group.
    Park,
}

impl Move {
    pub fn parse(word: &str) -> Option<Move> {
        match word {
            "fg" => Some(Move::Fg),
            "park" => Some(Move::Park),
            _ => None,
        }
    }
}

/// The shell's line that makes this move: through `command`, so that no function of the
/// user's can stand in for it, quiet when there is no terminal to move.
pub fn line(how: Move, exe: &std::path::Path) -> String {
    format!(
        "\\command {} __tty {} 2>/dev/null\n",
        tether_transport::shell_quote(&exe.to_string_lossy()),
        match how {
            Move::Fg => "fg",
            Move::Park => "park",
        }
    )
}

/// This program, which the shell runs to move its terminal's foreground.
pub(crate) fn own_program() -> &'static std::path::Path {
    static EXE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    EXE.get_or_init(|| std::env::current_exe().unwrap_or_else(|_| "tether".into()))
}

/// Moves the controlling terminal's foreground; the status is 0, or 1 with the reason on
/// stderr (no controlling terminal: nothing to do for the shell either way).
pub fn run(how: Move) -> i32 {
    match move_foreground(how) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("tether __tty: {e}");
            1
        }
    }
}

fn move_foreground(how: Move) -> std::io::Result<()> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| std::io::Error::new(e.kind(), format!("/dev/tty: {e}")))?;
    // A background process may change the foreground only if SIGTTOU does not stop it.
    // SAFETY: a signal disposition set in a single-threaded program before anything else.
    unsafe {
        signal(Signal::SIGTTOU, SigHandler::SigIgn).map_err(std::io::Error::from)?;
    }
    let group = match how {
        Move::Fg => getpgrp(),
        Move::Park => {
            setpgid(Pid::from_raw(0), Pid::from_raw(0)).map_err(std::io::Error::from)?;
            getpid()
        }
    };
    tcsetpgrp(&tty, group).map_err(std::io::Error::from)
}
