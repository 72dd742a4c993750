//! The FIFOs an invocation's output and input travel through, and moving bytes between them
//! and the client: passing output on (and keeping it for `receive`), draining what is left,
//! swallowing late output of background jobs, and feeding stdin.

use crate::shell;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tether_proto::{OUTPUT_CHUNK, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};

/// How much already-buffered output we read after the status record, per stream. A background
/// job that floods its inherited stdout must not keep an invocation from ending.
pub(crate) const DRAIN_LIMIT: usize = 4 * 1024 * 1024;
pub(crate) fn mkfifo(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(std::io::Error::from)?;
    crate::runas::give(path)
}

/// Reads `<id> <status>` records from the status FIFO for the host's whole life. The host keeps a
/// write end open itself so the FIFO never reports end-of-file between records.
pub(crate) fn spawn_status_reader(
    path: &Path,
    tx: mpsc::UnboundedSender<(u64, i32)>,
) -> std::io::Result<()> {
    let rx = pipe::OpenOptions::new()
        .open_receiver(path)
        .map_err(tether_transport::at(path))?;
    let keep = open_dummy_writer(path).map_err(tether_transport::at(path))?;
    tokio::spawn(async move {
        let _keep = keep;
        let mut rx = tokio::io::BufReader::new(rx);
        let mut line = Vec::new();
        // Any process of the session can write here: a line too long or not UTF-8 is no
        // record, and is skipped without being kept whole or ending the reader.
        while let Ok(Some(cut)) =
            tether_transport::read_line_bounded(&mut rx, &mut line, STATUS_LINE_MAX).await
        {
            let Some(line) = std::str::from_utf8(&line).ok().filter(|_| !cut) else {
                continue;
            };
            if let Some(rec) = shell::parse_status(line)
                && tx.send(rec).is_err()
            {
                return;
            }
        }
    });
    Ok(())
}

/// The longest status record (`<id> <status> <options>`) read whole.
const STATUS_LINE_MAX: usize = 64;

