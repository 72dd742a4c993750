//! `tether remove`: closing sessions and forgetting their handles (Remove-PSSession).

use super::hosts;
use crate::state::Daemon;
use crate::state::registry::Found;
use tether_proto::{ClientId, ErrorInfo, ErrorKind, RemoveSpec, Response, State};

/// Closes the named sessions (or all of them), local or on other computers, and forgets their
/// handles; answers with the removed sessions, or the first error.
pub(crate) async fn remove(
    daemon: &Daemon,
    spec: RemoveSpec,
    client: &ClientId,
) -> Result<Response, ErrorInfo> {
    let targets: Vec<Result<(String, Option<tether_proto::RemoteTarget>), ErrorInfo>> = {
        let reg = daemon.registry.lock().await;
        let words: Vec<String> = if spec.all {
            reg.list().into_iter().map(|i| i.instance_id).collect()
        } else {
            spec.sessions.clone()
        };
        words
            .iter()
            .map(|w| {
                reg.resolve(w).map(|f| match f {
                    Found::Local(m) => (m.info.instance_id.clone(), None),
                    Found::Remote(h) => (h.info.instance_id.clone(), Some(h.target.clone())),
                })
            })
            .collect()
    };
    let mut removed = Vec::new();
    let mut first_err = None;
    for t in targets {
        match t {
            Ok((iid, Some(rt))) => {
                // The handle goes whatever the far side says: a computer that is gone for good
                // must not pin a handle forever. Its error is still reported.
                if let Err(e) = daemon.afar.close(daemon, &rt, &iid).await {
                    first_err.get_or_insert(e);
                }
                if let Some(mut h) = daemon.registry.lock().await.forget_remote(&iid) {
                    h.info.state = State::Closed;
                    h.info.availability = tether_proto::Availability::None;
                    removed.push(h.info);
                }
            }
            Ok((iid, None)) => {
                // A session connected to another client is that client's to remove, as it is
                // to invoke or receive; `remove --all` passes over it.
                if let Some(live) = hosts::info(&daemon.paths, &iid).await
                    && let Some(h) = live.held_by.as_ref()
                    && live.state == State::Opened
                    && h.id != client.id
                {
                    if !spec.all {
                        first_err.get_or_insert(ErrorInfo::new(
                            ErrorKind::Busy,
                            format!(
                                "session {} is connected to another client ({}); disconnect it there first",
                                live.name, h.label
                            ),
                        ));
                    }
                    continue;
                }
                let closed = hosts::close(&daemon.paths, &iid).await;
                let mut reg = daemon.registry.lock().await;
                if let Err(e) = closed {
                    first_err.get_or_insert(e);
                }
                if let Some(mut meta) = reg.forget(&iid) {
                    meta.info.state = State::Closed;
                    meta.info.availability = tether_proto::Availability::None;
                    meta.info.host_pid = 0;
                    removed.push(meta.info);
                }
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(Response::Sessions(removed)),
    }
}
