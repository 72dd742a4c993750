//! Requests about other computers: each becomes a channel on that computer's warm link, carrying
//! the ordinary protocol to its daemon (through `tether bridge`).
//!
//! Requests (`new`, `get`, `remove`) are one exchange on a fresh channel. An invocation is
//! relayed frame by frame instead, so that it survives a broken link ([`super::relay`], which
//! opens its channels here).

use crate::state::Daemon;
use crate::state::registry::{RemoteHandle, as_seen_here};
use tether_proto::{
    Availability, ErrorInfo, ErrorKind, NewSession, PROTOCOL_VERSION, RemoteTarget, Request,
    Response, SessionFilter, SessionInfo, State,
};
use tether_transport::FrameReader;
use tether_transport::mux::{ChannelReader, ChannelWriter};

/// The first frame on every channel: this daemon speaks for its own client.
pub fn hello_from(me: &tether_proto::ClientId) -> Request {
    Request::Hello {
        version: PROTOCOL_VERSION,
        agent: format!("tether-client-daemon/{}", env!("CARGO_PKG_VERSION")),
        client: Some(me.clone()),
    }
}

fn lost(c: &str, why: impl std::fmt::Display) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::Lost,
        format!("computer {c}: connection lost: {why}"),
    )
}

fn on(c: &str, e: ErrorInfo) -> ErrorInfo {
    if e.message.starts_with("computer ") {
        e
    } else {
        ErrorInfo::new(e.kind, format!("computer {c}: {}", e.message))
    }
}

/// Opens a channel and sends `Hello` plus `req` in one write (no round trip for the hello).
pub async fn open(
    daemon: &Daemon,
    rt: &RemoteTarget,
    req: &Request,
    extra: &[u8],
) -> Result<(FrameReader<ChannelReader>, ChannelWriter), ErrorInfo> {
    open_with((&*daemon.links, &daemon.me), rt, req, extra).await
}

/// [`open`] with only what it needs of the daemon, for a task of its own.
pub(crate) async fn open_with(
    (links, me): (&dyn crate::state::Links, &tether_proto::ClientId),
    rt: &RemoteTarget,
    req: &Request,
    extra: &[u8],
) -> Result<(FrameReader<ChannelReader>, ChannelWriter), ErrorInfo> {
    let c = rt.computer.as_str();
    let (mux, ch) = links.channel(rt).await?;
    let (r, mut w) = mux.split(ch);
    let mut bytes = tether_proto::encode(&hello_from(me)).map_err(|e| lost(c, e))?;
    bytes.extend(tether_proto::encode(req).map_err(|e| lost(c, e))?);
    bytes.extend_from_slice(extra);
    w.send(&bytes).await.map_err(|e| lost(c, e))?;
    let mut reader = FrameReader::new(r);
    match reader.read::<Response>().await {
        Ok(Some(Response::Hello { .. })) => Ok((reader, w)),
        Ok(Some(Response::Error(e))) => Err(on(c, e)),
        Ok(other) => Err(lost(c, format!("unexpected reply {other:?}"))),
        Err(e) => Err(lost(c, e)),
    }
}

/// One request, one reply.
pub async fn call(daemon: &Daemon, rt: &RemoteTarget, req: Request) -> Result<Response, ErrorInfo> {
    call_with((&*daemon.links, &daemon.me), rt, req).await
}

/// [`call`] with only what it needs of the daemon, for a task of its own.
pub(crate) async fn call_with(
    on_link: (&dyn crate::state::Links, &tether_proto::ClientId),
    rt: &RemoteTarget,
    req: Request,
) -> Result<Response, ErrorInfo> {
    let c = rt.computer.as_str();
    let (mut reader, _w) = open_with(on_link, rt, &req, &[]).await?;
    match reader.read::<Response>().await {
        Ok(Some(Response::Error(e))) => Err(on(c, e)),
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(lost(c, "closed before replying")),
        Err(e) => Err(lost(c, e)),
    }
}

