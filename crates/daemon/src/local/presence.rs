//! Whether the clients of other computers are still there (SPEC §3.13–14), as this computer
//! serves them.
//!
//! A client daemon keeps one `Presence` channel open on each link it has to this computer. When
//! that channel ends with a `Goodbye`, the client closed an idle link on purpose and still
//! holds its sessions. When it ends without one (the client was killed, its computer went down,
//! the network broke) and no other link of that client is left, the client's idle sessions
//! become Disconnected, so that `get` shows them so and any client may `connect` them. A
//! running command learns the same from its own connection.
//!
//! The client side, which keeps such a channel open on each of this daemon's own links to
//! other computers, is the remote role's (`remote::presence`).

use super::hosts;
use crate::state::{Daemon, Reader, Writer};
use tether_proto::host::HostRequest;
use tether_proto::peer::PeerRequest;
use tether_proto::{ClientId, Request, Response, State};

/// Serves one client's `Presence` channel until it ends.
pub async fn serve(daemon: &Daemon, client: ClientId, mut reader: Reader, mut writer: Writer) {
    count(daemon, &client, 1);
    let mut goodbye = false;
    if writer.flush().await.is_ok() {
        loop {
            match reader.read::<Request>().await {
                Ok(Some(r)) if PeerRequest::of(&r) == Some(PeerRequest::Goodbye) => {
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
    let req = HostRequest::ClientGone(client);
    for iid in held {
        // The host decides: it knows its current holder and whether a command runs.
        let _ = hosts::ask(&daemon.paths, &iid, req.clone()).await;
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
