//! The session-host protocol's own version (issue 19): what a session host speaks with its
//! daemon (`HostInfo`, `Handoff`…) and with the clients handed to it (the invocation stream:
//! `Invoke`, `Stdin`, `Output`, `Exit`…).
//!
//! Hosts outlive the daemon and the CLI that started them: an upgrade of tether replaces the
//! daemon and the CLI while the sessions of the old release go on running. So the host
//! protocol is versioned apart from [`crate::PROTOCOL_VERSION`] (CLI ⇄ daemon ⇄ daemon), which
//! may change without stranding a single session, and a caller greets a host with the
//! oldest host protocol it still speaks ([`OLDEST_HOST_PROTOCOL`]); the host's `Hello` reply
//! names the newest it speaks, and both then use the lower of the two newest. A host accepts
//! every version from [`OLDEST_HOST_PROTOCOL`] to [`HOST_PROTOCOL_VERSION`].
//!
//! The rule for changes: a message hosts send or receive is never changed in place (the golden
//! frames in `golden.txt` catch it); a new form is a new variant, sent only to hosts whose
//! version has it, and [`HOST_PROTOCOL_VERSION`] goes up by one. [`OLDEST_HOST_PROTOCOL`] goes
//! up only when a release stops speaking to hosts that old (docs/PROTOCOL.md).

use std::ops::RangeInclusive;

/// The newest host protocol this release speaks.
pub const HOST_PROTOCOL_VERSION: u32 = 10;
/// The oldest host protocol this release still speaks: callers greet hosts with it.
pub const OLDEST_HOST_PROTOCOL: u32 = 6;

/// Host protocol versions a host of this release accepts in a `Hello`.
pub fn host_versions() -> RangeInclusive<u32> {
    OLDEST_HOST_PROTOCOL..=HOST_PROTOCOL_VERSION
}

/// The version a caller and a host use once the host has answered with the newest it speaks.
pub fn agreed(host_newest: u32) -> u32 {
    host_newest.min(HOST_PROTOCOL_VERSION)
}

/// A daemon's request to one of its own session hosts: what only a daemon sends a host. The
/// wire form is the [`crate::Request`] variant of the same name (so hosts of every release
/// read it), but the daemon's code speaks this enum, so that nothing meant for a daemon can be
/// sent to a host by mistake.
#[derive(Debug, Clone, PartialEq)]
pub enum HostRequest {
    /// The session's live information (`Sessions` with one entry).
    Info,
    /// End the shell and everything it started, then exit (`Ok`).
    Close,
    /// Let go of the running command's client; the session is Disconnected.
    Disconnect(crate::ClientId),
    /// A Disconnected session is Opened again, held by this client.
    Connect(crate::ClientId),
    /// This client vanished; an idle session it holds becomes Disconnected.
    ClientGone(crate::ClientId),
    /// A pooled host: `Ok` now, then again each time it is free for another invocation.
    PoolWatch,
    /// Sent with a client's connection attached: run this invocation and talk to that client
    /// directly (`prefix`: bytes already read from it past the `Invoke`). `resumes`: the client
    /// may come back with a `Resume` (a client daemon of another computer), so the command's
    /// stdin outlives its connection; it travels as a `HandoffClient` frame after the
    /// `Handoff` ([`HostRequest::into_wire`]), which hosts before protocol 7 never read (they
    /// keep stdin open for every acknowledging client, as `resumes: true`).
    Handoff {
        spec: Box<crate::InvokeSpec>,
        prefix: Vec<u8>,
        resumes: bool,
    },
    /// Sent with a client's connection attached: serve its `receive` (or a resume from byte
    /// `from`, acknowledged with `Ack`).
    HandoffReceive {
        prefix: Vec<u8>,
        from: Option<u64>,
        acked: bool,
        client: crate::ClientId,
        keep_stdin: bool,
        keep: bool,
    },
    /// Host protocol 10: Ctrl-C, leaving or an acknowledgement for invocation `invocation`
    /// of `client`, which holds the session, from beside the invocation's own connection
    /// (see [`crate::Request::Aside`]).
    Aside {
        client: crate::ClientId,
        invocation: u64,
        what: crate::Aside,
    },
}