pub(crate) fn open_dummy_writer(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// One output FIFO: our read end plus a write end we hold until the status record, so an early
/// read never sees end-of-file before the shell has opened it.
pub(crate) struct OutFifo {
    pub(crate) stream: Stream,
    pub(crate) path: PathBuf,
    rx: Option<pipe::Receiver>,
    pub(crate) hold: Option<std::fs::File>,
    /// Read buffer, kept with the FIFO so a reused pair costs no allocation; holds the last
    /// read. Read into its spare capacity: never zeroed.
    buf: Vec<u8>,
    /// Every writer has closed it (no background job holds it): it can serve the next
    /// invocation, which saves creating, opening and unlinking FIFOs on every call.
    pub(crate) eof: bool,
}

/// An invocation's stdout and stderr FIFOs, kept by the host for reuse.
pub(crate) type FifoPair = (OutFifo, OutFifo);

impl OutFifo {
    pub(crate) fn open(path: PathBuf, stream: Stream) -> std::io::Result<OutFifo> {
        let at = || tether_transport::at(&path);
        mkfifo(&path).map_err(at())?;
        let rx = pipe::OpenOptions::new()
            .open_receiver(&path)
            .map_err(at())?;
        let hold = open_dummy_writer(&path).map_err(at())?;
        Ok(OutFifo {
            stream,
            path,
            rx: Some(rx),
            hold: Some(hold),
            buf: Vec::with_capacity(OUTPUT_CHUNK),
            eof: false,
        })
    }

    /// Arms a drained FIFO for another invocation.
    pub(crate) fn rearm(mut self) -> std::io::Result<OutFifo> {
        self.hold = Some(open_dummy_writer(&self.path)?);
        self.eof = false;
        Ok(self)
    }

    /// Reads into the FIFO's own buffer; the bytes are `self.buf[..n]`.
    pub(crate) async fn read(&mut self) -> std::io::Result<usize> {
        self.buf.clear();
        self.buf.reserve_exact(OUTPUT_CHUNK);
        match self.rx.as_mut() {
            Some(rx) => rx.read_buf(&mut self.buf).await,
            None => std::future::pending().await,
        }
    }
}

impl OutFifo {
    /// The bytes of the last read, to keep and send. A large read hands over the buffer
    /// itself (the outbox and the client's frame share it: no copy) and the FIFO gets a new
    /// one; a small one is copied, so a kept chunk never holds much more memory than bytes.
    pub(crate) fn take(&mut self) -> bytes::Bytes {
        if self.buf.len() >= OUTPUT_CHUNK / 2 {
            bytes::Bytes::from(std::mem::replace(
                &mut self.buf,
                Vec::with_capacity(OUTPUT_CHUNK),
            ))
        } else {
            bytes::Bytes::copy_from_slice(&self.buf)
        }
    }

    /// A duplicate of the read end, to lend to the client ([`crate::lend`]).
    pub(crate) fn lendable(&self) -> Result<std::os::fd::OwnedFd, &'static str> {
        let rx = self.rx.as_ref().ok_or("its output has ended")?;
        std::os::fd::AsFd::as_fd(rx)
            .try_clone_to_owned()
            .map_err(|_| "no descriptor to spare")
    }

    /// Stops reading: the command's end of the FIFO is closed for good.
    pub(crate) fn let_go(&mut self) {
        self.rx = None;
    }

    /// Reads what the kernel already holds, without waiting (`None`: nothing to read from).
    /// A direct read(2), not tokio's try_read: that one trusts the reactor's cached readiness
    /// and may report "would block" for bytes the kernel already holds.
    pub(crate) fn read_now(&mut self) -> Option<std::io::Result<usize>> {
        let rx = self.rx.as_ref()?;
        let fd = std::os::fd::AsFd::as_fd(rx);
        self.buf.clear();
        self.buf.resize(OUTPUT_CHUNK, 0);
        let n = nix::unistd::read(fd, &mut self.buf).map_err(std::io::Error::from);
        self.buf.truncate(*n.as_ref().unwrap_or(&0));
        Some(n)
    }

    /// A read of an abandoned command's output: the bytes are dropped; at the end the FIFO is
    /// let go as [`forward`] does.
    pub(crate) fn discard(&mut self, n: std::io::Result<usize>) {
        if matches!(n, Ok(0) | Err(_)) {
            self.rx = None;
        }
    }
}

/// A script file the shell sources (`w`, `s`), rewritten in place for every invocation.
///
/// Truncating to zero and rewriting would make ext4 flush the file on close (its
/// `auto_da_alloc` heuristic), costing ~0.3 ms per invocation. Changing its size costs an
/// `ftruncate`, which on ext4 is a journalled inode update (~8 µs here, the largest single
/// syscall on the host's path; docs/PROFILES.md), so a text no longer than the file is padded
/// with trailing spaces, which every shell reads as nothing, and only a much shorter text
/// shrinks the file.
pub(crate) struct ScriptFile {
    file: std::fs::File,
    /// The file's current size, as last written.
    len: std::sync::atomic::AtomicU64,
}

/// How many bytes of padding a shorter text may get before the file is shrunk instead.
const MAX_PAD: u64 = 4096;

impl ScriptFile {
    /// Wraps a freshly created (empty) file.
    pub(crate) fn new(file: std::fs::File) -> ScriptFile {
        ScriptFile {
            file,
            len: 0.into(),
        }
    }

    /// Replaces the file's content with `text`.
    pub(crate) fn write(&self, text: &str) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        use std::sync::atomic::Ordering;
        let old = self.len.load(Ordering::Relaxed);
        let new = text.len() as u64;
        if new <= old && old - new <= MAX_PAD {
            let mut padded = Vec::with_capacity(old as usize);
            padded.extend_from_slice(text.as_bytes());
            padded.resize(old as usize, b' ');
            return self.file.write_all_at(&padded, 0);
        }
        self.file.write_all_at(text.as_bytes(), 0)?;
        // Set before the truncation: should it fail, the next write shrinks it again.
        self.len.store(new.max(old), Ordering::Relaxed);
        self.file.set_len(new)?;
        self.len.store(new, Ordering::Relaxed);
        Ok(())
    }
}

