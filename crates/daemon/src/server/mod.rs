//! The listener: accepts clients on the daemon's socket, tells who each connection speaks for,
//! and hands each request to the [`router`].
//!
//! It also builds the [`Daemon`] (the shared state) with each role's side of the seams
//! ([`build`]), since it is the one place that knows both roles. The system daemon's listener,
//! which serves every user through a view of their own, is [`system`].

mod accept;
mod router;
pub mod system;
mod words;

use crate::local;
use crate::remote;
use crate::state::{Daemon, Role, Seams};
use std::sync::Arc;
use tether_proto::peer::BridgeFrame;
use tether_proto::{ErrorInfo, ErrorKind, Request, Response};
use tether_transport::paths::Paths;
use tether_transport::{FrameReader, FrameWriter};
use tokio::net::{UnixListener, UnixStream};

/// A daemon over `paths` (with `system`: one user's view of the system daemon), with the local
/// and the remote role joined through its seams, and the jobs that were running picked up
/// again.
pub fn build(paths: Paths, system: Option<Role>) -> Arc<Daemon> {
    // Found once, early: the host program is this executable, looked up by path.
    let _ = local::hosts::host_program();
    let me = tether_transport::identity::client_identity(&paths);
    let seams = Seams {
        links: remote::links::Links::new(remote::hello_from(&me)),
        afar: Arc::new(remote::Reach),
        here: Arc::new(local::Serve),
    };
    let daemon = Arc::new(Daemon::new(paths, me, system, seams));
    remote::jobs::restore(&daemon);
    daemon
}

/// Accepts clients until shutdown. Each connection is its own task: a panic in one is caught by
/// the runtime and ends only that connection.
pub async fn serve(daemon: Arc<Daemon>, listener: UnixListener) {
    local::sessions::cleanup_temporaries(&daemon).await;
    local::pool::spawn_expiry(&daemon);
    let permits = Arc::new(tokio::sync::Semaphore::new(crate::limits::max_connections()));
    let d = daemon.clone();
    let ended = accept::until_stopped(
        &listener,
        &daemon.paths.daemon_socket(),
        daemon.shutdown.subscribe(),
        move |stream| match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let d = d.clone();
                tokio::spawn(async move {
                    handle(d, stream).await;
                    drop(permit)
                });
            }
            Err(_) => {
                tokio::spawn(crate::limits::refuse(stream));
            }
        },
    )
    .await;
    match ended {
        // Logout (or any SIGTERM) closes the client as `daemon stop` does (SPEC §3.14).
        accept::Ended::Terminated => local::closing::stop(&daemon).await,
        // Replaced by another release's daemon: every session stays as it is, for that one to
        // adopt. Links say goodbye, so far daemons keep this client's sessions its own rather
        // than making them Disconnected.
        accept::Ended::Retired => daemon.links.close_all().await,
        accept::Ended::Stopped | accept::Ended::Gone => {}
    }
}

/// Who a connection speaks for, as its first frames said.
pub(crate) struct Caller {
    /// The client: a client daemon of another computer names itself; our own CLI does not.
    pub client: tether_proto::ClientId,
    /// The configuration a bridge is pinned to, if any.
    pub pin: Option<String>,
    /// The process at the other end (`SO_PEERCRED`), where the system says.
    pub pid: Option<i32>,
    /// A CLI of this very release, which understands `Response::Relayed` and may give its
    /// stdin to a relay.
    pub gives: bool,
    /// The descriptor that came with the connection's first bytes (`Request::GiveStdin`).
    pub passed: std::sync::Mutex<Option<std::os::fd::OwnedFd>>,
}

