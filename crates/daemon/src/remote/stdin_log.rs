//! The stdin an invocation's relay has sent, kept so that it can be sent again after a broken
//! connection from exactly the byte the far command had not received (SPEC §3.13: every stream
//! resumes where it stopped).
//!
//! Bytes in flight when a link dies (in the mux window, ssh's buffers, the kernel's) are at
//! most a few MiB, so the log keeps the last [`KEEP`] bytes. While the link is down the relay
//! stops reading the CLI's stdin once the log is full, so nothing unsent is ever dropped.

use std::collections::VecDeque;
use tether_proto::{OUTPUT_CHUNK, Request};

/// Stdin kept for replay.
pub const KEEP: usize = 16 << 20;

#[derive(Default)]
pub struct StdinLog {
    buf: VecDeque<u8>,
    /// Stdin byte number of `buf[0]`.
    start: u64,
    eof: bool,
}

impl StdinLog {
    /// Records `data` as sent (or to be sent), forgetting the oldest bytes past [`KEEP`].
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend(data);
        let over = self.buf.len().saturating_sub(KEEP);
        self.buf.drain(..over);
        self.start += over as u64;
    }

    pub fn eof(&mut self) {
        self.eof = true;
    }

    /// No room for more while the link is down.
    pub fn full(&self) -> bool {
        self.buf.len() >= KEEP
    }

    /// The frames that give the far command its stdin from byte `from` on; `Err` with the
    /// number of bytes no longer kept if `from` is older than the log.
    pub fn replay_from(&self, from: u64) -> Result<Vec<Request>, u64> {
        if from < self.start {
            return Err(self.start - from);
        }
        let skip = usize::try_from(from - self.start).unwrap_or(usize::MAX);
        let rest: Vec<u8> = self.buf.iter().skip(skip).copied().collect();
        let mut out: Vec<Request> = rest
            .chunks(OUTPUT_CHUNK)
            .map(|c| Request::Stdin(c.to_vec()))
            .collect();
        if self.eof {
            out.push(Request::StdinEof);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(reqs: &[Request]) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut eof = false;
        for r in reqs {
            match r {
                Request::Stdin(d) => out.extend_from_slice(d),
                Request::StdinEof => eof = true,
                other => panic!("unexpected {other:?}"),
            }
        }
        (out, eof)
    }

    #[test]
    fn replays_exactly_what_followed_the_far_count() {
        let mut log = StdinLog::default();
        log.push(b"hello ");
        log.push(b"world");
        assert_eq!(
            bytes(&log.replay_from(3).unwrap()),
            (b"lo world".to_vec(), false)
        );
        assert_eq!(bytes(&log.replay_from(11).unwrap()), (vec![], false));
        log.eof();
        assert_eq!(bytes(&log.replay_from(11).unwrap()), (vec![], true));
    }

    #[test]
    fn bytes_older_than_the_log_are_reported_lost() {
        let mut log = StdinLog::default();
        let big = vec![1u8; KEEP];
        log.push(b"0123456789");
        log.push(&big);
        assert!(log.full());
        assert_eq!(log.replay_from(4).unwrap_err(), 6);
        let (rest, _) = bytes(&log.replay_from(10).unwrap());
        assert_eq!(rest.len(), KEEP);
    }
}
