//! The daemon's table of session handles.
//!
//! The truth about a session lives with its host (its socket and its `hosts/<id>.json` record),
//! so a daemon that was killed loses nothing: the next one reads the records back (adoption). This
//! table is a cache of those records plus the names of recently removed sessions, so that using a
//! removed handle gives "was removed" rather than "not found".

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use tether_engine::HostMeta;
use tether_proto::{ErrorInfo, ErrorKind, RemoteTarget, SessionInfo, State};
use tether_transport::paths::Paths;

/// This client's handle to a session on another computer.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct RemoteHandle {
    /// Id and Name are this client's; the rest is the last state seen.
    pub info: SessionInfo,
    pub target: RemoteTarget,
}

/// A far session's record as this client shows it: on that computer, of type remote, with no
/// host process here. Both roles show far sessions (the remote role when it makes or refreshes
/// a handle, the local role when `connect` or `disconnect` answers), so it lives with the
/// handles.
pub fn as_seen_here(mut info: SessionInfo, rt: &RemoteTarget) -> SessionInfo {
    info.computer_name = rt.computer.clone();
    info.computer_type = "remote".into();
    info.host_pid = 0;
    info
}

/// A session found by Name, Id or InstanceId.
pub enum Found<'a> {
    Local(&'a HostMeta),
    Remote(&'a RemoteHandle),
}

/// How many removed names we remember for clear errors.
const TOMBSTONES: usize = 256;

#[derive(Debug)]
pub struct Registry {
    pub paths: Paths,
    /// Keyed by instance id.
    pub sessions: BTreeMap<String, HostMeta>,
    /// Handles to sessions on other computers, keyed by instance id.
    pub remotes: BTreeMap<String, RemoteHandle>,
    removed: VecDeque<(u32, String)>,
    next_id: u32,
}

impl Registry {
    /// Loads every session record under the home directory. Corrupt records are logged and
    /// skipped; they never stop the daemon.
    pub fn load(paths: Paths) -> Registry {
        let mut sessions = BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir(paths.hosts_dir()) {
            for entry in dir.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "json") {
                    match HostMeta::load(&path) {
                        Ok(meta) => {
                            sessions.insert(meta.info.instance_id.clone(), meta);
                        }
                        Err(e) => tracing::warn!("ignoring a session record: {e}"),
                    }
                }
            }
        }
        let remotes = load_remotes(&paths);
        // The name links are rebuilt from the records: none can outlive its session by a
        // daemon's crash.
        let _ = std::fs::remove_dir_all(paths.home.join("names"));
        for meta in sessions.values() {
            link_name(&paths, meta);
        }
        let next_id = sessions
            .values()
            .map(|m| m.info.id)
            .chain(remotes.values().map(|h| h.info.id))
            .max()
            .unwrap_or(0)
            + 1;
        Registry {
            paths,
            sessions,
            remotes,
            removed: VecDeque::new(),
            next_id,
        }
    }

    fn remote_path(&self, instance_id: &str) -> PathBuf {
        self.paths
            .home
            .join("remotes")
            .join(format!("{instance_id}.json"))
    }

    /// Records a handle to a remote session (written atomically). The instance id came from
    /// another computer: it names a file here only if it is a UUID.
    pub fn insert_remote(&mut self, h: RemoteHandle) -> std::io::Result<()> {
        if !tether_proto::is_instance_id(&h.info.instance_id) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "computer {} named a session with an invalid instance id",
                    h.target.computer
                ),
            ));
        }
        let dir = self.paths.home.join("remotes");
        tether_transport::paths::private_dir(&dir)?;
        let path = self.remote_path(&h.info.instance_id);
        let tmp = path.with_extension("json.tmp");
        let data = serde_json::to_vec_pretty(&h).map_err(std::io::Error::other)?;
        tether_transport::paths::write_private(&tmp, &data)?;
        std::fs::rename(&tmp, &path).map_err(tether_transport::at(&path))?;
        self.next_id = self.next_id.max(h.info.id + 1);
        self.remotes.insert(h.info.instance_id.clone(), h);
        Ok(())
    }

    /// Forgets a remote handle, remembering its name for later errors.
    pub fn forget_remote(&mut self, instance_id: &str) -> Option<RemoteHandle> {
        let h = self.remotes.remove(instance_id)?;
        let _ = std::fs::remove_file(self.remote_path(instance_id));
        self.tombstone(h.info.id, h.info.name.clone());
        Some(h)
    }

    fn tombstone(&mut self, id: u32, name: String) {
        self.removed.push_back((id, name));
        if self.removed.len() > TOMBSTONES {
            self.removed.pop_front();
        }
    }

    pub fn allocate_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub fn name_taken(&self, name: &str) -> bool {
        self.sessions
            .values()
            .any(|m| !m.temporary && m.info.name == name)
            || self.remotes.values().any(|h| h.info.name == name)
    }

    /// Finds a session by Name, Id (an all-digit word) or InstanceId (how a client on another
    /// computer names it).
    pub fn resolve(&self, word: &str) -> Result<Found<'_>, ErrorInfo> {
        if let Some(m) = self.sessions.get(word) {
            return Ok(Found::Local(m));
        }
        if let Some(h) = self.remotes.get(word) {
            return Ok(Found::Remote(h));
        }
        let by_id = word.parse::<u32>().ok();
        let matches = |info: &SessionInfo| match by_id {
            Some(id) => info.id == id,
            None => info.name == word,
        };
        if let Some(m) = self
            .sessions
            .values()
            .find(|m| !m.temporary && matches(&m.info))
        {
            return Ok(Found::Local(m));
        }
        if let Some(h) = self.remotes.values().find(|h| matches(&h.info)) {
            return Ok(Found::Remote(h));
        }
        let was_removed = self.removed.iter().any(|(id, name)| match by_id {
            Some(want) => *id == want,
            None => name == word,
        });
        let msg = if was_removed {
            format!("session {word} was removed (Closed); create a new one with 'tether new'")
        } else {
            format!("no session named or numbered {word}; 'tether get' lists sessions")
        };
        Err(ErrorInfo::new(ErrorKind::NotFound, msg))
    }

    pub fn insert(&mut self, meta: HostMeta) {
        self.next_id = self.next_id.max(meta.info.id + 1);
        link_name(&self.paths, &meta);
        self.sessions.insert(meta.info.instance_id.clone(), meta);
    }

    /// Forgets a session and its record, remembering its name for later errors.
    pub fn forget(&mut self, instance_id: &str) -> Option<HostMeta> {
        let meta = self.sessions.remove(instance_id)?;
        let _ = std::fs::remove_file(self.paths.host_meta(instance_id));
        unlink_name(&self.paths, &meta);
        if !meta.temporary {
            self.tombstone(meta.info.id, meta.info.name.clone());
        }
        Some(meta)
    }

    /// Drops a temporary session's handle (its host removes its own record): it was never
    /// listed, so it leaves no tombstone and no name.
    pub fn forget_temporary(&mut self, instance_id: &str) {
        self.sessions.remove(instance_id);
    }

    /// Re-reads one record from disk (the host rewrites it on every state change).
    pub fn reload(&mut self, instance_id: &str) -> Option<&HostMeta> {
        let path = self.paths.host_meta(instance_id);
        match HostMeta::load(&path) {
            Ok(meta) => {
                self.sessions.insert(instance_id.to_string(), meta);
            }
            Err(_) => {
                self.sessions.remove(instance_id);
            }
        }
        self.sessions.get(instance_id)
    }

    /// For a host that did not answer: re-reads its record (it writes Broken or Closed before
    /// exiting), and if the record still says Opened, the host was killed: mark it lost.
    pub fn settle(&mut self, instance_id: &str) -> Option<&HostMeta> {
        let still_opened = self
            .reload(instance_id)
            .is_some_and(|m| m.info.state == State::Opened);
        if still_opened {
            self.mark_lost(instance_id);
        }
        self.sessions.get(instance_id)
    }

    /// Marks a session whose host vanished without recording why (killed): Broken.
    pub fn mark_lost(&mut self, instance_id: &str) {
        if let Some(meta) = self.sessions.get_mut(instance_id)
            && meta.info.state == State::Opened
        {
            {
                meta.info.state = State::Broken;
                meta.info.availability = tether_proto::Availability::None;
                meta.info.reason = Some("the session host exited unexpectedly".into());
                meta.info.host_pid = 0;
                meta.info.expires_on = None;
                let _ = meta.store(&self.paths.host_meta(instance_id));
            }
        }
    }

    pub fn list(&self) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self
            .sessions
            .values()
            .filter(|m| !m.temporary)
            .map(|m| m.info.clone())
            .chain(self.remotes.values().map(|h| h.info.clone()))
            .collect();
        v.sort_by_key(|i| i.id);
        v
    }
}

