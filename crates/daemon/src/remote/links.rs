//! The client role: one warm ssh connection per computer, shared by every session handle and
//! invocation that goes there, and closed after it has carried no channel for a while.
//!
//! Connecting is serialised per computer (a per-key lock), so a fan-out or several CLI calls at
//! once never start two ssh handshakes to the same place; a link that died is replaced on next
//! use.
//!
//! **Agents.** A new link authenticates with the ssh agent of the CLI call that needs it
//! (`RemoteTarget::ssh_auth_sock`), not with the daemon's own environment, which belongs to
//! whichever call started the daemon, maybe days ago. A call that brings no live agent (a
//! remote session's handle remembers the agent of the call that made it, which may be gone)
//! uses the agent most recently brought by any call, if it still answers. The agent is not part
//! of a link's key: authentication happens once, so a warm link serves every caller whatever
//! its agent, and a new terminal (a new `SSH_AUTH_SOCK`) does not cost a new ssh connection.
//! The one thing a link keeps using its agent for is forwarding (`ForwardAgent`): an idle link
//! whose agent is gone is replaced when a caller brings a live one, so that sessions over
//! there reach a working agent again.

use super::presence::Presence;
use crate::state::{self, Boxed};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tether_proto::{ErrorInfo, ErrorKind, LinkStatus, RemoteTarget};
use tether_transport::link::{Link, OwnBinary};
use tether_transport::mux::{Channel, Mux};

struct Warm {
    link: Link,
    computer: String,
    /// The agent ssh was started with.
    agent: Option<String>,
    last_used: Mutex<Instant>,
    /// The link's `Presence` channel ([`super::presence`]).
    presence: Presence,
}

impl Warm {
    /// Channels carrying requests or invocations (the presence channel does not count).
    fn busy_channels(&self) -> usize {
        let background = usize::from(self.presence.is_open());
        self.link.mux.channels().saturating_sub(background)
    }
}

/// One computer's link. `conn` serialises connecting, so it is held across a handshake and
/// briefly whenever a channel opens; `shown` is the same link for the status, which must
/// neither wait for a handshake nor miss a link because a channel was opening at that instant.
#[derive(Default)]
struct SlotCell {
    conn: tokio::sync::Mutex<Option<Arc<Warm>>>,
    shown: Mutex<Option<Arc<Warm>>>,
}

impl SlotCell {
    /// Sets what the status shows; called wherever `conn`'s link changes.
    fn show(&self, w: Option<Arc<Warm>>) {
        *self.shown.lock().unwrap_or_else(|p| p.into_inner()) = w;
    }
}

type Slot = Arc<SlotCell>;

pub struct Links {
    /// The `Hello` this client sends on every channel (it names the client).
    hello: tether_proto::Request,
    own: tokio::sync::OnceCell<Result<OwnBinary, String>>,
    table: Mutex<HashMap<RemoteTarget, Slot>>,
    idle: Duration,
    /// The agent most recently brought by a CLI call (see the module's doc).
    last_agent: Mutex<Option<String>>,
}

/// Two requests share a connection when everything but the timeout and the agent is the same.
fn key(rt: &RemoteTarget) -> RemoteTarget {
    RemoteTarget {
        connect_timeout_ms: None,
        ssh_auth_sock: None,
        ..rt.clone()
    }
}

/// Whether an agent answers at `path` (one that is gone leaves nothing, or a socket nobody
/// listens on).
fn agent_answers(path: &str) -> bool {
    std::path::Path::new(path).is_absolute()
        && std::os::unix::net::UnixStream::connect(path).is_ok()
}

