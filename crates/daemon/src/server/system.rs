//! The system daemon's listener (`tether daemon start --system`): one root daemon for every
//! user of a computer.
//!
//! Its socket is open to everyone; the kernel tells us each client's uid (SO_PEERCRED), and
//! that uid alone decides what the connection is: it is served by that user's view, a
//! [`Daemon`] over their own area of the tree (`users/<uid>/`) built as a per-user daemon is
//! ([`super::build`]), and handled by the same code. What a view refuses is the local role's
//! (`local::system`).

use crate::account::Account;
use crate::local;
use crate::state::{Daemon, Role};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tether_proto::{ErrorInfo, ErrorKind, Response};
use tether_transport::FrameWriter;
use tether_transport::paths::Paths;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};

/// The system daemon: the tree, and one [`Daemon`] view per user that has connected.
pub struct System {
    paths: Paths,
    configs: PathBuf,
    users: std::sync::Mutex<HashMap<u32, Arc<Daemon>>>,
    /// Connections open per user, so that one user cannot take them all.
    conns: std::sync::Mutex<HashMap<u32, Arc<Semaphore>>>,
    per_user: usize,
    stop: watch::Sender<bool>,
}

impl System {
    pub fn new(paths: Paths) -> Arc<System> {
        Arc::new(System {
            paths,
            configs: Paths::system_configs(),
            users: Default::default(),
            conns: Default::default(),
            // `TETHER_MAX_CONNECTIONS_PER_USER`, else a quarter of the daemon's cap.
            per_user: tether_settings::get().max_connections_per_user,
            stop: watch::channel(false).0,
        })
    }

    /// The view for `uid`, made on first use: its area is created and its sessions adopted.
    fn view(&self, uid: u32) -> Result<Arc<Daemon>, String> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = users.get(&uid) {
            return Ok(d.clone());
        }
        let account = Account::by_uid(uid)?;
        let area = self.paths.area(uid);
        area.ensure_dirs()
            .map_err(|e| format!("cannot prepare {}: {e}", area.home.display()))?;
        let role = Role {
            account,
            configs: self.configs.clone(),
            stop: self.stop.clone(),
        };
        // The view's own socket, which only root can reach: the daemon's jobs are clients of
        // the daemon, and must come back to this view rather than to root's.
        let own = tether_transport::unix::bind_private(&area.daemon_socket())
            .map_err(|e| e.to_string())?;
        let d = super::build(area, Some(role));
        users.insert(uid, d.clone());
        let view = d.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = own.accept().await {
                tokio::spawn(super::handle(view.clone(), stream));
            }
        });
        let adopt = d.clone();
        tokio::spawn(async move { local::sessions::cleanup_temporaries(&adopt).await });
        local::pool::spawn_expiry(&d);
        Ok(d)
    }

    fn permits(&self, uid: u32) -> Arc<Semaphore> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns
            .entry(uid)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_user)))
            .clone()
    }

    /// Views for every user with an area already: their sessions are adopted at start-up,
    /// so temporary leftovers are cleaned up without waiting for the user to come back.
    fn adopt_all(&self) {
        let Ok(rd) = std::fs::read_dir(self.paths.home.join("users")) else {
            return;
        };
        for uid in rd
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
        {
            if let Err(e) = self.view(uid) {
                tracing::warn!("not adopting the sessions of uid {uid}: {e}");
            }
        }
    }
}

/// Accepts clients of every user until root stops the daemon. Each connection runs as a task
/// of its own, served by its user's view.
pub async fn serve(system: Arc<System>, listener: UnixListener) {
    system.adopt_all();
    let all = Arc::new(Semaphore::new(crate::limits::max_connections()));
    let sys = system.clone();
    let sock = system.paths.daemon_socket();
    // However it ends, sessions go on: the next system daemon adopts them.
    let ended = super::accept::until_stopped(&listener, &sock, system.stop.subscribe(), |s| {
        admit(&sys, &all, s)
    })
    .await;
    tracing::info!("system daemon ending ({ended:?}); sessions go on");
}

/// Serves one connection, or refuses it with one line if its user has too many open or the
/// daemon as a whole is full.
fn admit(system: &Arc<System>, all: &Arc<Semaphore>, stream: UnixStream) {
    let uid = match tether_transport::unix::peer_uid(&stream) {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!("no credentials on a connection: {e}");
            return;
        }
    };
    let Ok(mine) = system.permits(uid).try_acquire_owned() else {
        let msg = format!(
            "uid {uid} has {} connections open to the system daemon, the limit per user; try again",
            system.per_user
        );
        tokio::spawn(refuse(stream, ErrorKind::Busy, msg));
        return;
    };
    let Ok(any) = all.clone().try_acquire_owned() else {
        tokio::spawn(crate::limits::refuse(stream));
        return;
    };
    match system.view(uid) {
        Ok(d) => {
            tokio::spawn(async move {
                super::handle(d, stream).await;
                drop((mine, any));
            });
        }
        Err(e) => {
            tokio::spawn(refuse(stream, ErrorKind::Permission, e));
        }
    }
}

async fn refuse(stream: UnixStream, kind: ErrorKind, msg: String) {
    let (_r, w) = stream.into_split();
    let mut writer = FrameWriter::new(w);
    let _ = writer
        .send(&Response::Error(ErrorInfo::new(kind, msg)))
        .await;
}