/// Links a running local session's name to its instance id (see [`Paths::name_link`]): a
/// private file holding the id, replaced atomically. A link is only a hint: a CLI that follows
/// it to a host that is gone asks the daemon instead.
fn link_name(paths: &Paths, meta: &HostMeta) {
    let live = matches!(meta.info.state, State::Opened | State::Disconnected);
    if meta.temporary || meta.info.host_pid == 0 || !live {
        return;
    }
    let Some(link) = paths.name_link(&meta.info.name) else {
        return;
    };
    let tmp = link.with_extension("link-tmp");
    let made = link
        .parent()
        .map(|d| tether_transport::paths::owned_dir(d, 0o700))
        .transpose()
        .and_then(|_| {
            tether_transport::paths::write_private(&tmp, meta.info.instance_id.as_bytes())
        })
        .and_then(|_| std::fs::rename(&tmp, &link));
    if let Err(e) = made {
        tracing::debug!("name link for session {}: {e}", meta.info.name);
    }
}

/// Removes a session's name link, unless it already names another session.
fn unlink_name(paths: &Paths, meta: &HostMeta) {
    let Some(link) = paths.name_link(&meta.info.name) else {
        return;
    };
    if std::fs::read_to_string(&link).is_ok_and(|t| t == meta.info.instance_id) {
        let _ = std::fs::remove_file(&link);
    }
}

