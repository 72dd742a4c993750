//! `disconnect`, `connect` and `receive` (SPEC §3.11): detaching a session from this client,
//! reattaching it (from this or any other client), and collecting what a detached command
//! wrote. Local sessions are asked directly; sessions on other computers through their link.

use super::hosts;
use super::sessions::{closed_error, hand_off_with};
use crate::state::registry::{Found, RemoteHandle, as_seen_here};
use crate::state::{Daemon, Reader, Writer};
use tether_proto::host::HostRequest;
use tether_proto::{
    ClientId, ErrorInfo, ErrorKind, Request, Response, SessionFilter, SessionInfo, SessionList,
    State,
};

enum Target {
    Local(SessionInfo),
    Remote(RemoteHandle),
}

async fn resolve(daemon: &Daemon, word: &str) -> Result<Target, ErrorInfo> {
    let reg = daemon.registry.lock().await;
    Ok(match reg.resolve(word)? {
        Found::Local(m) => Target::Local(m.info.clone()),
        Found::Remote(h) => Target::Remote(h.clone()),
    })
}

/// The far session's new state, shown with this client's Id and Name.
fn seen_here(h: &RemoteHandle, reply: Response) -> Result<SessionInfo, ErrorInfo> {
    match reply {
        Response::Sessions(mut v) if !v.is_empty() => {
            let mut info = as_seen_here(v.remove(0), &h.target);
            info.id = h.info.id;
            info.name = h.info.name.clone();
            Ok(info)
        }
        _ => Err(ErrorInfo::new(
            ErrorKind::Internal,
            format!("session {}: unexpected reply", h.info.name),
        )),
    }
}

/// Sends a host-level request (disconnect, connect) to each named session.
async fn each(
    daemon: &Daemon,
    list: SessionList,
    host_req: HostRequest,
    far_req: fn(SessionList) -> Request,
) -> Result<Response, ErrorInfo> {
    let mut out = Vec::new();
    for word in &list.sessions {
        match resolve(daemon, word).await? {
            Target::Local(info) => {
                if !matches!(info.state, State::Opened | State::Disconnected) {
                    return Err(closed_error(&info.name, info.state, info.reason.as_deref()));
                }
                match hosts::ask_or_refused(&daemon.paths, &info.instance_id, host_req.clone())
                    .await
                {
                    Some(now) => out.push(now?),
                    None => {
                        let mut reg = daemon.registry.lock().await;
                        let m = reg.settle(&info.instance_id);
                        let (state, reason) = m
                            .map(|m| (m.info.state, m.info.reason.clone()))
                            .unwrap_or((State::Closed, None));
                        return Err(closed_error(&info.name, state, reason.as_deref()));
                    }
                }
            }
            Target::Remote(h) => {
                let req = far_req(SessionList {
                    sessions: vec![h.info.instance_id.clone()],
                    remote: None,
                    keep: false,
                });
                let reply = daemon.afar.call(daemon, &h.target, req).await?;
                out.push(seen_here(&h, reply)?);
            }
        }
    }
    Ok(Response::Sessions(out))
}

/// `disconnect N…`: a running command goes on and its output is kept; the session waits,
/// Disconnected, for `connect` or `receive` from any client.
pub async fn disconnect(
    daemon: &Daemon,
    list: SessionList,
    client: &ClientId,
) -> Result<Response, ErrorInfo> {
    let host_req = HostRequest::Disconnect(client.clone());
    each(daemon, list, host_req, Request::Disconnect).await
}

/// `connect N…` reattaches this client's handles; `connect --computer C --name N…` finds
/// sessions on C (made by any client) and gives this client handles to them first.
pub async fn connect(
    daemon: &Daemon,
    mut list: SessionList,
    client: &ClientId,
) -> Result<Response, ErrorInfo> {
    let mut adopted = Vec::new();
    if let Some(rt) = list.remote.take() {
        let mut words = Vec::new();
        for name in &list.sessions {
            let (iid, new) = adopt(daemon, &rt, name).await?;
            if new {
                adopted.push(iid.clone());
            }
            words.push(iid);
        }
        list.sessions = words;
    }
    let host_req = HostRequest::Connect(client.clone());
    let reply = each(daemon, list, host_req, Request::Connect).await;
    if reply.is_err() {
        // A refused connect leaves no handle behind.
        let mut reg = daemon.registry.lock().await;
        for iid in adopted {
            reg.forget_remote(&iid);
        }
    }
    reply
}

/// Finds the session named `name` on `rt` and returns the instance id of this client's handle
/// to it, and whether that handle was made now.
async fn adopt(
    daemon: &Daemon,
    rt: &tether_proto::RemoteTarget,
    name: &str,
) -> Result<(String, bool), ErrorInfo> {
    let filter = SessionFilter {
        name_glob: Some(name.to_string()),
        ..Default::default()
    };
    let found = match daemon.afar.call(daemon, rt, Request::Get(filter)).await? {
        Response::Sessions(v) => v.into_iter().find(|s| s.name == name),
        _ => None,
    };
    let Some(far) = found else {
        return Err(ErrorInfo::new(
            ErrorKind::NotFound,
            format!(
                "computer {}: no session named {name}; 'tether get --computer {}' lists them",
                rt.computer, rt.computer
            ),
        ));
    };
    let mut reg = daemon.registry.lock().await;
    if reg.remotes.contains_key(&far.instance_id) {
        return Ok((far.instance_id, false));
    }
    if reg.name_taken(name) {
        return Err(ErrorInfo::new(
            ErrorKind::Usage,
            format!("a session named {name} already exists here; remove it first"),
        ));
    }
    let mut info = as_seen_here(far, rt);
    info.id = reg.allocate_id();
    let iid = info.instance_id.clone();
    reg.insert_remote(RemoteHandle {
        info,
        target: rt.clone(),
    })
    .map_err(|e| {
        ErrorInfo::new(
            ErrorKind::Internal,
            format!("cannot record the handle: {e}"),
        )
    })?;
    Ok((iid, true))
}

