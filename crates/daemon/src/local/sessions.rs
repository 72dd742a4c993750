//! This computer's sessions as a whole: listing them (`get`), running an invocation in one
//! (handing the client's connection to its host), and closing the temporary ones a killed
//! daemon left behind.
//!
//! Handles to sessions on other computers are listed too: their state comes through the
//! [`Afar`](crate::state::Afar) seam, so this module does not import the remote role.

use super::hosts;
use crate::state::registry::{Found, selected};
use crate::state::{Daemon, Reader, Writer};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use tether_proto::host::HostRequest;
use tether_proto::{
    ClientId, ErrorInfo, ErrorKind, InvokeSpec, NewSession, Response, SessionFilter, SessionInfo,
    State,
};
use tether_transport::FrameWriter;
use tokio::net::UnixStream;

/// Temporary sessions left by a daemon that died mid-invocation are closed on adoption.
pub(crate) async fn cleanup_temporaries(daemon: &Daemon) {
    let temps: Vec<String> = {
        let reg = daemon.registry.lock().await;
        reg.sessions
            .values()
            .filter(|m| m.temporary)
            .map(|m| m.info.instance_id.clone())
            .collect()
    };
    for iid in temps {
        let _ = hosts::close(&daemon.paths, &iid).await;
        daemon.registry.lock().await.forget(&iid);
    }
}

