//! Ctrl-C and leaving on their way to a far command, apart from its stdin.

use super::far_writer::ToFar;
use super::relay::DRAIN_FOR;
use super::requests;
use crate::state::Daemon;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::VecDeque;
use std::time::Duration;
use tether_proto::{RemoteTarget, Request};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Ctrl-C and leaving (`Cancel`, `Abandon`), which the CLI's reader passes apart from its
/// other frames so that they never wait behind stdin. Each goes in band, after the stdin
/// before it, and also beside the invocation once it has started: `Interrupt`, on a connection
/// of its own, which the far host acts on at once. Without that, a command that reads no
/// stdin while the link's window is full of it would never hear Ctrl-C (the host reads no
/// more requests until the command takes some). A second Ctrl-C changes nothing at the far
/// host, so getting both is harmless, and a far daemon without `Interrupt` just refuses it.
pub(super) struct Urgent<'a> {
    pub rx: mpsc::Receiver<Request>,
    pub open: bool,
    rt: &'a RemoteTarget,
    /// The far session and the invocation's number there: only an `Invoke`'s `Started` gives
    /// it (a resumed stream's says 0).
    numbered: bool,
    running: Option<(String, u64)>,
    /// Each a task of its own: a call that is not polled while the relay reconnects must not
    /// hold the link's lock.
    pub calls: FuturesUnordered<JoinHandle<()>>,
}

/// How long an `Interrupt` may take; the in-band frame stays meanwhile.
const INTERRUPT_FOR: Duration = Duration::from_secs(10);

impl<'a> Urgent<'a> {
    pub fn new(rx: mpsc::Receiver<Request>, rt: &'a RemoteTarget, numbered: bool) -> Urgent<'a> {
        Urgent {
            rx,
            open: true,
            rt,
            numbered,
            running: None,
            calls: FuturesUnordered::new(),
        }
    }

    pub fn started(&mut self, session: &str, invocation: u64) {
        if self.numbered && self.running.is_none() {
            self.running = Some((session.to_string(), invocation));
        }
    }

    /// Sends `r` beside the invocation (two calls at most at a time) and queues it in band
    /// unless the same frame already waits there.
    pub fn take(&mut self, daemon: &Daemon, r: Request, pending: &mut VecDeque<ToFar>) {
        if let Some((session, invocation)) = self.running.clone()
            && self.calls.len() < 2
        {
            let req = Request::Interrupt {
                session,
                invocation,
                abandon: matches!(r, Request::Abandon),
            };
            let (links, me, rt) = (daemon.links.clone(), daemon.me.clone(), self.rt.clone());
            self.calls.push(tokio::spawn(async move {
                let call = requests::call_with((&*links, &me), &rt, req);
                if let Ok(Err(e)) = tokio::time::timeout(INTERRUPT_FOR, call).await {
                    tracing::debug!(computer = %rt.computer, "interrupt: {}", e.message);
                }
            }));
        }
        if !pending
            .iter()
            .any(|p| matches!(p, ToFar::Req(q) if **q == r))
        {
            pending.push_back(r.into());
        }
    }

    /// Waits, at most [`DRAIN_FOR`], for the calls under way.
    pub async fn finish(&mut self) {
        let all = async { while self.calls.next().await.is_some() {} };
        let _ = tokio::time::timeout(DRAIN_FOR, all).await;
    }
}
