//! The client closing (SPEC §3.14): `tether daemon stop`, or SIGTERM at logout.

use super::hosts;
use crate::state::Daemon;
use tether_proto::{Request, SessionFilter, State};

/// The client closes (SPEC §3.14): its sessions that run a command are Disconnected and go
/// on; its idle ones (no command, no background job) are closed. Local sessions whose
/// command still has its CLI attached keep it (that CLI talks to the session directly);
/// sessions another client holds are left alone.
pub async fn stop(daemon: &Daemon) {
    let sessions = super::sessions::get(daemon, &SessionFilter::default()).await;
    let remote: std::collections::HashMap<String, tether_proto::RemoteTarget> = {
        let reg = daemon.registry.lock().await;
        reg.remotes
            .values()
            .map(|h| (h.info.instance_id.clone(), h.target.clone()))
            .collect()
    };
    let mut tasks = Vec::new();
    for s in sessions {
        let ours = s.held_by.as_ref().is_none_or(|h| h.id == daemon.me.id);
        if s.state != State::Opened || !ours {
            continue;
        }
        // A session running background jobs (`job start --session`) is not idle: closing it
        // would end them, and the next daemon picks their output up again.
        let idle = s.availability != tether_proto::Availability::Busy && s.jobs == 0;
        let target = remote.get(&s.instance_id).cloned();
        tasks.push(async move {
            let iid = s.instance_id.clone();
            match (target, idle) {
                (None, true) => {
                    let _ = hosts::close(&daemon.paths, &iid).await;
                    daemon.registry.lock().await.forget(&iid);
                }
                (None, false) => {}
                (Some(rt), true) => {
                    if let Err(e) = daemon.afar.close(daemon, &rt, &iid).await {
                        tracing::warn!(
                            "closing session {} on {}: {}",
                            s.name,
                            rt.computer,
                            e.message
                        );
                    } else {
                        daemon.registry.lock().await.forget_remote(&iid);
                    }
                }
                (Some(rt), false) => {
                    let list = tether_proto::SessionList {
                        sessions: vec![iid],
                        remote: None,
                        keep: false,
                    };
                    if let Err(e) = daemon
                        .afar
                        .call(daemon, &rt, Request::Disconnect(list))
                        .await
                    {
                        tracing::warn!(
                            "disconnecting session {} on {}: {}",
                            s.name,
                            rt.computer,
                            e.message
                        );
                    }
                }
            }
        });
    }
    futures_util::future::join_all(tasks).await;
    super::pool::close_all(daemon).await;
    daemon.links.close_all().await;
    let _ = daemon.shutdown.send(true);
}
