//! Output of a command whose client went away (SPEC §3.11–12).
//!
//! When the client of a running command disconnects (`tether disconnect`, or its connection
//! simply ends), the command goes on and what it writes is kept here, in order, up to a quota
//! (`TETHER_OUTPUT_QUOTA` bytes, default 1 GiB). When the quota is full the host stops reading
//! the command's pipes, so the command blocks on its next write (`block` mode) and resumes as
//! `receive` drains. `receive` streams what was kept, then the live rest, then the exit status.
//!
//! Kept output lives in memory and then in a private spool file ([`crate::spool`]). In `drop`
//! mode a detached command never waits: its oldest kept output goes instead, and `receive`
//! says how much.

use crate::spool::Chunks;
use std::path::PathBuf;
use tether_proto::{ExitInfo, Stream};
use tokio::sync::watch;

/// Most bytes one `receive` step writes before checking for new requests.
const BATCH: usize = 1 << 20;

struct Kept {
    chunks: Chunks,
    /// Output byte number of the first kept byte (bytes of both streams, in order, from the
    /// start of the invocation).
    base: u64,
    exit: Option<ExitInfo>,
    /// A detached command's output is (or was) being kept and has not been received whole.
    pending: bool,
    /// Bytes dropped (`drop` mode) since the client went away.
    dropped: u64,
}

impl Kept {
    fn end(&self) -> u64 {
        self.base + self.chunks.len() as u64
    }

    /// Forgets everything before byte `seq`.
    fn trim_to(&mut self, seq: u64) {
        let cut = seq.saturating_sub(self.base).min(self.chunks.len() as u64);
        self.chunks.pop_front(cut as usize);
        self.base += cut;
    }

    /// Back to nothing kept, numbering from 0.
    fn clear(&mut self) {
        self.chunks.clear();
        self.base = 0;
        self.exit = None;
        self.pending = false;
        self.dropped = 0;
    }
}

/// Chunks to send, the byte number after them, and the exit once nothing precedes it.
pub(crate) type Batch = (Vec<(Stream, Vec<u8>)>, u64, Option<ExitInfo>);

pub(crate) struct Outbox {
    kept: std::sync::Mutex<Kept>,
    /// Bumped on every change, so waiters never miss one.
    version: watch::Sender<u64>,
    quota: usize,
    /// `drop` mode: while detached, the oldest output goes at the quota.
    drop_oldest: bool,
}

