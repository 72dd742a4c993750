//! System mode (`tether daemon start --system`): one root daemon for every user of a computer,
//! as PowerShell's WinRM service is one endpoint for every user of a Windows machine.
//!
//! Its socket is open to everyone; the kernel tells us each client's uid (SO_PEERCRED), and
//! that uid alone decides what the connection is. Each user gets their own view of the daemon:
//! a [`Daemon`](crate::state::Daemon) over their own area of the tree (`users/<uid>/`), with its own table of
//! sessions, jobs and client identity. Requests are then served by the same code as a per-user
//! daemon's, so owners are kept apart by construction: no request can even name another user's
//! session. Sessions run as their owner, or as a configuration's `run_as` account for the users
//! it allows ([`super::create`]).
//!
//! The system daemon does not reach other computers (ssh as root with root's keys on behalf of
//! a user would be wrong); users do that with their own per-user daemon. Only root may stop it,
//! and stopping it leaves every session running for the next system daemon to adopt, as
//! restarting sshd leaves logins alone.
//!
//! The listener that tells users apart and keeps a view for each is the router's
//! (`server::system`); the user's account is [`crate::account`], a view's place in the system
//! daemon [`Role`]. What is left here is what a view refuses.

use crate::state::Role;
use tether_proto::{ErrorInfo, ErrorKind, Request};

/// What a user's view refuses before serving: other computers, and stopping the daemon unless
/// the user is root.
pub fn check(role: &Role, req: &Request) -> Result<(), ErrorInfo> {
    let remote = match req {
        Request::New(s) => s.remote.is_some(),
        Request::Get(f) => f.remote.is_some(),
        Request::Configs(q) => q.remote.is_some(),
        Request::Invoke(s) => s.remote.is_some(),
        Request::Disconnect(l) | Request::Connect(l) | Request::Receive(l) => l.remote.is_some(),
        Request::JobStart(j) => j.children.iter().any(|c| c.spec.remote.is_some()),
        Request::DaemonStop if role.account.uid != 0 => {
            return Err(ErrorInfo::new(
                ErrorKind::Permission,
                format!(
                    "only root may stop the system daemon (you are {})",
                    role.account.name
                ),
            ));
        }
        _ => false,
    };
    if remote {
        return Err(ErrorInfo::new(
            ErrorKind::Usage,
            "the system daemon does not reach other computers; use your own daemon (without --system) for that",
        ));
    }
    Ok(())
}
