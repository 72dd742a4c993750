//! Many independent byte channels over one byte stream (one ssh connection per computer).
//!
//! Each channel carries an ordinary tether protocol connection, so the far side (`tether bridge`)
//! only has to connect each channel to its daemon's socket, and the near side (the client daemon)
//! splices each CLI connection onto a channel. One ssh handshake then serves every session and
//! invocation on that computer.
//!
//! Wire format: a 9-byte header `kind u8 | channel u32 BE | len u32 BE`, then `len` payload bytes
//! (for `Credit` the length field is the credit and there is no payload). Every field is checked
//! before anything is allocated: a frame over [`MAX_FRAME`] or of an unknown kind ends the link.
//!
//! Flow control is per channel, as in SSH itself: a sender may have at most [`WINDOW`] bytes that
//! the receiver has not yet consumed, and the receiver grants credit back as its reader drains.
//! A slow consumer of one channel therefore never stalls the others, and memory stays bounded
//! by `channels × WINDOW` however fast a peer sends.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{Semaphore, mpsc, watch};

#[path = "mux_splice.rs"]
mod splice;
pub use splice::splice;

/// Bytes a sender may have in flight on one channel before the receiver grants more.
pub const WINDOW: usize = 2 * 1024 * 1024;
/// Largest payload this side puts in one `Data` frame.
pub const MAX_DATA: usize = 64 * 1024;
/// Largest frame payload accepted from the peer.
pub const MAX_FRAME: u32 = 256 * 1024;
/// Most channels one link may have open at once; more `Open`s are refused.
pub const MAX_CHANNELS: usize = 4096;
const HEADER: usize = 9;
/// Write buffer of a link (bursts of output become few system calls).
pub const LINK_BUFFER: usize = 256 * 1024;
/// Read buffer of a link. Small on purpose: a frame's header and whatever of its payload came
/// with it are copied out of it, but the rest of a bulk payload is read straight into the
/// payload's own buffer (a reader with an empty buffer passes a large read through), so most
/// bytes are never copied in this process; small frames still arrive many to a read.
const READ_BUFFER: usize = 8 * 1024;

const OPEN: u8 = 1;
const DATA: u8 = 2;
const EOF: u8 = 3;
const RESET: u8 = 4;
const CREDIT: u8 = 5;

struct Out {
    kind: u8,
    channel: u32,
    /// For `Credit`, the amount; otherwise unused.
    value: u32,
    /// Shared, not copied: a sender's own buffer goes out as it is.
    data: bytes::Bytes,
}

struct Entry {
    /// Incoming bytes for the channel's reader; dropped at the peer's `Eof` or `Reset`.
    tx: Option<mpsc::UnboundedSender<Vec<u8>>>,
    /// Bytes received but not yet consumed by the reader (bounded by [`WINDOW`]).
    pending: Arc<AtomicUsize>,
    /// Send credit granted by the peer.
    credit: Arc<Semaphore>,
}

struct Shared {
    out: mpsc::UnboundedSender<Out>,
    chans: Mutex<HashMap<u32, Entry>>,
    next_id: AtomicU32,
    dead: watch::Sender<bool>,
    is_dead: AtomicBool,
}

