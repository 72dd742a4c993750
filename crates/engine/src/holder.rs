//! Which client a session is connected to (SPEC §1 Availability, §3.11).
//!
//! A session is held by one client at a time: the one that made it, then whichever connected
//! or received it last. Another client cannot invoke, disconnect, connect or receive it while it
//! is Opened (as `Connect-PSSession` refuses a session connected elsewhere); it must be
//! disconnected first. When its holder vanishes without a word, an idle session becomes
//! Disconnected, and the same client coming back (same `TETHER_HOME`, after a crash or a
//! network loss) reattaches it simply by using it.

use crate::session::Host;
use tether_proto::{Aside, ClientId, ErrorInfo, ErrorKind, State};

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

    /// Ctrl-C, its client leaving for good, or an acknowledgement for invocation
    /// `invocation`, from beside the invocation's own connection (`HostAside`), where the
    /// frame may wait behind stdin the command does not read. Only for the invocation running
    /// now, so one that arrives late never stops the next command; the invocation acts on it
    /// as on the same frame in band, and a second one changes nothing.
    pub(crate) fn aside(
        &self,
        client: &ClientId,
        invocation: u64,
        what: Aside,
    ) -> Result<(), ErrorInfo> {
        self.check_holder(client)?;
        let running = {
            let inner = self.lock_inner();
            inner.busy && inner.next_inv.checked_sub(1) == Some(invocation)
        };
        if !running {
            return Err(ErrorInfo::new(
                ErrorKind::NotFound,
                format!(
                    "session {}: invocation {invocation} is not running",
                    self.spec.name
                ),
            ));
        }
        match what {
            Aside::Cancel => self.remote_cancel.send_modify(|c| *c += 1),
            Aside::Abandon => self.remote_abandon.send_modify(|c| *c += 1),
            Aside::Ack(seq) => {
                self.remote_ack.send_replace((invocation, seq));
            }
        }
        Ok(())
    }

    /// Whether `client` is coming back to a session it vanished from (killed, its link lost,
    /// restarted) rather than let go on purpose: it may then take the session back by using
    /// it, after the command it left behind has ended ([`Host::take_back`]). A session
    /// disconnected on purpose needs `connect`, as anyone else's does.
    pub(crate) fn returning(&self, client: &ClientId) -> bool {
        let inner = self.lock_inner();
        inner.state == State::Disconnected
            && inner.vanished
            && inner.holder.as_ref().is_some_and(|h| h.id == client.id)
    }

    /// Takes back a session its client vanished from, once nothing runs in it. Output the
    /// command wrote for that client is no longer wanted by anyone: the client that would have
    /// received it is the one now starting another command. Returns a note saying what was
    /// discarded, if anything.
    pub(crate) fn take_back(&self, client: &ClientId) -> Option<String> {
        let name = &self.spec.name;
        let note = self.outbox.discard().map(|(bytes, code)| {
            let status = code
                .map(|c| format!(" ended with status {c}"))
                .unwrap_or_else(|| " ended".into());
            match bytes {
                0 => {
                    format!("session {name}: the earlier command, whose client went away,{status}")
                }
                n => format!(
                    "session {name}: the earlier command, whose client went away,{status}; \
                     its {n} bytes of output were discarded"
                ),
            }
        });
        self.set_connected(client);
        note
    }

    /// A spare serves whoever it is given to: temporary sessions belong to nobody until used.
    pub(crate) fn claim_spare(&self, client: &ClientId) {
        let idle = {
            let inner = self.lock_inner();
            !inner.busy && inner.state == State::Opened
        };
        if self.spec.pooled && idle {
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
