//! Spare session hosts for temporary invocations that come from other computers.
//!
//! `invoke --computer A,B,…` runs each command in a temporary session on each computer. Made
//! from scratch, that session costs a host process and a shell (two execs, a few milliseconds
//! of CPU) for a command that may take microseconds. A pooled host instead keeps one pristine
//! shell and runs each temporary invocation in a subshell of it (a fork): the subshell starts
//! with the state the shell started with, and whatever it changes ends with it. After a clean
//! end (exit sent, output delivered, nothing left running) the host tells us it is free and
//! goes back here; one that ended any other way becomes an ordinary temporary session.
//!
//! Only invocations that bring no environment and no directory are pooled: those from another
//! computer, which start with this computer's environment as an ssh login would (a local
//! client's temporary session starts with the client's own). Restricted configurations and
//! those with a session limit are never pooled.
//!
//! Spares are kept per configuration file as it is now (an edited configuration is never
//! served by a spare made from its old text), at most `TETHER_POOL_MAX` (default 32, the default
//! throttle limit; 0 turns pooling off) for `TETHER_POOL_IDLE` seconds (default 60) after their
//! last use. A daemon that stops closes its spares; one that starts closes any it finds.

use super::hosts;
use crate::state::Daemon;
use std::sync::Arc;
use std::time::Duration;
use tether_proto::host::HostRequest;
use tether_proto::{ClientId, ErrorInfo, InvokeSpec, NewSession, Request, Response, SessionInfo};

/// Whether a temporary invocation may run in a spare (see the module's doc).
pub(crate) fn eligible(spec: &InvokeSpec) -> bool {
    spec.session.is_empty()
        && spec.remote.is_none()
        && spec.env.is_empty()
        && spec.cwd.is_none()
        && spec.tty.is_none()
        && crate::state::pool::max() > 0
}

/// The host for a temporary invocation: a free spare, else a new host (pooled when the
/// configuration allows), and whether it is a spare (it then stays registered, hidden, after
/// the invocation). The caller hands the invocation to it.
pub(crate) async fn host_for(
    daemon: &Arc<Daemon>,
    spec: &InvokeSpec,
    client: &ClientId,
) -> Result<(SessionInfo, bool), ErrorInfo> {
    let key = key(daemon, spec.configuration.as_deref().unwrap_or("default"));
    if let Some(info) = daemon.pool.take(&key) {
        return Ok((info, true));
    }
    let ns = NewSession {
        configuration: spec.configuration.clone(),
        temporary: true,
        ..Default::default()
    };
    let (info, pooled) = super::create::new_temporary(daemon, ns, client, true).await?;
    // A spare that cannot be watched would never come back: it serves this one invocation and
    // then waits for its idle timeout.
    let watched = pooled && watch(daemon, &info, key).await;
    Ok((info, watched))
}

/// Which spares may serve a configuration: its name and its file's identity now (inode, size,
/// modification time), taken before a spare is made, so that one made from an older text is
/// never chosen again (it expires unused).
fn key(daemon: &Daemon, name: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(daemon.config_dir().join(format!("{name}.toml"))) {
        Ok(m) => format!(
            "{name}\0{}\0{}\0{}.{}",
            m.ino(),
            m.len(),
            m.mtime(),
            m.mtime_nsec()
        ),
        Err(_) => name.to_string(),
    }
}

/// Subscribes to a new spare's "free" signal, then follows it in a task of its own: each
/// signal puts the host back in the pool (or closes it when the pool is full); the end of the
/// connection means the host is gone. Returns false if the host could not be reached.
async fn watch(daemon: &Arc<Daemon>, info: &SessionInfo, key: String) -> bool {
    let iid = info.instance_id.clone();
    let Ok(mut conn) = hosts::connect(&daemon.paths, &iid).await else {
        return false;
    };
    if conn
        .writer
        .send(&Request::from(HostRequest::PoolWatch))
        .await
        .is_err()
        || conn.expect_hello().await.is_err()
    {
        return false;
    }
    // The first Ok says the host is subscribed: a "free" sent from now on reaches us.
    if !matches!(conn.reader.read::<Response>().await, Ok(Some(Response::Ok))) {
        return false;
    }
    let (daemon, info) = (Arc::downgrade(daemon), info.clone());
    tokio::spawn(async move {
        while let Ok(Some(Response::Ok)) = conn.reader.read::<Response>().await {
            let Some(d) = daemon.upgrade() else { return };
            if !d.pool.put(&key, info.clone()) {
                let _ = hosts::close(&d.paths, &iid).await;
            }
        }
        if let Some(d) = daemon.upgrade() {
            d.pool.forget(&iid);
            d.registry.lock().await.forget_temporary(&iid);
        }
    });
    true
}

/// Closes spares unused for longer than [`idle`](crate::state::pool::idle), as long as the
/// daemon runs.
pub(crate) fn spawn_expiry(daemon: &Arc<Daemon>) {
    let weak = Arc::downgrade(daemon);
    tokio::spawn(async move {
        let every = (crate::state::pool::idle() / 4).max(Duration::from_secs(1));
        loop {
            tokio::time::sleep(every).await;
            let Some(d) = weak.upgrade() else { return };
            for info in d.pool.drain(crate::state::pool::idle()) {
                let _ = hosts::close(&d.paths, &info.instance_id).await;
            }
        }
    });
}

/// Closes every free spare (the daemon is stopping: spares are a cache, not sessions). Each
/// one's watch then sees it go and forgets it.
pub(crate) async fn close_all(daemon: &Daemon) {
    for info in daemon.pool.drain(Duration::ZERO) {
        let _ = hosts::close(&daemon.paths, &info.instance_id).await;
    }
}
