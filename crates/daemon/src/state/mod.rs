//! The daemon's shared state: what every part of the daemon reads and changes, and nothing that
//! serves a request.
//!
//! [`Daemon`] is one client's daemon (or one user's view of the system daemon): its paths, its
//! table of session handles ([`registry`]), its jobs ([`jobs`]), its spare hosts ([`pool`]),
//! and the seams through which its two roles reach each other. The roles are the local one
//! ([`crate::local`]: this computer's sessions) and the remote one ([`crate::remote`]: other
//! computers); the router ([`crate::server`]) builds a `Daemon` and hands requests to them.
//!
//! This module imports nothing of the crate but leaves ([`crate::account`], [`crate::limits`]),
//! as mini-redis keeps its `Db` apart from its server: every other module may import it, and it
//! imports none of them back, so there is no cycle through the state.
//!
//! **Seams.** Some requests cross the roles: removing a handle to a far session, listing
//! sessions that live elsewhere, stopping a job that runs inside a session here. Rather than
//! import each other, the roles go through three traits defined here — [`Links`] (the warm
//! connections to other computers), [`Afar`] (sessions on other computers, as the local role
//! needs them) and [`Here`] (this computer's sessions, as the remote role needs them) — and
//! the router fills them in with each role's implementation when it builds the `Daemon`.

pub mod gifts;
pub mod jobs;
pub mod pool;
pub mod registry;

use crate::account::Account;
use registry::{Registry, RemoteHandle};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use tether_proto::{
    ClientId, ErrorInfo, LinkStatus, RemoteTarget, Request, Response, SessionInfo, SessionJob,
};
use tether_transport::mux::{Channel, Mux};
use tether_transport::paths::Paths;
use tether_transport::{FrameReader, FrameWriter};
use tokio::sync::{Mutex, watch};

/// Default IdleTimeout (SPEC §3.6): 2 hours.
pub const DEFAULT_IDLE_TIMEOUT_S: u64 = 7200;
/// Smallest IdleTimeout a user may ask for, unless `TETHER_MIN_IDLE_TIMEOUT` (seconds) lowers it
/// for tests.
pub const MIN_IDLE_TIMEOUT_S: u64 = tether_settings::DEFAULT_MIN_IDLE_TIMEOUT.as_secs();

/// A client connection's frames, as the router reads them.
pub(crate) type Reader = FrameReader<tokio::net::unix::OwnedReadHalf>;
/// A client connection's frames, as the router writes them.
pub(crate) type Writer = FrameWriter<tokio::net::unix::OwnedWriteHalf>;

/// A future a seam returns: boxed, since trait objects cannot return `impl Future`, and `Send`,
/// since every connection is a task of its own.
pub type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The warm connections to other computers, kept by the remote role
/// ([`crate::remote::links`]). The rest of the daemon only opens channels on them, shows them
/// in `daemon status`, and closes them when the client closes.
pub trait Links: Send + Sync {
    /// A new channel to `rt`'s daemon, connecting first if no warm link exists.
    fn channel<'a>(&'a self, rt: &'a RemoteTarget) -> Boxed<'a, Result<(Mux, Channel), ErrorInfo>>;
    /// Each link as `daemon status` shows it.
    fn status(&self) -> Vec<LinkStatus>;
    /// Says goodbye on every link and closes it (the client closes).
    fn close_all(&self) -> Boxed<'_, ()>;
}

/// Sessions on other computers, as the local role needs them: handles in this client's table
/// point there, and `connect`, `remove`, `get`, `receive` and the client's closing reach them
/// through this ([`crate::remote::Reach`] implements it).
pub trait Afar: Send + Sync {
    /// One request to `rt`'s daemon, one reply (an error reply is an `Err`).
    fn call<'a>(
        &'a self,
        daemon: &'a Daemon,
        rt: &'a RemoteTarget,
        req: Request,
    ) -> Boxed<'a, Result<Response, ErrorInfo>>;
    /// Closes the session `instance_id` on `rt` (one already gone there is not an error).
    fn close<'a>(
        &'a self,
        daemon: &'a Daemon,
        rt: &'a RemoteTarget,
        instance_id: &'a str,
    ) -> Boxed<'a, Result<(), ErrorInfo>>;
    /// Serves the rest of the client's connection with `req` on `rt`, reconnecting as the
    /// relay does; `client_acks` says whether the client acknowledges output itself.
    fn relay<'a>(
        &'a self,
        daemon: &'a Daemon,
        rt: RemoteTarget,
        req: Request,
        client_acks: bool,
        conn: (Reader, Writer),
    ) -> Boxed<'a, ()>;
    /// The handles' sessions as they are now (one request per computer); a computer out of
    /// reach leaves its handles as last seen, unavailable.
    fn refresh<'a>(
        &'a self,
        daemon: &'a Daemon,
        handles: Vec<RemoteHandle>,
    ) -> Boxed<'a, Vec<SessionInfo>>;
}

