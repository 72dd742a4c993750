//! The router: hands each request to the role that serves it.
//!
//! A request about this computer's sessions goes to the local role ([`crate::local`]); one
//! about another computer (`--computer`, a handle to a far session, a job) to the remote role
//! ([`crate::remote`]). Where a request needs both (an invocation in a session that turns out
//! to be far away, a `connect` that should also resume the jobs of the sessions it reattached)
//! the router does the gluing, so that neither role imports the other.

use super::Caller;
use crate::local;
use crate::remote;
use crate::state::registry::{Found, seen_by};
use crate::state::{Daemon, Reader, Writer};
use std::sync::Arc;
use tether_proto::{DaemonStatus, ErrorInfo, ErrorKind, Request, Response};

/// Serves one request. Gives the connection back when it carries more requests; `None` when
/// the request took it over (an invocation, a stream, a presence channel) or it ended.
pub(super) async fn route(
    daemon: &Arc<Daemon>,
    req: Request,
    caller: &Caller,
    (reader, mut writer): (Reader, Writer),
) -> Option<(Reader, Writer)> {
    let client = &caller.client;
    let reply = match req {
        Request::New(spec) if spec.remote.is_some() => remote::requests::new_session(daemon, spec)
            .await
            .map(|i| Response::Sessions(vec![i])),
        Request::New(spec) => local::create::new_session(daemon, spec, client)
            .await
            .map(Response::Sessions),
        Request::Get(filter) if filter.remote.is_some() => remote::requests::get(daemon, filter)
            .await
            .map(Response::Sessions),
        Request::Get(filter) => {
            let mut list = local::sessions::get(daemon, &filter).await;
            seen_by(&mut list, client);
            if let Some(p) = &caller.pin {
                local::pinning::visible(p, &mut list);
            }
            Ok(Response::Sessions(list))
        }
        Request::Remove(spec) => local::removing::remove(daemon, spec, client).await,
        Request::DaemonStatus => Ok(Response::Status(status(daemon).await)),
        Request::DaemonStop => {
            let _ = writer.send(&Response::Ok).await;
            match &daemon.system {
                // Root stops the system daemon; every user's sessions go on.
                Some(role) => {
                    let _ = role.stop.send(true);
                }
                None => local::closing::stop(daemon).await,
            }
            return None;
        }
        Request::Invoke(mut spec) => {
            // A far session (or a temporary one on another computer) is the remote role's.
            let far = if spec.session.is_empty() {
                spec.remote.clone()
            } else {
                match daemon.registry.lock().await.resolve(&spec.session) {
                    Ok(Found::Remote(h)) => {
                        spec.session = h.info.instance_id.clone();
                        Some(h.target.clone())
                    }
                    _ => None,
                }
            };
            match far {
                Some(rt) => {
                    let giver = caller.pid.filter(|_| caller.gives);
                    remote::relay::invoke(daemon, rt, spec, (reader, giver), writer).await
                }
                None => local::sessions::invoke(daemon, spec, client, reader, writer).await,
            }
            return None;
        }
        Request::Receive(list) => {
            local::attach::receive(daemon, list, client, reader, writer).await;
            return None;
        }
        Request::Resume {
            session,
            from,
            keep_stdin,
            keep,
        } => {
            let how = local::attach::Resuming {
                session,
                from,
                keep_stdin,
                keep,
            };
            local::attach::resume(daemon, how, client, reader, writer).await;
            return None;
        }
        Request::Aside {
            session,
            invocation,
            what,
        } => local::attach::aside(daemon, &session, (invocation, what), client).await,
        Request::Presence => {
            local::presence::serve(daemon, client.clone(), reader, writer).await;
            return None;
        }
        Request::Goodbye => Ok(Response::Ok),
        Request::GiveStdin { token } => {
            let fd = caller
                .passed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            daemon
                .gifts
                .give(token, caller.pid, fd)
                .map(|()| Response::Ok)
        }
        Request::Disconnect(list) => local::attach::disconnect(daemon, list, client).await,
        Request::Connect(list) => {
            let reply = local::attach::connect(daemon, list, client).await;
            if let Ok(Response::Sessions(v)) = &reply {
                remote::jobs::reconnected(daemon, v);
            }
            reply
        }
        Request::JobStart(req) => remote::jobs::start(daemon, req)
            .await
            .map(|i| Response::Jobs(vec![i])),
        Request::JobList(q) => daemon.jobs.list(&q).map(Response::Jobs),
        Request::JobWait(q) => remote::jobs::wait(&daemon.jobs, &q)
            .await
            .map(Response::Jobs),
        Request::JobReceive(q) => remote::jobs::receive(&daemon.jobs, &q, &mut writer).await,
        Request::Configs(q) => match q.remote {
            Some(rt) => {
                let far = tether_proto::ConfigQuery {
                    name: q.name,
                    remote: None,
                };
                remote::requests::call(daemon, &rt, Request::Configs(far)).await
            }
            None => local::configs::list(
                &daemon.config_dir(),
                q.name.as_deref(),
                daemon.system.as_ref().map(|r| &r.account),
            )
            .map(Response::Configs),
        },
        Request::SessionJob(req) => local::session_jobs::handle(daemon, req, client).await,
        Request::JobStop(q) => remote::jobs::stop(daemon, &q).await.map(Response::Jobs),
        Request::JobRemove(q) => remote::jobs::remove(daemon, &q)
            .await
            .map(|()| Response::Ok),
        _ => Err(ErrorInfo::new(
            ErrorKind::Usage,
            "request not valid outside an invocation",
        )),
    };
    let msg = reply.unwrap_or_else(Response::Error);
    if writer.feed(&msg).await.is_err() {
        return None;
    }
    Some((reader, writer))
}

async fn status(daemon: &Daemon) -> DaemonStatus {
    DaemonStatus {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        home: daemon.paths.home.display().to_string(),
        sessions: daemon.registry.lock().await.list().len() as u32,
        links: daemon.links.status(),
    }
}
