//! Forwarded ssh agents of clients on other computers (SPEC §3.13).
//!
//! With `ForwardAgent`, each bridge has its own `SSH_AUTH_SOCK` (a socket sshd makes per
//! connection, gone with it) and announces it in `Bridged`. Sessions must not hold that path:
//! they outlive links. Instead this daemon keeps one symbolic link per client,
//! `<TETHER_HOME>/agent/<client id>` (under the socket directory when the home's path is long),
//! pointing at the forwarded socket of the newest connection of that client whose socket is
//! still there, re-pointed when that one ends and removed when none is left, and sessions made
//! for that client get it as `SSH_AUTH_SOCK`. The presence channel ([`super::presence`]) keeps
//! a link's socket counted for as long as the link is up. Every announced path is checked first
//! ([`valid_agent`]).
//!
//! This is the local role's: the agent serves sessions on this computer, whoever reaches them.

use crate::state::Daemon;
use std::path::{Path, PathBuf};
use tether_proto::ClientId;

/// Longest agent socket path a bridge may announce.
const MAX_AGENT_PATH: usize = 1024;
/// Longest path of the per-client link (a unix socket path is at most ~108 bytes).
const MAX_LINK_PATH: usize = 100;

/// The agent sockets forwarded by each client's bridges, by the path of the client's stable
/// link (`<run>/agent/<client id>`): each socket with when it was first seen and how many
/// connections carry it now.
type Forwarded = std::collections::HashMap<PathBuf, Vec<(PathBuf, u64, usize)>>;

static AGENTS: std::sync::Mutex<Option<Forwarded>> = std::sync::Mutex::new(None);
static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn agents() -> std::sync::MutexGuard<'static, Option<Forwarded>> {
    AGENTS.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection from a bridge that carries its client's forwarded agent. While one lives, the
/// client's stable link points at the agent of the newest bridge of that client whose socket
/// is still there; when the last goes, the link goes too.
pub struct AgentUse {
    link: PathBuf,
    socket: PathBuf,
}

/// Where sessions of `client` find its forwarded agent on this computer.
fn link_path(daemon: &Daemon, client: &ClientId) -> Option<PathBuf> {
    if daemon.system.is_some() || tether_proto::validate_client(client).is_err() {
        return None;
    }
    let link = daemon.paths.run.join("agent").join(&client.id);
    (link.as_os_str().len() <= MAX_LINK_PATH).then_some(link)
}

/// `path` as a bridge announced it, if it is an agent socket this daemon may link to: an
/// absolute path without NUL or line breaks, at most 1 KiB, naming a socket (not a symbolic
/// link) that belongs to this daemon's user.
pub fn valid_agent(path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if path.is_empty()
        || path.len() > MAX_AGENT_PATH
        || path.contains(['\0', '\n', '\r'])
        || !path.starts_with('/')
    {
        return None;
    }
    let p = PathBuf::from(path);
    let m = std::fs::symlink_metadata(&p).ok()?;
    (m.file_type().is_socket() && m.uid() == nix::unistd::geteuid().as_raw()).then_some(p)
}