/// This computer's sessions, as the remote role needs them: a job started inside a session is
/// started, read and stopped by the local role ([`crate::local::Serve`] implements it).
pub trait Here: Send + Sync {
    /// Serves a session-job request in `client`'s name.
    fn session_job<'a>(
        &'a self,
        daemon: &'a Daemon,
        req: SessionJob,
        client: &'a ClientId,
    ) -> Boxed<'a, Result<Response, ErrorInfo>>;
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

/// Each role's side of the seams, given to [`Daemon::new`].
pub struct Seams {
    pub links: Arc<dyn Links>,
    pub afar: Arc<dyn Afar>,
    pub here: Arc<dyn Here>,
}

/// One client's daemon: everything its requests share.
pub struct Daemon {
    pub paths: Paths,
    pub registry: Mutex<Registry>,
    pub shutdown: watch::Sender<bool>,
    /// Warm connections to other computers (the remote role's).
    pub links: Arc<dyn Links>,
    /// Sessions on other computers, for the local role.
    pub afar: Arc<dyn Afar>,
    /// This computer's sessions, for the remote role.
    pub here: Arc<dyn Here>,
    pub(crate) min_idle: u64,
    pub(crate) owner: String,
    /// This daemon's client identity (its `TETHER_HOME`'s), for its own CLI's requests and
    /// when it speaks to other computers.
    pub me: ClientId,
    /// Jobs started by this client ([`jobs`]).
    pub jobs: jobs::Jobs,
    /// Clients of other computers whose links are up, by client id
    /// ([`crate::local::presence`]).
    pub present: std::sync::Mutex<HashMap<String, usize>>,
    /// Set when this is one user's view of the system daemon ([`crate::local::system`]).
    pub(crate) system: Option<Role>,
    /// Spare hosts for temporary invocations from other computers ([`crate::local::pool`]).
    pub(crate) pool: pool::Pool,
    /// Relays waiting for the stdin their CLI gives them ([`gifts`]).
    pub gifts: gifts::Gifts,
}

impl Daemon {
    /// A daemon over `paths` (with `system`: one user's view of the system daemon, over that
    /// user's area of its tree), speaking as `me`. Its table of handles and its jobs are read
    /// back from `paths`; picking running jobs up again is the caller's next step.
    pub fn new(paths: Paths, me: ClientId, system: Option<Role>, seams: Seams) -> Daemon {
        let registry = Registry::load(paths.clone());
        let min_idle = tether_settings::get().min_idle_timeout.as_secs();
        let owner = match &system {
            Some(role) => role.account.name.clone(),
            None => nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| nix::unistd::getuid().to_string()),
        };
        // Jobs are written down in the same home, so they outlive this daemon (a system
        // daemon's view holds less of a job's unreceived output in root's memory).
        let jobs = jobs::Jobs::at(Some(paths.clone()));
        Daemon {
            me,
            present: Default::default(),
            jobs,
            paths,
            registry: Mutex::new(registry),
            shutdown: watch::channel(false).0,
            links: seams.links,
            afar: seams.afar,
            here: seams.here,
            min_idle,
            owner,
            system,
            pool: Default::default(),
            gifts: Default::default(),
        }
    }

    /// Where this daemon's configurations are: the system's, or `$TETHER_HOME/configurations`.
    pub(crate) fn config_dir(&self) -> PathBuf {
        match &self.system {
            Some(role) => role.configs.clone(),
            None => self.paths.home.join("configurations"),
        }
    }
}