impl Shared {
    fn send(&self, kind: u8, channel: u32, value: u32, data: bytes::Bytes) {
        let _ = self.out.send(Out {
            kind,
            channel,
            value,
            data,
        });
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Entry>> {
        // A panic while holding the lock cannot leave the map half-updated in a way that matters
        // more than losing the link, so a poisoned lock is simply taken over.
        self.chans.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends one channel on this side: its reader sees end of stream, its writer an error.
    fn drop_channel(&self, id: u32) {
        if let Some(e) = self.table().remove(&id) {
            e.credit.close();
        }
    }

    fn kill(&self) {
        self.is_dead.store(true, Ordering::SeqCst);
        let _ = self.dead.send(true);
        let entries: Vec<Entry> = self.table().drain().map(|(_, e)| e).collect();
        for e in entries {
            e.credit.close();
        }
    }

    fn register(&self, id: u32) -> Option<Channel> {
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let credit = Arc::new(Semaphore::new(WINDOW));
        {
            let mut t = self.table();
            if t.len() >= MAX_CHANNELS || t.contains_key(&id) {
                return None;
            }
            t.insert(
                id,
                Entry {
                    tx: Some(tx),
                    pending: pending.clone(),
                    credit: credit.clone(),
                },
            );
        }
        Some(Channel {
            id,
            rx,
            pending,
            credit,
        })
    }
}

/// A fresh channel: split it into its two halves to use it.
pub struct Channel {
    pub id: u32,
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    pending: Arc<AtomicUsize>,
    credit: Arc<Semaphore>,
}

/// One end of a multiplexed link. Cloning shares the link.
#[derive(Clone)]
pub struct Mux {
    shared: Arc<Shared>,
}

impl Mux {
    /// Runs a link over `r`/`w` (two tasks). Channels the peer opens arrive on the returned
    /// receiver; a side that only opens channels may drop it (the peer's `Open`s are refused).
    pub fn start<R, W>(r: R, w: W) -> (Mux, mpsc::UnboundedReceiver<(Mux, Channel)>)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        Mux::start_sized(r, w, LINK_BUFFER)
    }

    /// [`Mux::start`] with `buffer` bytes of write buffer instead of [`LINK_BUFFER`] (and a
    /// read buffer no larger): a link that must stay small (one of thousands) trades a few
    /// more system calls under load for memory.
    pub fn start_sized<R, W>(
        r: R,
        w: W,
        buffer: usize,
    ) -> (Mux, mpsc::UnboundedReceiver<(Mux, Channel)>)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            out: out_tx,
            chans: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(1),
            dead: watch::channel(false).0,
            is_dead: AtomicBool::new(false),
        });
        let (accept_tx, accept_rx) = mpsc::unbounded_channel();
        let mux = Mux { shared };
        tokio::spawn(write_loop(mux.shared.clone(), out_rx, w, buffer));
        tokio::spawn(read_loop(
            mux.clone(),
            r,
            accept_tx,
            buffer.min(READ_BUFFER),
        ));
        (mux, accept_rx)
    }

    /// Opens a channel. It costs no round trip: data may follow the `Open` at once.
    pub fn open(&self) -> io::Result<Channel> {
        if self.is_closed() {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "link closed"));
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let ch = self
            .shared
            .register(id)
            .ok_or_else(|| io::Error::other("too many channels on this link"))?;
        self.shared.send(OPEN, id, 0, bytes::Bytes::new());
        Ok(ch)
    }

    /// Ends the link: every channel ends and the byte stream is shut down.
    pub fn close(&self) {
        self.shared.kill();
    }

    pub fn is_closed(&self) -> bool {
        self.shared.is_dead.load(Ordering::SeqCst)
    }

    /// Resolves once the link has ended (the peer went away or broke the protocol).
    pub async fn closed(&self) {
        let mut rx = self.shared.dead.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Channels currently open.
    pub fn channels(&self) -> usize {
        self.shared.table().len()
    }

    /// Splits a channel into a reader (an [`AsyncRead`]) and a writer.
    pub fn split(&self, ch: Channel) -> (ChannelReader, ChannelWriter) {
        let life = Arc::new(Life {
            id: ch.id,
            shared: self.shared.clone(),
        });
        (
            ChannelReader {
                rx: ch.rx,
                cur: Vec::new(),
                pos: 0,
                pending: ch.pending,
                unreported: 0,
                eof: false,
                life: life.clone(),
            },
            ChannelWriter {
                credit: ch.credit,
                eof_sent: false,
                life,
            },
        )
    }
}

/// Removes a channel from the table once both of its halves are gone.
struct Life {
    id: u32,
    shared: Arc<Shared>,
}

impl Drop for Life {
    fn drop(&mut self) {
        self.shared.drop_channel(self.id);
    }
}

/// The receiving half of a channel.
pub struct ChannelReader {
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    pending: Arc<AtomicUsize>,
    /// Consumed bytes not yet granted back to the peer.
    unreported: usize,
    eof: bool,
    life: Arc<Life>,
}

impl ChannelReader {
    fn consumed(&mut self, n: usize) {
        self.pending.fetch_sub(n, Ordering::SeqCst);
        self.unreported += n;
        // Granting in quarters keeps credit frames rare; it cannot deadlock because a blocked
        // sender implies more than WINDOW - MAX_DATA unconsumed-or-unreported bytes here.
        if self.unreported >= WINDOW / 4 {
            let n = std::mem::take(&mut self.unreported);
            self.life
                .shared
                .send(CREDIT, self.life.id, n as u32, bytes::Bytes::new());
        }
    }
}

