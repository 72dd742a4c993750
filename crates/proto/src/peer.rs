//! Messages between tether processes of different computers, apart from what a CLI asks
//! (issue 19: protocols by audience). Each is its own enum, which travels as the
//! [`crate::Request`] variant of the same name (the wire is one frame format, frozen by the
//! golden frames), so that code on each side speaks only what its audience may send:
//!
//! - [`BridgeFrame`]: what `tether bridge` (run by sshd for a client on another computer)
//!   writes before any byte of its client's.
//! - [`PeerRequest`]: what a client daemon says to a far daemon about its link (presence).
//!
//! What a daemon asks its session hosts is [`crate::host::HostRequest`]; everything else in
//! [`crate::Request`] is what a client (a CLI, a library user, or a client daemon acting for
//! one) asks a daemon.

/// The bridge's first frame: where the connection comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum BridgeFrame {
    /// A key pinned to one configuration (`bridge --configuration C`, an ssh forced command):
    /// the connection may reach nothing else.
    Pin(String),
    /// Unpinned, from another computer: the client's environment and directory are not
    /// believed. `agent`: the ssh agent the client forwarded, if any.
    Bridged { agent: Option<String> },
}

/// A client daemon to a far daemon, about the link between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRequest {
    /// The link is up; the connection stays open while it is.
    Presence,
    /// The client closes its link on purpose and still holds its sessions.
    Goodbye,
}

impl From<BridgeFrame> for crate::Request {
    fn from(f: BridgeFrame) -> crate::Request {
        match f {
            BridgeFrame::Pin(c) => crate::Request::Pin(c),
            BridgeFrame::Bridged { agent } => crate::Request::Bridged { agent },
        }
    }
}

impl BridgeFrame {
    /// A connection's first frame read as a bridge's, if it is one.
    pub fn of(r: &crate::Request) -> Option<BridgeFrame> {
        match r {
            crate::Request::Pin(c) => Some(BridgeFrame::Pin(c.clone())),
            crate::Request::Bridged { agent } => Some(BridgeFrame::Bridged {
                agent: agent.clone(),
            }),
            _ => None,
        }
    }
}

impl From<PeerRequest> for crate::Request {
    fn from(p: PeerRequest) -> crate::Request {
        match p {
            PeerRequest::Presence => crate::Request::Presence,
            PeerRequest::Goodbye => crate::Request::Goodbye,
        }
    }
}

impl PeerRequest {
    /// A request read as a link's presence message, if it is one.
    pub fn of(r: &crate::Request) -> Option<PeerRequest> {
        match r {
            crate::Request::Presence => Some(PeerRequest::Presence),
            crate::Request::Goodbye => Some(PeerRequest::Goodbye),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_audience_travels_as_its_request_and_reads_back() {
        for f in [
            BridgeFrame::Pin("build".into()),
            BridgeFrame::Bridged { agent: None },
            BridgeFrame::Bridged {
                agent: Some("/a".into()),
            },
        ] {
            assert_eq!(BridgeFrame::of(&f.clone().into()), Some(f));
        }
        for p in [PeerRequest::Presence, PeerRequest::Goodbye] {
            assert_eq!(PeerRequest::of(&p.into()), Some(p));
        }
        assert_eq!(BridgeFrame::of(&crate::Request::Presence), None);
        assert_eq!(PeerRequest::of(&crate::Request::Pin("x".into())), None);
    }
}