/// Keeps reading a FIFO that a background job still holds, so the job never dies of SIGPIPE,
/// and discards what it writes: it belongs to an invocation that has already ended.
pub(crate) fn linger(mut f: OutFifo) {
    let _ = std::fs::remove_file(&f.path);
    if let Some(mut rx) = f.rx.take() {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = rx.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        });
    }
}

/// The running command's stdin, kept by the host rather than by one connection, so a client
/// that comes back after a broken connection goes on feeding it (SPEC §3.13).
///
/// Taking stdin never waits: an invocation that waited for the command to read would read
/// none of its output meanwhile, and a command that echoes its input (`cat`, `gzip -c`) would
/// then wait for its output to be read while the invocation waits for it to read its input.
/// So what the client sends is queued here, in order, up to [`StdinFeed::AT_MOST`] bytes; past
/// that, the invocation reads no more from its client ([`StdinFeed::has_room`]) until the
/// command takes some ([`StdinFeed::freed`]), while it goes on reading output.
#[derive(Default)]
pub(crate) struct StdinFeed {
    feed: std::sync::Mutex<Option<Feed>>,
    /// Bumped whenever queued bytes were passed on.
    freed: watch::Sender<u64>,
}

/// The open stdin of the running command.
struct Feed {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    /// Bytes queued and not passed on yet (shared with what passes them on).
    queued: Arc<AtomicUsize>,
    /// Bytes fed so far.
    received: u64,
    /// For stdin on a FIFO: the invocation, the FIFO, the bytes written into it so far
    /// (what a client that borrows it must wait for, [`crate::lend`]), and the process of the
    /// invocation's client (the only one it is lent to).
    fifo: Option<(u64, PathBuf, watch::Receiver<u64>, Option<i32>)>,
}

/// What passes queued stdin on tells the queue each chunk it did.
#[derive(Clone)]
struct Passed {
    queued: Arc<AtomicUsize>,
    freed: watch::Sender<u64>,
}

impl Passed {
    fn one(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
        self.freed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

impl StdinFeed {
    /// Most bytes of stdin queued before the invocation stops reading its client.
    pub const AT_MOST: usize = 1 << 20;

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Feed>> {
        self.feed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn passed(&self) -> Passed {
        Passed {
            queued: Arc::new(AtomicUsize::new(0)),
            freed: self.freed.clone(),
        }
    }

    /// Opens stdin fed by `keys` (a terminal's keys).
    pub fn open(&self, keys: mpsc::Sender<Vec<u8>>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let passed = self.passed();
        let queued = passed.queued.clone();
        tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                let n = data.len();
                let _ = keys.send(data).await;
                passed.one(n);
            }
        });
        *self.lock() = Some(Feed {
            tx,
            queued,
            received: 0,
            fifo: None,
        });
    }

    /// Opens stdin fed into invocation `id`'s FIFO ([`spawn_stdin_writer`]), whose client is
    /// process `client`.
    pub fn open_fifo(&self, id: u64, path: PathBuf, client: Option<i32>) {
        let passed = self.passed();
        let queued = passed.queued.clone();
        let (tx, written) = spawn_stdin_writer(path.clone(), passed);
        *self.lock() = Some(Feed {
            tx,
            queued,
            received: 0,
            fifo: Some((id, path, written, client)),
        });
    }

    /// Queues `data` for the command (never waits) and counts it.
    pub fn push(&self, data: Vec<u8>) {
        let mut g = self.lock();
        let Some(f) = g.as_mut() else { return };
        f.received += data.len() as u64;
        f.queued.fetch_add(data.len(), Ordering::AcqRel);
        let _ = f.tx.send(data);
    }

    /// Whether more may be queued: stdin is closed, or less than [`StdinFeed::AT_MOST`] waits.
    pub fn has_room(&self) -> bool {
        self.lock()
            .as_ref()
            .is_none_or(|f| f.queued.load(Ordering::Acquire) < Self::AT_MOST)
    }

    /// Changes whenever queued bytes were passed on: a reason to look at
    /// [`StdinFeed::has_room`] again.
    pub fn freed(&self) -> watch::Receiver<u64> {
        self.freed.subscribe()
    }