impl ChannelReader {
    /// The next bytes received, as they came (no copy), or `None` at end of stream.
    pub async fn chunk(&mut self) -> Option<Vec<u8>> {
        let chunk = if self.pos < self.cur.len() {
            let mut cur = std::mem::take(&mut self.cur);
            if self.pos > 0 {
                cur.drain(..self.pos);
            }
            cur
        } else {
            match self.rx.recv().await {
                Some(c) => c,
                None => {
                    self.eof = true;
                    return None;
                }
            }
        };
        self.pos = 0;
        self.consumed(chunk.len());
        Some(chunk)
    }
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos >= this.cur.len() {
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(chunk)) => {
                    this.cur = chunk;
                    this.pos = 0;
                }
                Poll::Ready(None) => {
                    this.eof = true;
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = (this.cur.len() - this.pos).min(buf.remaining());
        buf.put_slice(&this.cur[this.pos..this.pos + n]);
        this.pos += n;
        this.consumed(n);
        Poll::Ready(Ok(()))
    }
}

impl Drop for ChannelReader {
    fn drop(&mut self) {
        // Nobody will read what the peer still sends: tell it to stop rather than let it wait
        // for credit forever.
        if !self.eof {
            self.life
                .shared
                .send(RESET, self.life.id, 0, bytes::Bytes::new());
        }
    }
}

/// The sending half of a channel. Dropping it without [`ChannelWriter::eof`] sends end of stream.
pub struct ChannelWriter {
    credit: Arc<Semaphore>,
    eof_sent: bool,
    life: Arc<Life>,
}

impl ChannelWriter {
    /// Sends bytes, waiting for credit when the peer's window is full.
    pub async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.send_bytes(bytes::Bytes::copy_from_slice(data)).await
    }

    /// As [`ChannelWriter::send`], taking the buffer: it goes out as it is, with no copy.
    pub async fn send_vec(&mut self, data: Vec<u8>) -> io::Result<()> {
        self.send_bytes(bytes::Bytes::from(data)).await
    }

    /// As [`ChannelWriter::send`], sharing the buffer (frames are slices of it, not copies).
    pub async fn send_bytes(&mut self, mut data: bytes::Bytes) -> io::Result<()> {
        if self.eof_sent {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "channel closed"));
        }
        while !data.is_empty() {
            let chunk = data.split_to(data.len().min(MAX_DATA));
            let permit = self
                .credit
                .acquire_many(chunk.len() as u32)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "channel reset"))?;
            permit.forget();
            self.life.shared.send(DATA, self.life.id, 0, chunk);
        }
        Ok(())
    }

    /// Half-closes: the peer's reader sees end of stream after the bytes already sent.
    pub fn eof(&mut self) {
        if !self.eof_sent {
            self.eof_sent = true;
            self.life
                .shared
                .send(EOF, self.life.id, 0, bytes::Bytes::new());
        }
    }
}

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        self.eof();
    }
}

/// Most frames gathered into one `writev` (well under any system's `IOV_MAX`).
const BATCH_FRAMES: usize = 256;

async fn write_loop<W: AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Out>,
    w: W,
    buffer: usize,
) {
    let mut dead = shared.dead.subscribe();
    // A stream that takes vectored writes gets each burst of queued frames in one `writev`,
    // headers and payloads side by side, with no copy into a buffer of ours; any other (a
    // library's channel) gets them through a buffer, so headers never go out alone.
    let vectored = w.is_write_vectored();
    let mut w = tokio::io::BufWriter::with_capacity(if vectored { 0 } else { buffer }, w);
    let mut batch: Vec<Out> = Vec::with_capacity(BATCH_FRAMES);
    loop {
        let first = tokio::select! {
            m = rx.recv() => m,
            _ = dead.wait_for(|d| *d) => None,
        };
        let Some(first) = first else { break };
        let mut bytes = HEADER + first.data.len();
        batch.push(first);
        while bytes < buffer && batch.len() < BATCH_FRAMES {
            match rx.try_recv() {
                Ok(m) => {
                    bytes += HEADER + m.data.len();
                    batch.push(m);
                }
                Err(_) => break,
            }
        }
        let sent = if vectored {
            write_batch(w.get_mut(), &batch).await
        } else {
            write_buffered(&mut w, &batch).await
        };
        batch.clear();
        if sent.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
    shared.kill();
}

fn header(m: &Out) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0] = m.kind;
    h[1..5].copy_from_slice(&m.channel.to_be_bytes());
    let len = if m.kind == CREDIT {
        m.value
    } else {
        m.data.len() as u32
    };
    h[5..9].copy_from_slice(&len.to_be_bytes());
    h
}

