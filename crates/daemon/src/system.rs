//! System mode (`tether daemon start --system`): one root daemon for every user of a computer,
//! as PowerShell's WinRM service is one endpoint for every user of a Windows machine.
//!
//! Its socket is open to everyone; the kernel tells us each client's uid (SO_PEERCRED), and
//! that uid alone decides what the connection is. Each user gets their own view of the daemon:
//! a [`Daemon`] over their own area of the tree (`users/<uid>/`), with its own table of
//! sessions, jobs and client identity. Requests are then served by the same code as a per-user
//! daemon's, so owners are kept apart by construction: no request can even name another user's
//! session. Sessions run as their owner, or as a configuration's `run_as` account for the users
//! it allows ([`crate::create`]).
//!
//! The system daemon does not reach other computers (ssh as root with root's keys on behalf of
//! a user would be wrong); users do that with their own per-user daemon. Only root may stop it,
//! and stopping it leaves every session running for the next system daemon to adopt, as
//! restarting sshd leaves logins alone.

use crate::server::Daemon;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tether_engine::RunAs;
use tether_proto::{ErrorInfo, ErrorKind, Request, Response};
use tether_transport::FrameWriter;
use tether_transport::paths::Paths;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};

/// A user account, from the passwd and group databases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Every group the account is in, its primary group included.
    pub groups: Vec<u32>,
    pub home: String,
    pub shell: String,
}

impl Account {
    pub fn by_uid(uid: u32) -> Result<Account, String> {
        match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
            Ok(Some(u)) => Ok(Account::from_user(u)),
            Ok(None) => Err(format!("uid {uid} has no account on this computer")),
            Err(e) => Err(format!("looking up uid {uid}: {e}")),
        }
    }

    pub fn by_name(name: &str) -> Result<Account, String> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Ok(Account::from_user(u)),
            Ok(None) => Err(format!("account {name} does not exist")),
            Err(e) => Err(format!("looking up account {name}: {e}")),
        }
    }

    /// The account this process runs as (a per-user daemon's user).
    pub fn current() -> Result<Account, String> {
        Account::by_uid(nix::unistd::getuid().as_raw())
    }

    fn from_user(u: nix::unistd::User) -> Account {
        let groups = supplementary(&u);
        Account {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            groups,
            home: u.dir.to_string_lossy().into_owned(),
            shell: u.shell.to_string_lossy().into_owned(),
        }
    }

    /// What a session host needs to run a shell as this account.
    pub fn run_as(&self) -> RunAs {
        RunAs {
            name: self.name.clone(),
            uid: self.uid,
            gid: self.gid,
            groups: self.groups.clone(),
            home: self.home.clone(),
        }
    }

    /// Whether the account is in group `name` (as its primary group or a supplementary one).
    pub fn in_group(&self, name: &str) -> bool {
        match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => self.groups.contains(&g.gid.as_raw()) || g.mem.contains(&self.name),
            _ => false,
        }
    }

    /// The environment a login of this account starts with (what `login` and sshd set), plus
    /// the client's terminal and locale settings. Nothing else of the client's comes through:
    /// variables such as `LD_PRELOAD` must not reach a shell that runs as another account or
    /// under a restricted configuration.
    pub fn login_env(&self, client: &[(String, String)]) -> Vec<(String, String)> {
        let path = if self.uid == 0 {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        } else {
            "/usr/local/bin:/usr/bin:/bin"
        };
        let mut env = vec![
            ("HOME".to_string(), self.home.clone()),
            ("USER".to_string(), self.name.clone()),
            ("LOGNAME".to_string(), self.name.clone()),
            ("SHELL".to_string(), self.shell.clone()),
            ("PATH".to_string(), path.to_string()),
        ];
        let passed = |k: &str| {
            matches!(k, "TERM" | "LANG" | "TZ" | "COLORTERM" | "LANGUAGE") || k.starts_with("LC_")
        };
        env.extend(client.iter().filter(|(k, _)| passed(k)).cloned());
        env
    }
}

#[cfg(not(any(target_os = "macos", target_os = "ios")))]
fn supplementary(u: &nix::unistd::User) -> Vec<u32> {
    let Ok(name) = std::ffi::CString::new(u.name.as_bytes()) else {
        return vec![u.gid.as_raw()];
    };
    match nix::unistd::getgrouplist(&name, u.gid) {
        Ok(g) => g.into_iter().map(|g| g.as_raw()).collect(),
        Err(_) => vec![u.gid.as_raw()],
    }
}

/// Apple platforms have no usable getgrouplist in nix: the primary group only.
#[cfg(any(target_os = "macos", target_os = "ios"))]
fn supplementary(u: &nix::unistd::User) -> Vec<u32> {
    vec![u.gid.as_raw()]
}

/// What a user's view of the system daemon knows of its place in it.
pub struct Role {
    /// The user this view serves (the connection's uid).
    pub account: Account,
    /// Where the system's configurations are (`/etc/tether/configurations`).
    pub configs: PathBuf,
    /// Stops the whole system daemon (root's `daemon stop`).
    pub stop: watch::Sender<bool>,
}

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

/// Open connections one user may have at once (`TETHER_MAX_CONNECTIONS_PER_USER`, else a
/// quarter of the daemon's cap).
fn per_user_connections() -> usize {
    std::env::var("TETHER_MAX_CONNECTIONS_PER_USER")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| (crate::limits::max_connections() / 4).max(1))
}

impl System {
    pub fn new(paths: Paths) -> Arc<System> {
        Arc::new(System {
            paths,
            configs: Paths::system_configs(),
            users: Default::default(),
            conns: Default::default(),
            per_user: per_user_connections(),
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
            .map_err(|e| format!("cannot listen at {}: {e}", area.daemon_socket().display()))?;
        let d = Daemon::for_user(area, role);
        users.insert(uid, d.clone());
        let view = d.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = own.accept().await {
                tokio::spawn(crate::server::handle(view.clone(), stream));
            }
        });
        let adopt = d.clone();
        tokio::spawn(async move { crate::server::cleanup_temporaries(&adopt).await });
        crate::pool::spawn_expiry(&d);
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
    let ended = crate::accept::until_stopped(&listener, &sock, system.stop.subscribe(), |s| {
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
                crate::server::handle(d, stream).await;
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
