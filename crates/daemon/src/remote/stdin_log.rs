//! The stdin an invocation's relay has sent, kept so that it can be sent again after a broken
//! connection from exactly the byte the far command had not received (SPEC §3.13: every stream
//! resumes where it stopped).
//!
//! Bytes in flight when a link dies (in the mux window, ssh's buffers, the kernel's) are at
//! most a few MiB, so the log keeps the last [`KEEP`] bytes. While the link is down the relay
//! stops reading the CLI's stdin once the log is full, so nothing unsent is ever dropped.

use bytes::Bytes;
use std::collections::VecDeque;
use tether_proto::{OUTPUT_CHUNK, Request};

/// Stdin kept for replay.
pub const KEEP: usize = 16 << 20;

/// The log holds the very buffers the relay sends (shared, not copied).
#[derive(Default)]
pub struct StdinLog {
    chunks: VecDeque<Bytes>,
    /// Bytes in `chunks`.
    len: usize,
    /// Stdin byte number of the first byte kept.
    start: u64,
    eof: bool,
}

impl StdinLog {
    /// Records `data` as sent (or to be sent), forgetting the oldest bytes past [`KEEP`].
    pub fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        self.chunks.push_back(data);
        let mut over = self.len.saturating_sub(KEEP);
        while over > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let cut = over.min(front.len());
            let _ = front.split_to(cut);
            if front.is_empty() {
                self.chunks.pop_front();
            }
            self.len -= cut;
            self.start += cut as u64;
            over -= cut;
        }
    }

    pub fn eof(&mut self) {
        self.eof = true;
    }

    /// The CLI said its stdin ended.
    pub fn ended(&self) -> bool {
        self.eof
    }

    /// No room for more while the link is down.
    pub fn full(&self) -> bool {
        self.len >= KEEP
    }

    /// The frames that give the far command its stdin from byte `from` on; `Err` with the
    /// number of bytes no longer kept if `from` is older than the log.
    pub fn replay_from(&self, from: u64) -> Result<Vec<Request>, u64> {
        if from < self.start {
            return Err(self.start - from);
        }
        let mut skip = usize::try_from(from - self.start).unwrap_or(usize::MAX);
        let mut rest = Vec::new();
        for c in &self.chunks {
            let k = skip.min(c.len());
            rest.extend_from_slice(&c[k..]);
            skip -= k;
        }
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
        log.push(Bytes::from_static(b"hello "));
        log.push(Bytes::from_static(b"world"));
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
        log.push(Bytes::from_static(b"0123456789"));
        log.push(Bytes::from(big));
        assert!(log.full());
        assert_eq!(log.replay_from(4).unwrap_err(), 6);
        let (rest, _) = bytes(&log.replay_from(10).unwrap());
        assert_eq!(rest.len(), KEEP);
    }
}