impl Outbox {
    /// `spool` is the private file kept output spills into once its memory share is full.
    pub fn new(quota: Option<u64>, drop_oldest: bool, spool: Option<PathBuf>) -> Outbox {
        // The session's own quota, else `TETHER_OUTPUT_QUOTA` (default 1 GiB).
        let quota = quota
            .map(|q| q as usize)
            .filter(|q| *q > 0)
            .unwrap_or(tether_settings::get().output_quota);
        Outbox {
            kept: std::sync::Mutex::new(Kept {
                chunks: Chunks::new(spool),
                base: 0,
                exit: None,
                pending: false,
                dropped: 0,
            }),
            version: watch::channel(0).0,
            quota,
            drop_oldest,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// A new invocation starts: output numbering restarts at 0 and leftovers of an earlier,
    /// fully delivered one are dropped.
    pub fn reset(&self) {
        self.lock().clear();
        self.bump();
    }

    /// From now on the running command's output is kept for `receive`.
    pub fn begin(&self) {
        self.lock().pending = true;
        self.bump();
    }

    pub fn pending(&self) -> bool {
        self.lock().pending
    }

    /// Whether the command may write more before the quota is reached. In `drop` mode a
    /// detached command never waits: its oldest kept output goes instead.
    pub fn room(&self) -> bool {
        let k = self.lock();
        k.chunks.len() < self.quota || (self.drop_oldest && k.pending)
    }

    #[cfg(test)]
    pub fn push(&self, stream: Stream, data: &[u8]) {
        self.push_bytes(stream, bytes::Bytes::copy_from_slice(data));
    }

    /// Keeps a chunk of output: the buffer itself, shared with the frame that sent it.
    pub fn push_bytes(&self, stream: Stream, data: bytes::Bytes) {
        if data.is_empty() {
            return;
        }
        {
            let mut k = self.lock();
            k.chunks.push_bytes(stream, data);
            if self.drop_oldest && k.pending && k.chunks.len() > self.quota {
                let over = (k.chunks.len() - self.quota) as u64;
                let to = k.base + over;
                k.trim_to(to);
                k.dropped += over;
            }
        }
        self.bump();
    }

    /// Drops whatever is kept (output of a command whose client went away for good): the
    /// bytes dropped and the command's exit status, if there was anything.
    pub fn discard(&self) -> Option<(u64, Option<i32>)> {
        let what = {
            let mut k = self.lock();
            if !k.pending && k.chunks.len() == 0 && k.exit.is_none() {
                return None;
            }
            let what = (k.chunks.len() as u64, k.exit.as_ref().map(|e| e.code));
            k.clear();
            what
        };
        self.bump();
        Some(what)
    }

    pub fn finish(&self, exit: ExitInfo) {
        self.lock().exit = Some(exit);
        self.bump();
    }

    /// The client has everything before `seq`; past the end it also has the exit, and nothing
    /// is left to keep.
    pub fn ack(&self, seq: u64) {
        {
            let mut k = self.lock();
            if seq > k.end() && k.exit.is_some() {
                k.clear();
            } else {
                k.trim_to(seq);
            }
        }
        self.bump();
    }

    /// The client was told to let go while connected: everything sent so far reaches it
    /// before that notice, so only what follows is kept for `receive`.
    pub fn forget_sent(&self) {
        {
            let mut k = self.lock();
            let end = k.end();
            k.trim_to(end);
        }
        self.bump();
    }

    /// Up to [`BATCH`] bytes from byte `from` on (copied: they stay until acknowledged or
    /// consumed), or the exit status once everything before it is out.
    pub(crate) fn read_from(&self, from: u64) -> std::io::Result<Batch> {
        let k = self.lock();
        let skip = from.saturating_sub(k.base) as usize;
        let out = k.chunks.read(skip, BATCH)?;
        let size: usize = out.iter().map(|(_, d)| d.len()).sum();
        let next = from.max(k.base) + size as u64;
        let exit = if next >= k.end() {
            k.exit.clone()
        } else {
            None
        };
        Ok((out, next, exit))
    }

    pub(crate) fn quota(&self) -> usize {
        self.quota
    }

    /// Delivered whole to a live client: no longer waiting to be received (but kept for a
    /// resume until acknowledged, or the next command).
    pub(crate) fn delivered(&self) {
        self.lock().pending = false;
    }

    pub(crate) fn base(&self) -> u64 {
        self.lock().base
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    pub(crate) fn has_anything(&self) -> bool {
        let k = self.lock();
        k.pending || k.chunks.len() > 0 || k.exit.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> ExitInfo {
        ExitInfo {
            code,
            ..Default::default()
        }
    }

    /// Everything readable from `from`, as (stream, text) pairs, the next byte, and the exit.
    fn read_all(ob: &Outbox, mut from: u64) -> (Vec<(Stream, String)>, u64, Option<i32>) {
        let mut got = Vec::new();
        loop {
            let (chunks, next, exit) = ob.read_from(from).unwrap();
            if chunks.is_empty() {
                return (got, next, exit.map(|e| e.code));
            }
            for (s, d) in chunks {
                got.push((s, String::from_utf8(d).unwrap()));
            }
            from = next;
        }
    }

    #[test]
    fn output_comes_back_in_order_and_the_exit_only_after_it() {
        let ob = Outbox::new(Some(1 << 20), false, None);
        ob.begin();
        ob.push(Stream::Stdout, b"one ");
        ob.push(Stream::Stderr, b"two ");
        ob.push(Stream::Stdout, b"three");
        let (_, _, exit_early) = ob.read_from(0).unwrap();
        assert_eq!(
            exit_early.map(|e| e.code),
            None,
            "no exit before it is known"
        );
        ob.finish(exit(3));
        let (got, next, code) = read_all(&ob, 0);
        let text: String = got.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(text, "one two three");
        assert_eq!(got[1].0, Stream::Stderr);
        assert_eq!((next, code), (13, Some(3)));
        // From the middle: the rest, then the exit.
        let (got, _, code) = read_all(&ob, 8);
        assert_eq!(
            got.iter().map(|(_, t)| t.as_str()).collect::<String>(),
            "three"
        );
        assert_eq!(code, Some(3));
        assert!(ob.pending() && ob.has_anything());
    }

    #[test]
    fn acknowledged_bytes_are_forgotten_and_the_end_clears_everything() {
        let ob = Outbox::new(Some(1 << 20), false, None);
        ob.push(Stream::Stdout, b"abcdef");
        ob.ack(4);
        assert_eq!(ob.base(), 4);
        let (got, _, _) = read_all(&ob, 0);
        assert_eq!(
            got,
            vec![(Stream::Stdout, "ef".to_string())],
            "reads start at the base"
        );
        ob.finish(exit(0));
        // An ack of the end alone keeps the exit for a resume; past the end, nothing is left.
        ob.ack(6);
        assert!(ob.has_anything());
        ob.ack(7);
        assert!(!ob.has_anything());
        assert_eq!(ob.base(), 0, "numbering starts again");
    }

    #[test]
    fn a_full_block_mode_outbox_has_no_room_and_drop_mode_drops_the_oldest() {
        let block = Outbox::new(Some(8), false, None);
        block.begin();
        block.push(Stream::Stdout, b"12345678");
        assert!(!block.room(), "at the quota the command must wait");
        block.ack(4);
        assert!(block.room(), "room again once received");

        let drop = Outbox::new(Some(8), true, None);
        drop.begin();
        drop.push(Stream::Stdout, b"12345678");
        assert!(drop.room(), "drop mode never makes a detached command wait");
        drop.push(Stream::Stdout, b"abc");
        assert_eq!(drop.dropped(), 3);
        let (got, _, _) = read_all(&drop, 0);
        assert_eq!(
            got.iter().map(|(_, t)| t.as_str()).collect::<String>(),
            "45678abc"
        );
    }

    #[test]
    fn what_was_sent_before_a_let_go_is_not_kept_and_a_reset_forgets_all() {
        let ob = Outbox::new(Some(1 << 20), false, None);
        ob.push(Stream::Stdout, b"sent");
        ob.forget_sent();
        ob.push(Stream::Stdout, b"kept");
        let (got, _, _) = read_all(&ob, 0);
        assert_eq!(got, vec![(Stream::Stdout, "kept".to_string())]);
        ob.begin();
        ob.delivered();
        assert!(!ob.pending());
        assert_eq!(ob.discard(), Some((4, None)));
        assert!(!ob.has_anything());
        ob.reset();
        assert_eq!(ob.discard(), None);
    }
}
