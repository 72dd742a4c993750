//! Whether the clients of other computers are still there (SPEC §3.13–14).
//!
//! A client daemon keeps one `Presence` channel open on each link it has to this computer. When
//! that channel ends with a `Goodbye`, the client closed an idle link on purpose and still
//! holds its sessions. When it ends without one (the client was killed, its computer went down,
//! the network broke) and no other link of that client is left, the client's idle sessions
//! become Disconnected, so that `get` shows them so and any client may `connect` them. A
//! running command learns the same from its own connection.
//!
//! The client side ([`keep`]) reopens the channel while the link lives, so a far daemon that
//! was restarted learns of the client again.
//!
//! **Forwarded agents.** With `ForwardAgent`, each bridge has its own `SSH_AUTH_SOCK` (a socket
//! sshd makes per connection, gone with it) and announces it in `Bridged`. Sessions must not
//! hold that path: they outlive links. Instead this daemon keeps one symbolic link per client,
//! `<TETHER_HOME>/agent/<client id>` (under the socket directory when the home's path is long),
//! pointing at the forwarded socket of the newest connection of that client whose socket is
//! still there, re-pointed when that one ends and removed when none is left, and sessions made
//! for that client get it as `SSH_AUTH_SOCK`. The presence channel keeps a link's socket
//! counted for as long as the link is up. Every announced path is checked first
//! ([`valid_agent`]).

use crate::hosts;
use crate::server::{Daemon, Reader, Writer};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tether_proto::{ClientId, Request, Response, State};
use tether_transport::FrameReader;
use tether_transport::mux::{ChannelWriter, Mux};

/// Serves one client's `Presence` channel until it ends.
pub async fn serve(daemon: &Daemon, client: ClientId, mut reader: Reader, mut writer: Writer) {
    count(daemon, &client, 1);
    let mut goodbye = false;
    if writer.flush().await.is_ok() {
        loop {
            match reader.read::<Request>().await {
                Ok(Some(Request::Goodbye)) => {
                    goodbye = true;
                    let _ = writer.send(&Response::Ok).await;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
    let left = count(daemon, &client, -1);
    if goodbye || left > 0 {
        return;
    }
    tracing::info!(
        "client {} vanished; its idle sessions are Disconnected",
        client.label
    );
    let held: Vec<String> = {
        let reg = daemon.registry.lock().await;
        reg.sessions
            .values()
            .filter(|m| m.info.state == State::Opened)
            .filter(|m| m.info.held_by.as_ref().is_none_or(|h| h.id == client.id))
            .map(|m| m.info.instance_id.clone())
            .collect()
    };
    let req = Request::HostClientGone(client);
    for iid in held {
        // The host decides: it knows its current holder and whether a command runs.
        let _ = hosts::ask(&daemon.paths, &iid, &req).await;
    }
}

/// Adds `delta` to the client's count of live presence channels; returns the new count.
fn count(daemon: &Daemon, client: &ClientId, delta: isize) -> usize {
    let mut present = daemon.present.lock().unwrap_or_else(|p| p.into_inner());
    let n = present.entry(client.id.clone()).or_default();
    *n = n.saturating_add_signed(delta);
    let now = *n;
    if now == 0 {
        present.remove(&client.id);
    }
    now
}

/// A link's presence channel, as its client side holds it.
#[derive(Clone, Default)]
pub struct Presence {
    writer: std::sync::Arc<std::sync::Mutex<Option<ChannelWriter>>>,
    /// Raised when the far daemon answers a goodbye.
    answered: std::sync::Arc<tokio::sync::Notify>,
}

impl Presence {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ChannelWriter>> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_open(&self) -> bool {
        self.lock().is_some()
    }

    /// Tells the far daemon that this client closes the link on purpose, and waits (briefly)
    /// for its answer, so that the goodbye is not lost with the link.
    pub async fn goodbye(&self) {
        let Some(mut w) = self.lock().take() else {
            return;
        };
        let Ok(bytes) = tether_proto::encode(&Request::Goodbye) else {
            return;
        };
        let said = async {
            if w.send(&bytes).await.is_ok() {
                self.answered.notified().await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), said).await;
    }
}

/// The client side: keeps a `Presence` channel open on `mux` for as long as the link lives,
/// reopening it (once a second at most) if the far daemon restarts.
pub async fn keep(hello: Request, mux: Mux, computer: String, presence: Presence) {
    let bytes = match (
        tether_proto::encode(&hello),
        tether_proto::encode(&Request::Presence),
    ) {
        (Ok(mut h), Ok(p)) => {
            h.extend(p);
            h
        }
        _ => return,
    };
    while !mux.is_closed() {
        let Ok(ch) = mux.open() else { break };
        let (r, mut w) = mux.split(ch);
        if w.send(&bytes).await.is_ok() {
            *presence.lock() = Some(w);
            let mut reader = FrameReader::new(r);
            // Hello, then nothing until the channel ends (or the answer to a goodbye).
            while let Ok(Some(resp)) = reader.read::<Response>().await {
                if matches!(resp, Response::Ok) {
                    presence.answered.notify_one();
                    return;
                }
            }
            presence.lock().take();
        }
        tracing::debug!("presence channel to {computer} ended; reopening");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Forwarded ssh agents
// ---------------------------------------------------------------------------------------------

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