fn is_agent_socket(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

/// Points `link` at `socket` (atomically: a new link renamed over the old one).
fn point(link: &Path, socket: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if std::fs::read_link(link).is_ok_and(|t| t == socket) {
        return Ok(());
    }
    let dir = link.parent().unwrap_or(Path::new("/"));
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let name = link.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(
        ".{name}.{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::os::unix::fs::symlink(socket, &tmp)?;
    std::fs::rename(&tmp, link).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Brings `link` in line with the sockets `list` holds: the newest one still there, else
/// nothing (unless it points at a live socket some other daemon put there; `gone` is the
/// socket that was just given up).
fn settle(link: &Path, list: &[(PathBuf, u64, usize)], gone: Option<&Path>) {
    let newest = list
        .iter()
        .filter(|(s, _, _)| is_agent_socket(s))
        .max_by_key(|(_, seq, _)| *seq);
    match newest {
        Some((s, _, _)) => {
            if let Err(e) = point(link, s) {
                tracing::warn!("cannot link {} to {}: {e}", link.display(), s.display());
            }
        }
        None => {
            let target = std::fs::read_link(link).ok();
            let stale = target
                .as_deref()
                .is_some_and(|t| Some(t) == gone || !is_agent_socket(t));
            if stale {
                let _ = std::fs::remove_file(link);
            }
        }
    }
}

/// A bridged connection of `client` carries the agent at `path` (its bridge's
/// `SSH_AUTH_SOCK`): checked, counted, and the client's link re-pointed at the newest.
pub fn agent_arrived(daemon: &Daemon, client: &ClientId, path: &str) -> Option<AgentUse> {
    let link = link_path(daemon, client)?;
    let Some(socket) = valid_agent(path) else {
        tracing::warn!(
            "client {}: ignoring the ssh agent its bridge announced (not a socket of this user)",
            client.label
        );
        return None;
    };
    let mut all = agents();
    let list = all.get_or_insert_default().entry(link.clone()).or_default();
    match list.iter_mut().find(|(s, _, _)| *s == socket) {
        Some((_, _, n)) => *n += 1,
        None => list.push((
            socket.clone(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            1,
        )),
    }
    settle(&link, list, None);
    Some(AgentUse { link, socket })
}

impl Drop for AgentUse {
    fn drop(&mut self) {
        let mut all = agents();
        let Some(map) = all.as_mut() else { return };
        let Some(list) = map.get_mut(&self.link) else {
            return;
        };
        if let Some(i) = list.iter().position(|(s, _, _)| *s == self.socket) {
            list[i].2 -= 1;
            if list[i].2 == 0 {
                list.remove(i);
            }
        }
        settle(&self.link, list, Some(&self.socket));
        if list.is_empty() {
            map.remove(&self.link);
        }
    }
}

/// The stable path of `client`'s forwarded agent, if one is reachable through it now: what
/// sessions made for that client get as `SSH_AUTH_SOCK`.
pub fn agent_for(daemon: &Daemon, client: &ClientId) -> Option<PathBuf> {
    let link = link_path(daemon, client)?;
    let target = std::fs::read_link(&link).ok()?;
    is_agent_socket(&target).then_some(link)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_socket_of_ours_named_plainly_is_taken_for_an_agent() {
        let dir = std::env::temp_dir().join(format!("tether-agent-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("agent.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let s = sock.to_str().unwrap();
        assert_eq!(valid_agent(s), Some(sock.clone()));
        let file = dir.join("file");
        std::fs::write(&file, b"").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&sock, &link).unwrap();
        let long = format!("/{}", "a".repeat(MAX_AGENT_PATH));
        for bad in [
            "",
            "agent.sock",
            "relative/agent.sock",
            &format!("{s}\0x"),
            &format!("{s}\n"),
            &long,
            file.to_str().unwrap(),
            link.to_str().unwrap(),
            dir.join("missing").to_str().unwrap(),
        ] {
            assert_eq!(valid_agent(bad), None, "{bad:?} was taken");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_link_follows_the_newest_socket_still_there_and_goes_with_the_last() {
        let dir = std::env::temp_dir().join(format!("tether-agent-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.sock"), dir.join("b.sock"));
        let la = std::os::unix::net::UnixListener::bind(&a).unwrap();
        let _lb = std::os::unix::net::UnixListener::bind(&b).unwrap();
        let link = dir.join("agent").join("client");
        let mut list = vec![(a.clone(), 1, 1)];
        settle(&link, &list, None);
        assert_eq!(std::fs::read_link(&link).unwrap(), a);
        list.push((b.clone(), 2, 1));
        settle(&link, &list, None);
        assert_eq!(std::fs::read_link(&link).unwrap(), b);
        // The newest ends: back to the older one.
        list.pop();
        settle(&link, &list, Some(&b));
        assert_eq!(std::fs::read_link(&link).unwrap(), a);
        // The older one's socket is gone (its link died) and nothing else is left.
        drop(la);
        std::fs::remove_file(&a).unwrap();
        list.clear();
        settle(&link, &list, Some(&a));
        assert!(std::fs::symlink_metadata(&link).is_err(), "the link stayed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
