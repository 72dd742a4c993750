//! Ctrl-C and leaving on their way to a far command, apart from its stdin.

use super::far_writer::ToFar;
use super::relay::DRAIN_FOR;
use super::requests;
use crate::state::Daemon;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::VecDeque;
use std::time::Duration;
use tether_proto::{Aside, RemoteTarget, Request};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Ctrl-C, leaving and acknowledgements (`Cancel`, `Abandon`, `Ack`), which the CLI's reader
/// passes apart from its other frames so that they never wait behind stdin. Each goes in band,
/// after the stdin before it, and also, once the invocation has started, beside it: `Aside`,
/// on a connection of its own, which the far host acts on at once. Without that, a command
/// that reads no stdin while the link's window is full of it would never hear Ctrl-C, and its
/// output, never acknowledged, would stop at the host's output quota: the host reads no more
/// of the invocation's connection until the command takes some stdin.
///
/// Ctrl-C and leaving always go beside (a second Ctrl-C changes nothing at the far host, so
/// getting both is harmless). Acknowledgements, which come often, go beside only while
/// something waits to be written in band, one call at a time, the newest each time. A far
/// daemon without `Aside` just refuses it.
pub(super) struct Urgent<'a> {
    pub rx: mpsc::Receiver<Request>,
    pub open: bool,
    rt: &'a RemoteTarget,
    /// The far session and the invocation's number there: only an `Invoke`'s `Started` gives
    /// it (a resumed stream's says 0).
    numbered: bool,
    running: Option<(String, u64)>,
    /// Calls under way, each a task of its own (a call that is not polled while the relay
    /// reconnects must not hold the link's lock); each says whether it carried an
    /// acknowledgement.
    pub calls: FuturesUnordered<JoinHandle<bool>>,
    acking: bool,
    /// The newest acknowledgement, and the newest sent beside.
    ack: u64,
    ack_sent: u64,
}

/// How long an `Aside` may take; the in-band frame stays meanwhile.
const ASIDE_FOR: Duration = Duration::from_secs(10);

impl<'a> Urgent<'a> {
    pub fn new(rx: mpsc::Receiver<Request>, rt: &'a RemoteTarget, numbered: bool) -> Urgent<'a> {
        Urgent {
            rx,
            open: true,
            rt,
            numbered,
            running: None,
            calls: FuturesUnordered::new(),
            acking: false,
            ack: 0,
            ack_sent: 0,
        }
    }

    pub fn started(&mut self, session: &str, invocation: u64) {
        if self.numbered && self.running.is_none() {
            self.running = Some((session.to_string(), invocation));
        }
    }

    /// `r` from the CLI: queued in band (an acknowledgement in place of an older one still
    /// waiting, a Ctrl-C only once), and sent beside as the type doc says.
    pub fn take(&mut self, daemon: &Daemon, r: Request, pending: &mut VecDeque<ToFar>) {
        let what = match r {
            Request::Cancel => Aside::Cancel,
            Request::Abandon => Aside::Abandon,
            Request::Ack(seq) => {
                let older = pending.iter_mut().find_map(|p| match p {
                    ToFar::Req(q) => match &mut **q {
                        Request::Ack(old) => Some(old),
                        _ => None,
                    },
                    ToFar::Stdin(_) => None,
                });
                match older {
                    Some(old) => *old = (*old).max(seq),
                    None => pending.push_back(r.into()),
                }
                self.acked(daemon, seq, !pending.is_empty());
                return;
            }
            _ => return,
        };
        if self.calls.len() < 4 {
            self.call(daemon, what);
        }
        if !pending
            .iter()
            .any(|p| matches!(p, ToFar::Req(q) if **q == r))
        {
            pending.push_back(r.into());
        }
    }

    /// Output up to `seq` was delivered: sent beside too when `waiting` (something waits to
    /// be written in band, so the in-band one may wait behind stdin).
    pub fn acked(&mut self, daemon: &Daemon, seq: u64, waiting: bool) {
        self.ack = self.ack.max(seq);
        if waiting {
            self.flush(daemon);
        }
    }

    /// Sends the newest acknowledgement beside, unless one is under way or it went already.
    pub fn flush(&mut self, daemon: &Daemon) {
        if !self.acking && self.ack > self.ack_sent && self.running.is_some() {
            self.ack_sent = self.ack;
            self.acking = true;
            self.call(daemon, Aside::Ack(self.ack));
        }
    }

    /// A call ended.
    pub fn ended(&mut self, ack: bool) {
        if ack {
            self.acking = false;
        }
    }

    fn call(&mut self, daemon: &Daemon, what: Aside) {
        let Some((session, invocation)) = self.running.clone() else {
            return;
        };
        let req = Request::Aside {
            session,
            invocation,
            what,
        };
        let (links, me, rt) = (daemon.links.clone(), daemon.me.clone(), self.rt.clone());
        self.calls.push(tokio::spawn(async move {
            let call = requests::call_with((&*links, &me), &rt, req);
            if let Ok(Err(e)) = tokio::time::timeout(ASIDE_FOR, call).await {
                tracing::debug!(computer = %rt.computer, "aside: {}", e.message);
            }
            matches!(what, Aside::Ack(_))
        }));
    }
}

/// Waits, at most [`DRAIN_FOR`], for the calls under way.
pub(super) async fn finish(calls: &mut FuturesUnordered<JoinHandle<bool>>) {
    let all = async { while calls.next().await.is_some() {} };
    let _ = tokio::time::timeout(DRAIN_FOR, all).await;
}
