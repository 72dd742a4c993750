//! The process a restricted session has instead of a shell (`tether __leader`): the session
//! leader that runs each allowed command, so the session's processes can be found and signalled
//! exactly as a shell's are, while nothing interprets the user's text.
//!
//! It reads one JSON request per line on stdin (from its host, which has already checked the
//! command against the configuration), runs the program with the given streams, waits for it,
//! and reports `<id> <status>` on the status FIFO as a shell's status script would. It ignores
//! SIGINT itself (a Ctrl-C is for the command), and ends when its host closes stdin.

use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;

/// One command for the leader to run.
#[derive(Serialize, Deserialize, Debug)]
pub struct Request {
    pub id: u64,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Standard input (`None`: /dev/null).
    pub stdin: Option<PathBuf>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    pub status: PathBuf,
}

/// Runs the leader until stdin closes.
pub fn run() -> std::io::Result<()> {
    // SAFETY: setting a signal disposition before any thread exists.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGINT,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line?;
        let Ok(req) = serde_json::from_str::<Request>(&line) else {
            continue;
        };
        let code = run_one(&req);
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&req.status) {
            let _ = writeln!(f, "{} {code}", req.id);
        }
    }
    Ok(())
}

fn run_one(req: &Request) -> i32 {
    let open_in = || match &req.stdin {
        Some(p) => std::fs::File::open(p),
        None => std::fs::File::open("/dev/null"),
    };
    let open_out = |p: &PathBuf| std::fs::OpenOptions::new().write(true).open(p);
    let (Ok(i), Ok(o), Ok(e)) = (open_in(), open_out(&req.stdout), open_out(&req.stderr)) else {
        return 126;
    };
    let mut cmd = std::process::Command::new(&req.program);
    cmd.args(&req.args).stdin(i).stdout(o).stderr(e);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGINT,
                nix::sys::signal::SigHandler::SigDfl,
            );
            Ok(())
        });
    }
    match cmd.spawn().and_then(|mut c| c.wait()) {
        Ok(st) => st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 127,
        Err(_) => 126,
    }
}