/// `new COMPUTER`: the far daemon creates the session; this client keeps a handle with its
/// own Id and Name. A default name stays local (`Session<Id>`), so two clients never collide
/// on the far side; a chosen name is used there too.
pub async fn new_session(daemon: &Daemon, mut spec: NewSession) -> Result<SessionInfo, ErrorInfo> {
    let Some(rt) = spec.remote.take() else {
        return Err(ErrorInfo::new(ErrorKind::Internal, "no computer given"));
    };
    if let Some(n) = &spec.name {
        tether_proto::validate_name(n)?;
    }
    let id = {
        let mut reg = daemon.registry.lock().await;
        if let Some(n) = spec.name.as_ref().filter(|n| reg.name_taken(n)) {
            return Err(ErrorInfo::new(
                ErrorKind::Usage,
                format!("a session named {n} already exists"),
            ));
        }
        reg.allocate_id()
    };
    let local_name = spec.name.clone().unwrap_or_else(|| format!("Session{id}"));
    // The session starts with the far computer's environment and the user's home there.
    spec.env.clear();
    spec.cwd = None;
    let reply = call(daemon, &rt, Request::New(spec)).await?;
    let Response::Sessions(mut v) = reply else {
        return Err(lost(&rt.computer, "unexpected reply to new"));
    };
    if v.is_empty() {
        return Err(lost(&rt.computer, "no session in the reply"));
    }
    let mut info = as_seen_here(v.remove(0), &rt);
    info.id = id;
    info.name = local_name;
    let handle = RemoteHandle {
        info: info.clone(),
        target: rt.clone(),
    };
    let stored = {
        let mut reg = daemon.registry.lock().await;
        if reg.name_taken(&info.name) {
            Err(ErrorInfo::new(
                ErrorKind::Usage,
                format!("a session named {} already exists", info.name),
            ))
        } else {
            reg.insert_remote(handle).map_err(|e| {
                ErrorInfo::new(
                    ErrorKind::Internal,
                    format!("cannot record the handle: {e}"),
                )
            })
        }
    };
    if let Err(e) = stored {
        let _ = close(daemon, &rt, &info.instance_id).await;
        return Err(e);
    }
    Ok(info)
}

/// `get --computer C`: the far daemon's list of this user's sessions, including ones other
/// clients made. Sessions this client holds a handle to show its Id and Name.
pub async fn get(
    daemon: &Daemon,
    mut filter: SessionFilter,
) -> Result<Vec<SessionInfo>, ErrorInfo> {
    let Some(rt) = filter.remote.take() else {
        return Ok(Vec::new());
    };
    let reply = call(daemon, &rt, Request::Get(filter)).await?;
    let Response::Sessions(v) = reply else {
        return Err(lost(&rt.computer, "unexpected reply to get"));
    };
    let reg = daemon.registry.lock().await;
    Ok(v.into_iter()
        .map(|i| {
            let mine = reg
                .remotes
                .get(&i.instance_id)
                .map(|h| (h.info.id, h.info.name.clone()));
            let mut i = as_seen_here(i, &rt);
            if let Some((id, name)) = mine {
                i.id = id;
                i.name = name;
            }
            i
        })
        .collect())
}

/// Brings remote handles up to date for a plain `get`: one request per computer. A computer
/// that cannot be reached leaves its handles as last seen, unavailable, with the reason.
pub async fn refresh(daemon: &Daemon, handles: Vec<RemoteHandle>) -> Vec<SessionInfo> {
    let mut by_target: std::collections::HashMap<RemoteTarget, Vec<RemoteHandle>> =
        Default::default();
    for h in handles {
        by_target.entry(h.target.clone()).or_default().push(h);
    }
    let mut tasks = Vec::new();
    for (rt, hs) in by_target {
        let filter = SessionFilter::default();
        tasks.push(async move {
            let live = call(daemon, &rt, Request::Get(filter)).await;
            (rt, hs, live)
        });
    }
    let mut out = Vec::new();
    for (rt, hs, live) in futures_util::future::join_all(tasks).await {
        for h in hs {
            let mut info = h.info.clone();
            match &live {
                Ok(Response::Sessions(v)) => {
                    match v.iter().find(|i| i.instance_id == info.instance_id) {
                        Some(now) => {
                            let (id, name) = (info.id, info.name.clone());
                            info = as_seen_here(now.clone(), &rt);
                            info.id = id;
                            info.name = name;
                        }
                        None => {
                            info.state = State::Closed;
                            info.availability = Availability::None;
                            info.reason = Some(format!("it no longer exists on {}", rt.computer));
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    info.availability = Availability::None;
                    info.reason = Some(e.message.clone());
                }
            }
            if live.is_ok() {
                let mut reg = daemon.registry.lock().await;
                if reg.remotes.contains_key(&info.instance_id) {
                    let _ = reg.insert_remote(RemoteHandle {
                        info: info.clone(),
                        target: rt.clone(),
                    });
                }
            }
            out.push(info);
        }
    }
    out
}

/// Closes a session on its computer.
pub async fn close(daemon: &Daemon, rt: &RemoteTarget, instance_id: &str) -> Result<(), ErrorInfo> {
    let spec = tether_proto::RemoveSpec {
        sessions: vec![instance_id.to_string()],
        all: false,
    };
    match call(daemon, rt, Request::Remove(spec)).await {
        Ok(_) => Ok(()),
        // Already gone there (idle timeout, removed by another client): nothing left to close.
        Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