/// Writes the frames with as few `writev`s as the stream allows.
async fn write_batch<W: AsyncWrite + Unpin>(w: &mut W, batch: &[Out]) -> io::Result<()> {
    let headers: Vec<[u8; HEADER]> = batch.iter().map(header).collect();
    let mut slices: Vec<io::IoSlice<'_>> = Vec::with_capacity(batch.len() * 2);
    for (h, m) in headers.iter().zip(batch) {
        slices.push(io::IoSlice::new(h));
        if !m.data.is_empty() {
            slices.push(io::IoSlice::new(&m.data));
        }
    }
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = w.write_vectored(rest).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        io::IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

async fn write_buffered<W: AsyncWrite + Unpin>(
    w: &mut tokio::io::BufWriter<W>,
    batch: &[Out],
) -> io::Result<()> {
    for m in batch {
        w.write_all(&header(m)).await?;
        w.write_all(&m.data).await?;
    }
    w.flush().await
}

async fn read_loop<R: AsyncRead + Unpin>(
    mux: Mux,
    r: R,
    accept: mpsc::UnboundedSender<(Mux, Channel)>,
    buffer: usize,
) {
    let mut r = tokio::io::BufReader::with_capacity(buffer, r);
    if let Err(e) = demux(&mux, &mut r, &accept).await {
        tracing::debug!("mux link ended: {e}");
    }
    mux.shared.kill();
}

async fn demux<R: AsyncRead + Unpin>(
    mux: &Mux,
    r: &mut R,
    accept: &mpsc::UnboundedSender<(Mux, Channel)>,
) -> io::Result<()> {
    let shared = &mux.shared;
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    loop {
        let mut h = [0u8; HEADER];
        match r.read_exact(&mut h).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let kind = h[0];
        let id = u32::from_be_bytes([h[1], h[2], h[3], h[4]]);
        let len = u32::from_be_bytes([h[5], h[6], h[7], h[8]]);
        match kind {
            OPEN => {
                let refused = shared.is_dead.load(Ordering::SeqCst)
                    || match shared.register(id) {
                        Some(ch) => accept.send((mux.clone(), ch)).is_err(),
                        None => true,
                    };
                if refused {
                    shared.drop_channel(id);
                    shared.send(RESET, id, 0, bytes::Bytes::new());
                }
            }
            DATA => {
                if len > MAX_FRAME {
                    return Err(bad(format!("data frame of {len} bytes")));
                }
                let mut data = Vec::new();
                crate::read_into(r, &mut data, len as usize).await?;
                deliver(shared, id, data);
            }
            EOF => {
                if let Some(e) = shared.table().get_mut(&id) {
                    e.tx = None;
                }
            }
            RESET => shared.drop_channel(id),
            CREDIT => {
                let t = shared.table();
                if let Some(e) = t.get(&id) {
                    // More credit than a window means a confused peer: ignore the excess.
                    let room = WINDOW.saturating_sub(e.credit.available_permits());
                    e.credit.add_permits((len as usize).min(room));
                }
            }
            k => return Err(bad(format!("unknown frame kind {k}"))),
        }
    }
}

/// Queues received bytes for a channel's reader, resetting a channel whose peer ignores the
/// window (it would otherwise grow without bound).
fn deliver(shared: &Shared, id: u32, data: Vec<u8>) {
    let n = data.len();
    let overrun = {
        let t = shared.table();
        let Some(e) = t.get(&id) else { return };
        let Some(tx) = &e.tx else { return };
        let pending = e.pending.fetch_add(n, Ordering::SeqCst) + n;
        pending > WINDOW || tx.send(data).is_err()
    };
    if overrun {
        shared.drop_channel(id);
        shared.send(RESET, id, 0, bytes::Bytes::new());
    }
}

#[cfg(test)]
#[path = "mux_tests.rs"]
mod tests;