    /// End of stdin: the command reads end-of-file once it has read what was fed.
    pub fn close(&self) {
        self.lock().take();
    }

    /// Bytes fed so far, while stdin is open.
    pub fn received(&self) -> Option<u64> {
        self.lock().as_ref().map(|f| f.received)
    }

    /// Invocation `id`'s open stdin FIFO, the count of bytes written into it, and its
    /// client's process, if any.
    pub fn fifo_of(&self, id: u64) -> Option<(PathBuf, watch::Receiver<u64>, Option<i32>)> {
        let g = self.lock();
        let (fid, path, written, client) = g.as_ref()?.fifo.as_ref()?;
        (*fid == id).then(|| (path.clone(), written.clone(), *client))
    }
}

/// Feeds the command's stdin FIFO. The write end is opened in blocking mode on the blocking
/// pool: that open completes exactly when the shell opens the read end, so end-of-file (closing
/// it) can never happen before the shell is there to see it.
fn spawn_stdin_writer(
    path: PathBuf,
    passed: Passed,
) -> (mpsc::UnboundedSender<Vec<u8>>, watch::Receiver<u64>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let (written_tx, written) = watch::channel(0u64);
    tokio::spawn(async move {
        let opened = tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new().write(true).open(&path)?;
            let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL)?;
            let flags =
                nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
            nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(flags))?;
            Ok::<_, std::io::Error>(file)
        })
        .await;
        // Whatever happens to the FIFO, every chunk is taken off the queue, so the client is
        // never blocked by a command that closed its stdin.
        let swallow = async |rx: &mut mpsc::UnboundedReceiver<Vec<u8>>| {
            while let Some(data) = rx.recv().await {
                passed.one(data.len());
            }
        };
        let Ok(Ok(file)) = opened else {
            return swallow(&mut rx).await;
        };
        let Ok(mut sender) = pipe::Sender::from_file(file) else {
            return swallow(&mut rx).await;
        };
        while let Some(data) = rx.recv().await {
            let n = data.len();
            if sender.write_all(&data).await.is_err() {
                // The command closed its stdin.
                passed.one(n);
                return swallow(&mut rx).await;
            }
            written_tx.send_modify(|w| *w += n as u64);
            passed.one(n);
        }
    });
    (tx, written)
}

#[cfg(test)]
mod tests {
    use super::ScriptFile;

    #[tokio::test]
    async fn the_status_reader_skips_long_and_broken_lines_and_reads_the_next_record() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("tether-status-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("status");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        super::spawn_status_reader(&fifo, tx).unwrap();
        let path = fifo.clone();
        std::thread::spawn(move || {
            let mut w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            let mut long = b"7 0".to_vec();
            long.extend(std::iter::repeat_n(b'0', 1 << 20));
            long.push(b'\n');
            w.write_all(&long).unwrap();
            w.write_all(b"8 \xff\xfe\n").unwrap();
            w.write_all(b"9 3\n").unwrap();
        });
        let rec = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await;
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(rec.unwrap(), Some((9, 3)));
    }

    fn content(path: &std::path::Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn a_script_file_reads_as_its_last_text_whatever_came_before() {
        let path = std::env::temp_dir().join(format!("tether-script-{}", std::process::id()));
        let f = ScriptFile::new(std::fs::File::create(&path).unwrap());
        f.write("echo a long first line\n").unwrap();
        assert_eq!(content(&path), "echo a long first line\n");
        // Shorter: padded with spaces, the size is kept (no ftruncate).
        f.write("echo b\n").unwrap();
        let got = content(&path);
        assert_eq!(got.len(), "echo a long first line\n".len());
        assert_eq!(got.trim_end_matches(' '), "echo b\n");
        // What a shell makes of it: the new text and nothing else.
        let out = std::process::Command::new("sh")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"b\n");
        assert!(out.status.success());
        // Much shorter: the file shrinks.
        f.write(&format!("echo {}\n", "x".repeat(10_000))).unwrap();
        f.write("echo c\n").unwrap();
        assert_eq!(content(&path), "echo c\n");
        let _ = std::fs::remove_file(&path);
    }
}
