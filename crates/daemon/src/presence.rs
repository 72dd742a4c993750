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

use crate::hosts;
use crate::server::{Daemon, Reader, Writer};
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
