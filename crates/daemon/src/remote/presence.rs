//! The client side of presence (SPEC §3.13–14): on each of this daemon's links to another
//! computer, a `Presence` channel tells the far daemon that this client is still there.
//!
//! When the channel ends with a `Goodbye`, the client closed an idle link on purpose and still
//! holds its sessions; when it ends without one, the far daemon makes the client's idle
//! sessions Disconnected (its side is the local role's, `local::presence`). [`keep`] reopens
//! the channel while the link lives, so a far daemon that was restarted learns of the client
//! again.

use std::time::Duration;
use tether_proto::peer::PeerRequest;
use tether_proto::{Request, Response};
use tether_transport::FrameReader;
use tether_transport::mux::{ChannelWriter, Mux};

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
        let Ok(bytes) = tether_proto::encode(&Request::from(PeerRequest::Goodbye)) else {
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
        tether_proto::encode(&Request::from(PeerRequest::Presence)),
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
