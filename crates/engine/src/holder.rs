//! Which client a session is connected to (SPEC §1 Availability, §3.11).
//!
//! A session is held by one client at a time: the one that made it, then whichever connected
//! or received it last. Another client cannot invoke, disconnect, connect or receive it while it
//! is Opened (as `Connect-PSSession` refuses a session connected elsewhere); it must be
//! disconnected first. When its holder vanishes without a word, an idle session becomes
//! Disconnected, and the same client coming back (same `TETHER_HOME`, after a crash or a
//! network loss) reattaches it simply by using it.

use crate::host::Host;
use tether_proto::{ClientId, ErrorInfo, ErrorKind, State};

impl Host {
    /// Who a request speaks for: the named client, else this host's own daemon's.
    pub(crate) fn client_or_me(&self, client: Option<&ClientId>) -> ClientId {
        client.cloned().unwrap_or_else(|| self.me.clone())
    }

    /// Refuses `client` while another client has the session Opened.
    pub(crate) fn check_holder(&self, client: &ClientId) -> Result<(), ErrorInfo> {
        let inner = self.lock_inner();
        match &inner.holder {
            Some(h) if inner.state == State::Opened && h.id != client.id => Err(ErrorInfo::new(
                ErrorKind::Busy,
                format!(
                    "session {} is connected to another client ({}); disconnect it there first",
                    self.spec.name, h.label
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Before an invocation: the client that vanished from a session (it lost its link, or
    /// was killed and restarted) takes it back by using it, if it is idle with nothing to
    /// receive. A session disconnected on purpose needs `connect`.
    pub(crate) fn reclaim(&self, client: &ClientId) {
        let back = {
            let inner = self.lock_inner();
            inner.state == State::Disconnected
                && inner.vanished
                && !inner.busy
                && inner.holder.as_ref().is_some_and(|h| h.id == client.id)
        };
        if back && !self.outbox.pending() {
            self.set_connected(client);
        }
    }

    /// The holder vanished (its link ended without a goodbye): an idle session it holds is
    /// Disconnected. A running command's own connection tells the driver the same.
    pub(crate) fn client_gone(&self, client: &ClientId) {
        let gone = {
            let inner = self.lock_inner();
            inner.state == State::Opened
                && !inner.busy
                && inner.holder.as_ref().is_some_and(|h| h.id == client.id)
        };
        if gone {
            self.set_disconnected();
            self.lock_inner().vanished = true;
        }
    }
}
