//! The local role: serving this computer's sessions.
//!
//! Making them ([`create`], with spare hosts for temporary invocations in [`pool`] and the
//! configurations they are made from in [`configs`]), talking to their hosts ([`hosts`]),
//! listing them and running invocations in them ([`sessions`]), disconnecting, connecting and
//! receiving ([`attach`]), removing them ([`removing`]), closing the client ([`closing`]),
//! jobs inside a session ([`session_jobs`]), bridges pinned to one configuration
//! ([`pinning`]), the clients of other computers that reach them ([`presence`], [`agents`]),
//! and what a user's view of the system daemon refuses ([`system`]).
//!
//! This client's handles include sessions on other computers; this role reaches those through
//! the [`Afar`](crate::state::Afar) seam of the shared state and never imports the remote role
//! ([`crate::remote`]), which in turn reaches this one only through [`Serve`].

pub mod agents;
pub mod attach;
pub mod closing;
pub mod configs;
pub mod create;
pub mod hosts;
pub mod pinning;
pub mod pool;
pub mod presence;
pub mod removing;
pub mod session_jobs;
pub mod sessions;
pub mod system;

use crate::state::{Boxed, Daemon, Here};
use tether_proto::{ClientId, ErrorInfo, Response, SessionJob};

/// The local role's side of the [`Here`] seam.
pub struct Serve;

impl Here for Serve {
    fn session_job<'a>(
        &'a self,
        daemon: &'a Daemon,
        req: SessionJob,
        client: &'a ClientId,
    ) -> Boxed<'a, Result<Response, ErrorInfo>> {
        Box::pin(session_jobs::handle(daemon, req, client))
    }
}
