//! `tether bridge`: run by ssh on the target computer. It makes sure this user's daemon runs,
//! announces itself (`TETHER-MUX …`, checked by the client) and then serves a multiplexed link
//! on its stdin and stdout: every channel the client opens becomes one connection to the
//! daemon's socket, copied byte for byte. The daemon outlives the bridge and the ssh connection.
//!
//! Because the daemon hands an invocation's connection to the session host (SCM_RIGHTS), the
//! host then talks to the bridge directly.

use super::error::{CliError, CliResult};
use clap::Args;
use std::os::fd::{AsFd, OwnedFd};
use tether_client::{ErrorKind, Paths};
use tether_proto::peer::BridgeFrame;
use tether_transport::mux::Mux;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

#[derive(Args, Debug)]
pub struct BridgeArgs {
    /// Pin this connection to one session configuration (for ssh forced commands).
    #[arg(long)]
    configuration: Option<String>,
}

pub async fn run(a: BridgeArgs) -> CliResult {
    // Pinned (an ssh forced command): every daemon connection starts with `Pin`, written
    // before any byte of the client's, so the client can reach nothing else.
    // Unpinned, every connection says it comes from another computer (`Bridged`), so the
    // daemon believes no environment or directory sent through it.
    // An unpinned bridge also says which ssh agent its client forwarded (sshd's
    // `SSH_AUTH_SOCK` for this connection), so that sessions reach it (the daemon checks it).
    let first = tether_proto::Request::from(match &a.configuration {
        Some(c) => BridgeFrame::Pin(c.clone()),
        None => BridgeFrame::Bridged {
            agent: std::env::var("SSH_AUTH_SOCK")
                .ok()
                .filter(|s| !s.is_empty()),
        },
    });
    let pin_frame = Some(
        tether_proto::encode(&first)
            .map_err(|e| CliError::new(ErrorKind::Internal, format!("bridge: {e}")))?,
    );
    let paths = super::daemon_paths()?;
    if let Err(e) = tether_client::Client::connect_or_start(&paths).await {
        // Said on stdout before the preamble, where the client looks: one line naming the
        // place and why, rather than "daemon start failed" in ssh's stderr.
        let why = home_problem(&paths.home).unwrap_or_else(|| e.to_string());
        let line =
            tether_transport::link::Failure::line("daemon", &paths.home.to_string_lossy(), &why);
        let mut out = std::io::stdout();
        let _ = std::io::Write::write_all(&mut out, line.as_bytes());
        let _ = std::io::Write::flush(&mut out);
        return Err(e.into());
    }
    let sock = paths.daemon_socket();
    let input = async_input()?;
    let mut output = async_output()?;
    output
        .write_all(tether_transport::link::preamble().as_bytes())
        .await?;
    output.flush().await?;
    let (mux, mut incoming) = Mux::start(input, output);
    loop {
        tokio::select! {
            ch = incoming.recv() => {
                let Some((m, ch)) = ch else { break };
                let (sock, paths, pin) = (sock.clone(), paths.clone(), pin_frame.clone());
                tokio::spawn(async move {
                    let (r, w) = m.split(ch);
                    match daemon_stream(&paths, &sock).await {
                        Ok(s) => {
                            let (sr, mut sw) = s.into_split();
                            if let Some(p) = pin
                                && sw.write_all(&p).await.is_err()
                            {
                                return;
                            }
                            tether_transport::mux::splice(r, w, sr, sw).await;
                        }
                        // Dropping the halves resets the channel: the client sees it end.
                        // (stderr reaches the client daemon's log through ssh.)
                        Err(e) => errln!("tether bridge: cannot reach the daemon: {e}"),
                    }
                });
            }
            _ = mux.closed() => break,
        }
    }
    Ok(0)
}

/// Why a daemon cannot keep its state in `home`, if that is why it did not start: the home
/// cannot be made, or a byte cannot be written there (read-only, full, not ours).
fn home_problem(home: &std::path::Path) -> Option<String> {
    let plain = |e: std::io::Error| {
        let text = e.to_string();
        match text.find(" (os error") {
            Some(i) => text[..i].to_string(),
            None => text,
        }
    };
    if let Err(e) = std::fs::create_dir_all(home) {
        return Some(plain(e));
    }
    let probe = home.join(format!(".tether-probe.{}", std::process::id()));
    let wrote = std::fs::write(&probe, b"x");
    let _ = std::fs::remove_file(&probe);
    wrote.err().map(plain)
}

/// A connection to the daemon; a daemon that died since (killed, upgraded) is started again,
/// and it adopts the running sessions (SPEC §3.15).
async fn daemon_stream(
    paths: &Paths,
    sock: &std::path::Path,
) -> std::io::Result<tokio::net::UnixStream> {
    match tokio::net::UnixStream::connect(sock).await {
        Ok(s) => Ok(s),
        Err(_) => {
            drop(
                tether_client::Client::connect_or_start(paths)
                    .await
                    .map_err(std::io::Error::other)?,
            );
            tokio::net::UnixStream::connect(sock).await
        }
    }
}

/// A duplicate of fd 0 or 1, so tokio can own it without closing the real one early.
fn dup(fd: std::os::fd::BorrowedFd<'_>) -> Result<OwnedFd, CliError> {
    fd.try_clone_to_owned()
        .map_err(|e| CliError::new(ErrorKind::Internal, format!("bridge: {e}")))
}

/// What ssh gave us as stdin or stdout: a socket pair, a pipe, or (rarely) something else,
/// which falls back to tokio's blocking-thread stdio.
enum Kind {
    Socket,
    Pipe,
    Other,
}

fn kind(fd: &OwnedFd) -> Kind {
    match nix::sys::stat::fstat(fd).map(|st| st.st_mode & libc::S_IFMT) {
        Ok(libc::S_IFSOCK) => Kind::Socket,
        Ok(libc::S_IFIFO) => Kind::Pipe,
        _ => Kind::Other,
    }
}

fn socket(fd: OwnedFd) -> std::io::Result<tokio::net::UnixStream> {
    let s = std::os::unix::net::UnixStream::from(fd);
    s.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(s)
}

type Input = Box<dyn AsyncRead + Unpin + Send>;
type Output = Box<dyn AsyncWrite + Unpin + Send>;

fn async_input() -> Result<Input, CliError> {
    let fd = dup(std::io::stdin().as_fd())?;
    Ok(match kind(&fd) {
        Kind::Socket => Box::new(socket(fd)?),
        Kind::Pipe => {
            tether_transport::widen_pipe(&fd);
            Box::new(tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?)
        }
        Kind::Other => Box::new(tokio::io::stdin()),
    })
}

fn async_output() -> Result<Output, CliError> {
    let fd = dup(std::io::stdout().as_fd())?;
    Ok(match kind(&fd) {
        Kind::Socket => Box::new(socket(fd)?),
        Kind::Pipe => {
            tether_transport::widen_pipe(&fd);
            Box::new(tokio::net::unix::pipe::Sender::from_owned_fd(fd)?)
        }
        Kind::Other => Box::new(tokio::io::stdout()),
    })
}