impl From<HostRequest> for crate::Request {
    fn from(r: HostRequest) -> crate::Request {
        use crate::Request as R;
        match r {
            HostRequest::Info => R::HostInfo,
            HostRequest::Close => R::HostClose,
            HostRequest::Disconnect(c) => R::HostDisconnect(c),
            HostRequest::Connect(c) => R::HostConnect(c),
            HostRequest::ClientGone(c) => R::HostClientGone(c),
            HostRequest::PoolWatch => R::HostPoolWatch,
            HostRequest::Handoff { spec, prefix, .. } => R::Handoff {
                spec: *spec,
                prefix,
            },
            HostRequest::HandoffReceive {
                prefix,
                from,
                acked,
                client,
                keep_stdin,
                keep,
            } => R::HandoffReceive {
                prefix,
                from,
                acked,
                client,
                keep_stdin,
                keep,
            },
            HostRequest::Aside {
                client,
                invocation,
                what,
            } => R::HostAside {
                client,
                invocation,
                what,
            },
        }
    }
}

impl HostRequest {
    /// The frames that carry this request, in order, to be written in one message: a
    /// `Handoff` is followed by its `HandoffClient` (host protocol 7).
    pub fn into_wire(self) -> Vec<crate::Request> {
        match self {
            HostRequest::Handoff { resumes, .. } => {
                vec![self.into(), crate::Request::HandoffClient { resumes }]
            }
            other => vec![other.into()],
        }
    }
}

impl TryFrom<crate::Request> for HostRequest {
    type Error = crate::Request;

    /// The host's reading of a request from its daemon; anything else comes back as it was.
    fn try_from(r: crate::Request) -> Result<HostRequest, crate::Request> {
        use crate::Request as R;
        Ok(match r {
            R::HostInfo => HostRequest::Info,
            R::HostClose => HostRequest::Close,
            R::HostDisconnect(c) => HostRequest::Disconnect(c),
            R::HostConnect(c) => HostRequest::Connect(c),
            R::HostClientGone(c) => HostRequest::ClientGone(c),
            R::HostPoolWatch => HostRequest::PoolWatch,
            R::Handoff { spec, prefix } => HostRequest::Handoff {
                spec: Box::new(spec),
                prefix,
                resumes: true,
            },
            R::HandoffReceive {
                prefix,
                from,
                acked,
                client,
                keep_stdin,
                keep,
            } => HostRequest::HandoffReceive {
                prefix,
                from,
                acked,
                client,
                keep_stdin,
                keep,
            },
            R::HostAside {
                client,
                invocation,
                what,
            } => HostRequest::Aside {
                client,
                invocation,
                what,
            },
            other => return Err(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_request_travels_as_its_request_and_comes_back() {
        let c = crate::ClientId {
            id: "i".into(),
            label: "l".into(),
        };
        for r in [
            HostRequest::Info,
            HostRequest::Close,
            HostRequest::Disconnect(c.clone()),
            HostRequest::Connect(c.clone()),
            HostRequest::ClientGone(c.clone()),
            HostRequest::PoolWatch,
            HostRequest::Handoff {
                spec: Default::default(),
                prefix: vec![1],
                resumes: true,
            },
            HostRequest::HandoffReceive {
                prefix: vec![],
                from: Some(3),
                acked: true,
                client: c.clone(),
                keep_stdin: false,
                keep: true,
            },
            HostRequest::Aside {
                client: c,
                invocation: 4,
                what: crate::Aside::Ack(5),
            },
        ] {
            let wire: crate::Request = r.clone().into();
            assert_eq!(HostRequest::try_from(wire), Ok(r));
        }
        assert_eq!(
            HostRequest::try_from(crate::Request::Cancel),
            Err(crate::Request::Cancel)
        );
    }

    #[test]
    fn a_handoff_carries_whether_its_client_resumes_in_a_second_frame() {
        let h = HostRequest::Handoff {
            spec: Default::default(),
            prefix: vec![],
            resumes: false,
        };
        let wire = h.into_wire();
        assert_eq!(wire.len(), 2);
        assert!(matches!(wire[0], crate::Request::Handoff { .. }));
        assert_eq!(wire[1], crate::Request::HandoffClient { resumes: false });
        assert_eq!(
            HostRequest::Info.into_wire(),
            vec![crate::Request::HostInfo]
        );
    }

    #[test]
    fn versions_agree_on_the_lower_newest() {
        assert!(host_versions().contains(&OLDEST_HOST_PROTOCOL));
        assert!(host_versions().contains(&HOST_PROTOCOL_VERSION));
        assert_eq!(agreed(HOST_PROTOCOL_VERSION + 3), HOST_PROTOCOL_VERSION);
        assert_eq!(agreed(OLDEST_HOST_PROTOCOL), OLDEST_HOST_PROTOCOL);
    }
}
