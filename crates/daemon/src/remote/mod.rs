//! The remote role: this client reaching other computers.
//!
//! One warm ssh link per computer ([`links`]) carries every request and invocation that goes
//! there, each on a channel of its own ([`requests`]); a broken link is reconnected under a
//! running invocation ([`relay`], with [`stdin_log`] keeping what the far side may need
//! again, and [`given`] reading a stdin the CLI gave it); a presence channel on each link tells the far daemon this client is still there
//! ([`presence`]); and jobs run their children through this daemon's own socket and keep their
//! output ([`jobs`]).
//!
//! It never imports the local role ([`crate::local`]), nor the other way round: what each needs
//! of the other goes through the seams of the shared state ([`crate::state`]). This module's
//! side of them is [`Reach`] (sessions on other computers, for the local role) and
//! [`links::Links`] (the links themselves).

mod far_writer;
mod given;
pub mod jobs;
pub mod links;
mod presence;
pub mod relay;
pub mod requests;
mod stdin_log;
mod urgent;

pub use requests::hello_from;

use crate::state::registry::RemoteHandle;
use crate::state::{Afar, Boxed, Daemon, Reader, Writer};
use tether_proto::{ErrorInfo, RemoteTarget, Request, Response, SessionInfo};

/// The remote role's side of the [`Afar`] seam.
pub struct Reach;

impl Afar for Reach {
    fn call<'a>(
        &'a self,
        daemon: &'a Daemon,
        rt: &'a RemoteTarget,
        req: Request,
    ) -> Boxed<'a, Result<Response, ErrorInfo>> {
        Box::pin(requests::call(daemon, rt, req))
    }

    fn close<'a>(
        &'a self,
        daemon: &'a Daemon,
        rt: &'a RemoteTarget,
        instance_id: &'a str,
    ) -> Boxed<'a, Result<(), ErrorInfo>> {
        Box::pin(requests::close(daemon, rt, instance_id))
    }

    fn relay<'a>(
        &'a self,
        daemon: &'a Daemon,
        rt: RemoteTarget,
        req: Request,
        client_acks: bool,
        (reader, writer): (Reader, Writer),
    ) -> Boxed<'a, ()> {
        Box::pin(relay::relay(
            daemon,
            rt,
            req,
            client_acks,
            (reader, None),
            writer,
        ))
    }

    fn refresh<'a>(
        &'a self,
        daemon: &'a Daemon,
        handles: Vec<RemoteHandle>,
    ) -> Boxed<'a, Vec<SessionInfo>> {
        Box::pin(requests::refresh(daemon, handles))
    }
}