/// Lists sessions, asking each live host (and each computer holding one) for its current state.
pub(crate) async fn get(daemon: &Daemon, filter: &SessionFilter) -> Vec<SessionInfo> {
    let (candidates, remotes): (Vec<SessionInfo>, Vec<_>) = {
        let reg = daemon.registry.lock().await;
        let local = reg
            .sessions
            .values()
            .filter(|m| !m.temporary && selected(filter, &m.info))
            .map(|m| m.info.clone())
            .collect();
        let remote = reg
            .remotes
            .values()
            .filter(|h| selected(filter, &h.info))
            .cloned()
            .collect();
        (local, remote)
    };
    let mut tasks = Vec::new();
    for info in candidates {
        let paths = daemon.paths.clone();
        tasks.push(tokio::spawn(async move {
            if !matches!(info.state, State::Opened | State::Disconnected) {
                return (info, None, false);
            }
            let live = hosts::info(&paths, &info.instance_id).await;
            let gone = live.is_none();
            (info, live, gone)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        let Ok((info, live, gone)) = t.await else {
            continue;
        };
        let info = match (live, gone) {
            (Some(live), _) => live,
            (None, true) => {
                // The host did not answer: it recorded a final state and exited, or it was killed.
                match daemon.registry.lock().await.settle(&info.instance_id) {
                    Some(m) => m.info.clone(),
                    None => continue,
                }
            }
            (None, false) => info,
        };
        if filter.state.is_none_or(|s| s == info.state) {
            out.push(info);
        }
    }
    if !remotes.is_empty() {
        let live = daemon.afar.refresh(daemon, remotes).await;
        out.extend(
            live.into_iter()
                .filter(|i| filter.state.is_none_or(|s| s == i.state)),
        );
        out.sort_by_key(|i| i.id);
    }
    out
}

/// Runs an invocation on this computer: resolves the session (or creates a temporary one) and hands the client's
/// connection to its host, which serves the rest of the invocation directly.
pub(crate) async fn invoke(
    daemon: &Arc<Daemon>,
    mut spec: InvokeSpec,
    client: &ClientId,
    reader: Reader,
    mut writer: Writer,
) {
    let temporary = spec.session.is_empty();
    let mut spare = false;
    let target = if temporary && super::pool::eligible(&spec) {
        super::pool::host_for(daemon, &spec, client)
            .await
            .map(|(info, pooled)| {
                spare = pooled;
                info
            })
    } else if temporary {
        let ns = NewSession {
            env: spec.env.clone(),
            cwd: spec.cwd.clone(),
            configuration: spec.configuration.clone(),
            temporary: true,
            ..Default::default()
        };
        super::create::new_session(daemon, ns, client)
            .await
            .map(|mut v| v.remove(0))
    } else {
        resolve_open(daemon, &spec.session).await
    };
    let info = match target {
        Ok(info) => info,
        Err(e) => {
            let _ = writer.send(&Response::Error(e)).await;
            return;
        }
    };
    spec.client = Some(client.clone());
    // Only a client daemon of another computer (which names itself) comes back with a
    // `Resume`; our own CLI's stdin ends with its connection.
    let resumes = client.id != daemon.me.id;
    let handed = match hand_off(daemon, &info, (spec, resumes), reader, writer).await {
        Ok(handed) => handed,
        Err(e) => {
            tracing::debug!("invocation in {} could not start: {e}", info.name);
            false
        }
    };
    if spare {
        // It stays registered (hidden) while it is in the pool: the pool forgets it when it
        // goes.
        return;
    }
    if temporary {
        if !handed {
            let _ = hosts::close(&daemon.paths, &info.instance_id).await;
        }
        // The host closes itself after its one invocation; the handle was never listed.
        daemon
            .registry
            .lock()
            .await
            .forget_temporary(&info.instance_id);
    }
}

async fn resolve_open(daemon: &Daemon, word: &str) -> Result<SessionInfo, ErrorInfo> {
    let reg = daemon.registry.lock().await;
    let Found::Local(meta) = reg.resolve(word)? else {
        return Err(ErrorInfo::new(
            ErrorKind::Internal,
            format!("session {word} is on another computer"),
        ));
    };
    match meta.info.state {
        // A Disconnected session's host gives the precise answer.
        State::Opened | State::Disconnected => Ok(meta.info.clone()),
        state => Err(closed_error(
            &meta.info.name,
            state,
            meta.info.reason.as_deref(),
        )),
    }
}

pub(crate) fn closed_error(name: &str, state: State, reason: Option<&str>) -> ErrorInfo {
    let why = reason.map(|r| format!(": {r}")).unwrap_or_default();
    ErrorInfo::new(
        ErrorKind::NotFound,
        format!(
            "session {name} is {}{why}; 'tether remove {name}' clears it",
            state.as_str()
        ),
    )
}

/// Hands the client's connection to the session host (SCM_RIGHTS) together with the `Invoke`
/// and any bytes already read past it. From then on client and host talk directly: the daemon
/// adds no hop to the output, the exit status or Ctrl-C.
pub(crate) async fn hand_off(
    daemon: &Daemon,
    info: &SessionInfo,
    (spec, resumes): (InvokeSpec, bool),
    reader: Reader,
    writer: Writer,
) -> std::io::Result<bool> {
    hand_off_with(
        daemon,
        info,
        |prefix| HostRequest::Handoff {
            spec: Box::new(spec),
            prefix,
            resumes,
        },
        reader,
        writer,
    )
    .await
}

/// Hands the client's connection to the session's host with the request `make` builds from
/// the bytes already read past the client's own request.
pub(crate) async fn hand_off_with(
    daemon: &Daemon,
    info: &SessionInfo,
    make: impl FnOnce(Vec<u8>) -> HostRequest,
    reader: Reader,
    mut writer: Writer,
) -> std::io::Result<bool> {
    writer.flush().await.map_err(std::io::Error::other)?;
    let (client_r, prefix) = reader.into_parts();
    let client = client_r
        .reunite(writer.into_inner())
        .map_err(std::io::Error::other)?;
    let mut frame = Vec::new();
    for req in make(prefix).into_wire() {
        frame.extend(tether_proto::encode(&req).map_err(std::io::Error::other)?);
    }
    let sent = async {
        let host = UnixStream::connect(daemon.paths.host_socket(&info.instance_id)).await?;
        tether_transport::unix::send_with_fd(&host, &frame, client.as_raw_fd()).await
    }
    .await;
    if sent.is_ok() {
        return Ok(true);
    }
    // The host is gone or going: it records why (Broken, Closed) before it exits.
    let err = {
        match daemon.registry.lock().await.settle(&info.instance_id) {
            Some(m) => closed_error(&m.info.name, m.info.state, m.info.reason.as_deref()),
            None => closed_error(&info.name, State::Closed, None),
        }
    };
    let (r, w) = client.into_split();
    drop(r);
    let mut writer = FrameWriter::new(w);
    writer
        .send(&Response::Error(err))
        .await
        .map_err(std::io::Error::other)?;
    Ok(false)
}
