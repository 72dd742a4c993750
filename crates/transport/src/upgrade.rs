//! What lets one release of tether take over from another's daemon (PROTOCOL.md, "Version
//! compatibility"): the one line a daemon answers a client of another protocol with, and the
//! signal that retires a daemon.
//!
//! The line's words are frozen: a client of a newer release reads them from daemons of every
//! earlier release, which it has to recognise to replace them. [`refusal_line`] writes it and
//! [`Refusal::parse`] reads it back; a test keeps the two in step.

/// The signal that retires a daemon: it stops accepting and exits without touching a session,
/// which the next daemon adopts. Its default action terminates, so a daemon of a release that
/// does not catch it yet simply dies of it, and its sessions survive that as they survive
/// `kill -9`. No tether process uses it for anything else.
pub const RETIRE_SIGNAL: nix::sys::signal::Signal = nix::sys::signal::Signal::SIGUSR2;

/// The refusal a peer of protocol `newest` sends a client that greeted it with `version`.
pub fn refusal_line(who: &str, newest: u32, version: u32) -> String {
    format!(
        "this {who} speaks protocol {newest} (tether {}), the client speaks {version}: install the same tether version on both sides",
        env!("CARGO_PKG_VERSION")
    )
}

/// A daemon's refusal of a client of another protocol, as [`refusal_line`] writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The daemon's protocol.
    pub protocol: u32,
    /// The daemon's tether version (informational; checked to be one short printable word).
    pub version: String,
    /// The protocol the refused client spoke.
    pub client: u32,
}

impl Refusal {
    /// Reads a daemon's refusal line; `None` for any other message (a session host's, an
    /// error of another kind, a line cut or garbled).
    pub fn parse(line: &str) -> Option<Refusal> {
        let rest = line.strip_prefix("this tether daemon speaks protocol ")?;
        let (protocol, rest) = rest.split_once(" (tether ")?;
        let (version, rest) = rest.split_once("), the client speaks ")?;
        let client = rest.split_once(':').map_or(rest, |(n, _)| n);
        let printable = |s: &str| s.chars().all(|c| c.is_ascii_graphic());
        if version.is_empty() || version.len() > 64 || !printable(version) {
            return None;
        }
        Some(Refusal {
            protocol: number(protocol)?,
            version: version.to_string(),
            client: number(client)?,
        })
    }
}

/// A protocol number: decimal digits only (no sign, no spaces), within `u32`.
fn number(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_a_daemon_writes_parses_back() {
        let line = refusal_line("tether daemon", 6, 7);
        assert_eq!(
            Refusal::parse(&line),
            Some(Refusal {
                protocol: 6,
                version: env!("CARGO_PKG_VERSION").into(),
                client: 7
            })
        );
    }

    #[test]
    fn the_line_of_earlier_releases_parses() {
        let line = "this tether daemon speaks protocol 5 (tether 0.0.9), the client speaks 6: \
                    install the same tether version on both sides";
        let r = Refusal::parse(line).unwrap();
        assert_eq!((r.protocol, r.version.as_str(), r.client), (5, "0.0.9", 6));
    }

    #[test]
    fn anything_else_is_not_a_refusal() {
        for line in [
            "",
            "session web is busy",
            "this session host speaks protocol 7 (tether 0.1.0), the client speaks 5: install",
            "this tether daemon speaks protocol  (tether 0.1.0), the client speaks 7: x",
            "this tether daemon speaks protocol +6 (tether 0.1.0), the client speaks 7: x",
            "this tether daemon speaks protocol 6 (tether 0.1.0), the client speaks -7: x",
            "this tether daemon speaks protocol 99999999999 (tether 0.1.0), the client speaks 7",
            "this tether daemon speaks protocol 6 (tether ), the client speaks 7: x",
            "this tether daemon speaks protocol 6 (tether a b), the client speaks 7: x",
            "this tether daemon speaks protocol 6 (tether 0.1.0)",
            "this tether daemon speaks protocol 6",
        ] {
            assert_eq!(Refusal::parse(line), None, "{line:?}");
        }
    }
}