fn load_remotes(paths: &Paths) -> BTreeMap<String, RemoteHandle> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(paths.home.join("remotes")) else {
        return out;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let parsed = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<RemoteHandle>(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(h) if !tether_proto::is_instance_id(&h.info.instance_id) => {
                tracing::warn!("ignoring remote handle {}: bad instance id", path.display())
            }
            Ok(h) => {
                out.insert(h.info.instance_id.clone(), h);
            }
            Err(e) => tracing::warn!("ignoring remote handle {}: {e}", path.display()),
        }
    }
    out
}

/// The computer session `word` (a Name, an Id or an InstanceId, as `Registry::resolve`
/// takes it) is on, as `get` shows it: a handle to a session on another computer names that
/// computer; a local session, or a word this client does not know, is `localhost`. It reads
/// the handles' records, so the CLI can tell without asking the daemon (`invoke --json`).
pub fn computer_of(paths: &Paths, word: &str) -> String {
    let by_id = word.parse::<u32>().ok();
    load_remotes(paths)
        .into_values()
        .find(|h| {
            h.info.instance_id == word
                || match by_id {
                    Some(id) => h.info.id == id,
                    None => h.info.name == word,
                }
        })
        .map(|h| h.info.computer_name)
        .unwrap_or_else(|| "localhost".into())
}

/// Shell-style glob match with `*` and `?` (for `get --name`).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Availability as `client` sees it: a session connected to another client is Busy for it
/// (SPEC §1).
pub(crate) fn seen_by(list: &mut [SessionInfo], client: &tether_proto::ClientId) {
    for i in list {
        if i.state == State::Opened && i.held_by.as_ref().is_some_and(|h| h.id != client.id) {
            i.availability = tether_proto::Availability::Busy;
        }
    }
}

pub(crate) fn selected(filter: &tether_proto::SessionFilter, i: &SessionInfo) -> bool {
    filter
        .name_glob
        .as_deref()
        .is_none_or(|g| glob_match(g, &i.name))
        && filter.id.is_none_or(|id| id == i.id)
        && filter
            .instance_id
            .as_deref()
            .is_none_or(|u| u == i.instance_id)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("web-*", "web-1"));
        assert!(glob_match("w?b*", "web-1"));
        assert!(!glob_match("web-*", "db-1"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "x"));
    }
}