/// Serves one connection: checks its peer, reads what a bridge says first and the hello, then
/// each request in turn until one takes the connection over or the client goes.
pub(crate) async fn handle(daemon: Arc<Daemon>, stream: UnixStream) {
    // A system daemon's view was chosen by the peer's uid already.
    match tether_transport::unix::peer_is_us(&stream) {
        Ok(true) => {}
        _ if daemon.system.is_some() => {}
        _ => {
            tracing::warn!("refused a connection from another user");
            let (_r, w) = stream.into_split();
            let msg = format!(
                "permission denied: this tether daemon belongs to uid {}",
                nix::unistd::getuid()
            );
            let err = Response::Error(ErrorInfo::new(ErrorKind::Permission, msg));
            let _ = FrameWriter::new(w).send(&err).await;
            return;
        }
    }
    let pid = stream.peer_cred().ok().and_then(|c| c.pid());
    // A CLI giving its stdin to a relay sends the pipe with its first bytes.
    let passed = tokio::time::timeout(
        crate::limits::hello_timeout(),
        tether_transport::unix::peek_fd(&stream),
    )
    .await
    .ok()
    .and_then(|r| r.ok())
    .flatten();
    let (r, w) = stream.into_split();
    let mut reader = FrameReader::new(r);
    let mut writer = FrameWriter::new(w);
    let mut first = crate::limits::first_frame(&mut reader).await;
    // A bridge says so before the client's first byte, and whether it is pinned to one
    // configuration.
    let mut pin = None;
    let mut bridged = false;
    let mut forwarded = None;
    match first
        .as_ref()
        .ok()
        .and_then(|f| f.as_ref())
        .and_then(BridgeFrame::of)
    {
        Some(BridgeFrame::Pin(name)) => {
            pin = Some(name);
            bridged = true;
        }
        Some(BridgeFrame::Bridged { agent }) => {
            bridged = true;
            forwarded = agent;
        }
        None => {}
    }
    if bridged {
        first = crate::limits::first_frame(&mut reader).await;
    }
    // Who this connection speaks for: a client daemon of another computer names itself; our
    // own CLI does not.
    let client = match &first {
        Ok(Some(Request::Hello {
            client: Some(c), ..
        })) if !c.id.is_empty() => {
            if let Err(e) = tether_proto::validate_client(c) {
                let _ = writer.send(&Response::Error(e)).await;
                return;
            }
            c.clone()
        }
        _ => daemon.me.clone(),
    };
    let ours = format!("tether-client/{}", env!("CARGO_PKG_VERSION"));
    let gives = !bridged
        && matches!(&first, Ok(Some(Request::Hello { agent, client: None, .. })) if *agent == ours);
    // The client's forwarded ssh agent, counted while this connection lasts.
    let _agent = forwarded
        .as_deref()
        .and_then(|a| local::agents::agent_arrived(&daemon, &client, a));
    if !tether_transport::answer_hello(first, &mut writer, &tether_transport::Speaks::daemon())
        .await
    {
        return;
    }
    let caller = Caller {
        client,
        pin,
        pid,
        gives,
        passed: std::sync::Mutex::new(passed),
    };
    loop {
        if writer.flush().await.is_err() {
            return;
        }
        let req = match reader.read::<Request>().await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                let err = ErrorInfo::new(ErrorKind::Usage, format!("bad request: {e}"));
                let _ = writer.send(&Response::Error(err)).await;
                return;
            }
        };
        let mut req = req;
        if let Err(e) = words::check(&req) {
            if writer.feed(&Response::Error(e)).await.is_err() {
                return;
            }
            continue;
        }
        if let Some(role) = &daemon.system
            && let Err(e) = local::system::check(role, &req)
        {
            if writer.feed(&Response::Error(e)).await.is_err() {
                return;
            }
            continue;
        }
        if bridged {
            local::pinning::from_afar(&daemon, caller.pin.is_some(), &caller.client, &mut req);
        }
        if let Some(p) = &caller.pin
            && let Err(e) = local::pinning::check(&daemon, p, &mut req).await
        {
            if writer.feed(&Response::Error(e)).await.is_err() {
                return;
            }
            continue;
        }
        tracing::debug!("request {}", crate::logfile::Variant(&req));
        match router::route(&daemon, req, &caller, (reader, writer)).await {
            Some(conn) => (reader, writer) = conn,
            None => return,
        }
    }
}