/// `Aside` (from a client daemon's relay: a Ctrl-C, leaving, an acknowledgement): passed to
/// the host of `session` on a connection of its own, beside the invocation's, where the frame
/// may wait behind stdin. A temporary session is found by its host's record, as for `Resume`.
pub async fn aside(
    daemon: &Daemon,
    session: &str,
    (invocation, what): (u64, tether_proto::Aside),
    client: &ClientId,
) -> Result<Response, ErrorInfo> {
    let iid = match resolve(daemon, session).await {
        Ok(Target::Local(info)) => info.instance_id,
        Err(_) if tether_proto::is_instance_id(session) => {
            tether_engine::HostMeta::load(&daemon.paths.host_meta(session))
                .map_err(|_| not_running(session))?
                .info
                .instance_id
        }
        Ok(Target::Remote(_)) => {
            return Err(ErrorInfo::new(
                ErrorKind::Usage,
                "aside names a session on this computer",
            ));
        }
        Err(e) => return Err(e),
    };
    let req = HostRequest::Aside {
        client: client.clone(),
        invocation,
        what,
    };
    hosts::aside(&daemon.paths, &iid, req)
        .await
        .map(|()| Response::Ok)
}

fn not_running(session: &str) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::NotFound,
        format!("session {session} no longer exists"),
    )
}

/// What a `Resume` asks for.
pub struct Resuming {
    pub session: String,
    pub from: u64,
    pub keep_stdin: bool,
    /// A `receive --keep` relayed from another computer.
    pub keep: bool,
}

/// `Resume` (from a client daemon whose connection broke): the stream of the invocation in
/// `session` from output byte `from`, kept by the host until acknowledged.
pub async fn resume(
    daemon: &Daemon,
    how: Resuming,
    client: &ClientId,
    reader: Reader,
    mut writer: Writer,
) {
    let Resuming {
        session,
        from,
        keep_stdin,
        keep,
    } = how;
    let target = match resolve(daemon, &session).await {
        // A temporary session is not listed, but its host keeps a record (named by its
        // instance id only: a name never reaches a path).
        Err(_) if tether_proto::is_instance_id(&session) => {
            tether_engine::HostMeta::load(&daemon.paths.host_meta(&session))
                .map(|m| Target::Local(m.info))
                .map_err(|_| {
                    ErrorInfo::new(
                        ErrorKind::NotFound,
                        format!("session {session} no longer exists"),
                    )
                })
        }
        found => found,
    };
    match target {
        Ok(Target::Local(info)) => {
            let make = |prefix| HostRequest::HandoffReceive {
                prefix,
                from: Some(from),
                acked: true,
                client: client.clone(),
                keep_stdin,
                keep,
            };
            let _ = hand_off_with(daemon, &info, make, reader, writer).await;
        }
        Ok(Target::Remote(_)) => {
            let e = ErrorInfo::new(ErrorKind::Usage, "resume names a session on this computer");
            let _ = writer.send(&Response::Error(e)).await;
        }
        Err(e) => {
            let _ = writer.send(&Response::Error(e)).await;
        }
    }
}

/// `receive N`: the connection becomes the stream of what the detached command wrote, then
/// the rest of it live, then its exit status.
pub async fn receive(
    daemon: &Daemon,
    list: SessionList,
    client: &ClientId,
    reader: Reader,
    mut writer: Writer,
) {
    let target = match list.sessions.as_slice() {
        [word] => resolve(daemon, word).await,
        _ => Err(ErrorInfo::new(
            ErrorKind::Usage,
            "receive takes one session",
        )),
    };
    match target {
        Ok(Target::Local(info)) => {
            if !matches!(info.state, State::Opened | State::Disconnected) {
                let e = closed_error(&info.name, info.state, info.reason.as_deref());
                let _ = writer.send(&Response::Error(e)).await;
                return;
            }
            let make = |prefix| HostRequest::HandoffReceive {
                prefix,
                from: None,
                acked: false,
                client: client.clone(),
                keep_stdin: false,
                keep: list.keep,
            };
            let _ = hand_off_with(daemon, &info, make, reader, writer).await;
        }
        Ok(Target::Remote(h)) => {
            let req = Request::Resume {
                session: h.info.instance_id.clone(),
                from: 0,
                keep_stdin: false,
                keep: list.keep,
            };
            daemon
                .afar
                .relay(daemon, h.target.clone(), req, true, (reader, writer))
                .await;
        }
        Err(e) => {
            let _ = writer.send(&Response::Error(e)).await;
        }
    }
}