impl Links {
    pub fn new(hello: tether_proto::Request) -> Arc<Links> {
        let idle = tether_settings::get().connection_idle;
        let links = Arc::new(Links {
            hello,
            own: tokio::sync::OnceCell::new(),
            table: Mutex::new(HashMap::new()),
            idle,
            last_agent: Mutex::new(None),
        });
        tokio::spawn(reap(Arc::downgrade(&links)));
        links
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<RemoteTarget, Slot>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn own_binary(&self) -> Result<OwnBinary, ErrorInfo> {
        let r = self
            .own
            .get_or_init(|| async {
                tokio::task::spawn_blocking(OwnBinary::of_current_exe)
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
            })
            .await;
        r.clone().map_err(|e| {
            ErrorInfo::new(
                ErrorKind::Internal,
                format!("cannot read this tether executable: {e}"),
            )
        })
    }

    /// The agent a new link for `rt` uses: the caller's if it answers, else the one most
    /// recently brought by any caller if that still does, else none.
    fn agent_for(&self, rt: &RemoteTarget) -> Option<String> {
        let mut last = self.last_agent.lock().unwrap_or_else(|p| p.into_inner());
        match rt.ssh_auth_sock.as_deref().filter(|s| agent_answers(s)) {
            Some(s) => {
                *last = Some(s.to_string());
                Some(s.to_string())
            }
            None => last.clone().filter(|s| agent_answers(s)),
        }
    }

    /// A new channel to `rt`'s daemon, connecting first if no warm link exists.
    async fn connect(&self, rt: &RemoteTarget) -> Result<(Mux, Channel), ErrorInfo> {
        let slot = self.table().entry(key(rt)).or_default().clone();
        let agent = self.agent_for(rt);
        let mut guard = slot.conn.lock().await;
        if let Some(w) = guard.as_ref().filter(|w| !w.link.mux.is_closed()) {
            // An idle link forwarding an agent that is gone makes way for one with the live
            // agent this caller brings.
            let stale = agent.is_some()
                && w.agent != agent
                && w.agent.as_deref().is_some_and(|a| !agent_answers(a))
                && w.busy_channels() == 0;
            if !stale && let Ok(ch) = w.link.mux.open() {
                *w.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                return Ok((w.link.mux.clone(), ch));
            }
            if stale && let Some(w) = guard.take() {
                slot.show(None);
                tracing::info!(
                    "replacing the connection to {}: the ssh agent it was made with is gone",
                    w.computer
                );
                retire(w).await;
            }
        }
        let own = self.own_binary().await?;
        let with_agent = RemoteTarget {
            ssh_auth_sock: agent.clone(),
            ..rt.clone()
        };
        let link = tether_transport::link::connect(&with_agent, &own).await?;
        tracing::info!(
            "connected to {} ({} transport, pid {}, tether {}, {})",
            rt.computer,
            rt.transport.name(),
            link.pid,
            link.version,
            match &agent {
                Some(a) => format!("ssh agent {a}"),
                None => "no ssh agent".into(),
            }
        );
        let ch = link.mux.open().map_err(|e| {
            ErrorInfo::new(
                ErrorKind::Connection,
                format!("computer {}: {e}", rt.computer),
            )
        })?;
        let mux = link.mux.clone();
        let presence = Presence::default();
        tokio::spawn(super::presence::keep(
            self.hello.clone(),
            mux.clone(),
            rt.computer.clone(),
            presence.clone(),
        ));
        let warm = Arc::new(Warm {
            link,
            computer: rt.computer.clone(),
            agent,
            last_used: Mutex::new(Instant::now()),
            presence,
        });
        *guard = Some(warm.clone());
        slot.show(Some(warm));
        Ok((mux, ch))
    }

    fn list(&self) -> Vec<LinkStatus> {
        let slots: Vec<Slot> = self.table().values().cloned().collect();
        let mut out = Vec::new();
        for s in slots {
            let shown = s.shown.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(w) = shown.filter(|w| !w.link.mux.is_closed()) {
                out.push(LinkStatus {
                    computer: w.computer.clone(),
                    pid: w.link.pid,
                    channels: w.busy_channels() as u32,
                    version: w.link.version.clone(),
                });
            }
        }
        out.sort_by(|a, b| a.computer.cmp(&b.computer));
        out
    }

    /// Closes every connection (daemon stop), saying goodbye on each first.
    async fn close_every(&self) {
        let slots: Vec<Slot> = self.table().drain().map(|(_, s)| s).collect();
        let mut byes = Vec::new();
        for s in slots {
            let taken = s.conn.lock().await.take();
            s.show(None);
            if let Some(w) = taken {
                byes.push(async move { retire(w).await });
            }
        }
        futures_util::future::join_all(byes).await;
    }

    /// Drops links that died or that carried no channel for the idle time.
    fn sweep(&self) {
        let now = Instant::now();
        self.table().retain(|_, slot| {
            let Ok(mut g) = slot.conn.try_lock() else {
                return true; // connecting right now
            };
            let keep = match g.as_ref() {
                None => false,
                Some(w) if w.link.mux.is_closed() => false,
                Some(w) => {
                    let mut last = w.last_used.lock().unwrap_or_else(|p| p.into_inner());
                    if w.busy_channels() > 0 {
                        *last = now;
                    }
                    now.duration_since(*last) < self.idle
                }
            };
            if !keep && let Some(w) = g.take() {
                slot.show(None);
                tracing::info!("closing the idle connection to {}", w.computer);
                tokio::spawn(retire(w));
            }
            keep
        });
    }
}

/// The links, as the rest of the daemon sees them through the shared state.
impl state::Links for Links {
    fn channel<'a>(&'a self, rt: &'a RemoteTarget) -> Boxed<'a, Result<(Mux, Channel), ErrorInfo>> {
        Box::pin(self.connect(rt))
    }

    fn status(&self) -> Vec<LinkStatus> {
        self.list()
    }

    fn close_all(&self) -> Boxed<'_, ()> {
        Box::pin(self.close_every())
    }
}

/// Says goodbye on a link's presence channel (its sessions stay this client's), then closes it.
async fn retire(w: Arc<Warm>) {
    if !w.link.mux.is_closed() {
        w.presence.goodbye().await;
    }
    drop(w);
}

async fn reap(links: std::sync::Weak<Links>) {
    let period = match links.upgrade() {
        Some(l) => (l.idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(10)),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        match links.upgrade() {
            Some(l) => l.sweep(),
            None => return,
        }
    }
}
