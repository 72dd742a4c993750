//! Connections pinned to one configuration (SPEC §3.19): an ssh key whose authorized_keys line
//! forces `tether bridge --configuration NAME` reaches that configuration's sessions and
//! nothing else.
//!
//! The bridge writes `Pin(NAME)` on each daemon connection before any byte of the client's, so
//! only the first frame of a connection can pin it (a client that sends one later is refused
//! like any bad request). A pinned connection creates sessions only with that configuration,
//! sees and uses only its sessions, and cannot stop the daemon, reach other computers, or run
//! jobs in the daemon.

use crate::state::Daemon;
use crate::state::registry::Found;
use tether_proto::{ClientId, ErrorInfo, ErrorKind, Request, SessionInfo};

fn refused(pin: &str, what: &str) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::Permission,
        format!("this connection is limited to configuration {pin}: {what} is not allowed"),
    )
}

/// What a request from another computer (through `tether bridge`) may bring: nothing of the
/// client's environment or directory. The session starts as an ssh login would, with this
/// computer's environment; on a pinned connection, with the account's login environment only
/// (HOME, USER, LOGNAME, SHELL, PATH), in its home, so that a key limited to a
/// configuration cannot steer the allowed programs with `LD_PRELOAD`, `PATH`, `GIT_*`, …
/// The configuration's own `environment` and `working_directory` come on top when the
/// session is made. A pinned connection also cannot skip the configuration's start-up script.
///
/// One thing does come from the client: when it forwards its ssh agent, an unpinned session
/// gets `SSH_AUTH_SOCK` set to the client's stable agent link ([`super::agents`]) in place
/// of whatever this daemon inherited (the socket of the bridge that started it, long gone).
/// The session then starts with this daemon's environment plus that variable, given
/// explicitly, so such a temporary invocation is not served by a spare ([`super::pool`]).
pub fn from_afar(daemon: &Daemon, pinned: bool, client: &ClientId, req: &mut Request) {
    let agent = match req {
        _ if pinned => None,
        Request::New(_) | Request::JobStart(_) => super::agents::agent_for(daemon, client),
        Request::Invoke(spec) if spec.session.is_empty() => {
            super::agents::agent_for(daemon, client)
        }
        _ => None,
    };
    let clean = || -> (Vec<(String, String)>, Option<String>) {
        if !pinned {
            let Some(link) = &agent else {
                return (Vec::new(), None);
            };
            let mut env: Vec<(String, String)> = std::env::vars()
                .filter(|(k, _)| k != "SSH_AUTH_SOCK")
                .collect();
            env.push(("SSH_AUTH_SOCK".into(), link.to_string_lossy().into_owned()));
            return (env, None);
        }
        let account = match &daemon.system {
            Some(role) => Ok(role.account.clone()),
            None => crate::account::Account::current(),
        };
        match account {
            Ok(a) => (a.login_env(&[]), Some(a.home.clone())),
            // No account to speak of: the bare minimum, in the root directory.
            Err(_) => (
                vec![("PATH".to_string(), "/usr/bin:/bin".to_string())],
                Some("/".to_string()),
            ),
        }
    };
    match req {
        Request::New(spec) => {
            (spec.env, spec.cwd) = clean();
            spec.no_profile &= !pinned;
        }
        Request::Invoke(spec) => (spec.env, spec.cwd) = clean(),
        Request::JobStart(j) => {
            for c in &mut j.children {
                (c.spec.env, c.spec.cwd) = clean();
            }
        }
        _ => {}
    }
}

/// Checks (and where needed narrows) a request on a connection pinned to `pin`.
pub async fn check(daemon: &Daemon, pin: &str, req: &mut Request) -> Result<(), ErrorInfo> {
    match req {
        Request::Hello { .. } | Request::Presence | Request::Goodbye => Ok(()),
        Request::New(spec) => {
            if spec.remote.is_some() {
                return Err(refused(pin, "reaching another computer"));
            }
            match spec.configuration.as_deref() {
                None => spec.configuration = Some(pin.to_string()),
                Some(c) if c == pin => {}
                Some(c) => return Err(refused(pin, &format!("configuration {c}"))),
            }
            Ok(())
        }
        Request::Get(filter) => match filter.remote {
            Some(_) => Err(refused(pin, "reaching another computer")),
            None => Ok(()),
        },
        Request::Configs(q) => {
            if q.remote.is_some() {
                return Err(refused(pin, "reaching another computer"));
            }
            q.name = Some(pin.to_string());
            Ok(())
        }
        Request::Invoke(spec) => {
            if spec.remote.is_some() {
                return Err(refused(pin, "reaching another computer"));
            }
            if spec.session.is_empty() {
                spec.configuration = Some(pin.to_string());
                Ok(())
            } else {
                ours(daemon, pin, std::slice::from_ref(&spec.session)).await
            }
        }
        Request::Remove(spec) => {
            if spec.all {
                // `remove --all` means all of this configuration's sessions.
                spec.all = false;
                spec.sessions = own_sessions(daemon, pin).await;
                return Ok(());
            }
            ours(daemon, pin, &spec.sessions).await
        }
        Request::Disconnect(list) | Request::Connect(list) | Request::Receive(list) => {
            if list.remote.is_some() {
                return Err(refused(pin, "reaching another computer"));
            }
            ours(daemon, pin, &list.sessions).await
        }
        Request::Resume { session, .. } | Request::Aside { session, .. } => {
            ours(daemon, pin, std::slice::from_ref(session)).await
        }
        Request::SessionJob(j) => ours(daemon, pin, std::slice::from_ref(&j.session)).await,
        Request::DaemonStatus => Err(refused(pin, "daemon status")),
        Request::DaemonStop => Err(refused(pin, "stopping the daemon")),
        _ => Err(refused(pin, "this request")),
    }
}

/// Every named session must be a local one of configuration `pin`.
async fn ours(daemon: &Daemon, pin: &str, words: &[String]) -> Result<(), ErrorInfo> {
    let reg = daemon.registry.lock().await;
    for w in words {
        match reg.resolve(w) {
            Ok(Found::Local(m)) if m.info.configuration_name == pin => {}
            // Not revealing whether another configuration has such a session.
            _ => {
                return Err(ErrorInfo::new(
                    ErrorKind::NotFound,
                    format!("session {w} not found in configuration {pin}"),
                ));
            }
        }
    }
    Ok(())
}

async fn own_sessions(daemon: &Daemon, pin: &str) -> Vec<String> {
    let reg = daemon.registry.lock().await;
    reg.sessions
        .values()
        .filter(|m| !m.temporary && m.info.configuration_name == pin)
        .map(|m| m.info.instance_id.clone())
        .collect()
}

/// What a pinned connection may see of a listing.
pub fn visible(pin: &str, list: &mut Vec<SessionInfo>) {
    list.retain(|i| i.configuration_name == pin);
}
