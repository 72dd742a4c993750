//! The ordered store behind a session's kept output (SPEC §3.12: "memory, then spooled to
//! disk").
//!
//! Chunks stay in memory up to a limit (`TETHER_OUTPUT_MEMORY`, default 16 MiB per session);
//! past it they are appended to a private spool file inside the session's own 0700 directory,
//! and only their place in the file stays in memory. The order of the chunk list is the order of
//! the output, whichever tier a chunk lives in, so a chunk can go to memory again as soon as
//! older ones are delivered. The file is deleted as soon as it holds nothing live, and compacted
//! when most of it is dead (which only happens in `drop` mode, where old chunks go before the
//! newer ones behind them). A failing disk never loses output: the chunk stays in memory.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use tether_proto::Stream;

/// Default memory tier per session.
pub const DEFAULT_MEMORY: usize = 16 << 20;
/// The file is compacted once its dead part is this large and larger than its live part.
const COMPACT_AFTER: u64 = 64 << 20;

enum Body {
    /// Shared with the frame that sent it, not a copy.
    Mem(bytes::Bytes),
    Disk {
        off: u64,
        len: usize,
    },
}

struct Chunk {
    stream: Stream,
    body: Body,
}

impl Chunk {
    fn len(&self) -> usize {
        match &self.body {
            Body::Mem(d) => d.len(),
            Body::Disk { len, .. } => *len,
        }
    }
}

struct Disk {
    file: File,
    /// Where the next chunk is written.
    end: u64,
    /// Bytes of live chunks in the file.
    live: u64,
}

/// Output chunks in order, in memory and then in a spool file.
pub(crate) struct Chunks {
    list: VecDeque<Chunk>,
    bytes: usize,
    mem: usize,
    mem_limit: usize,
    path: Option<PathBuf>,
    disk: Option<Disk>,
}

impl Chunks {
    /// `path` is where the spool file goes when memory is full (`None`: memory only).
    pub fn new(path: Option<PathBuf>) -> Chunks {
        let mem_limit = tether_settings::get()
            .output_memory
            .unwrap_or_else(|| *SHARED_DEFAULT.get().unwrap_or(&DEFAULT_MEMORY));
        Chunks {
            list: VecDeque::new(),
            bytes: 0,
            mem: 0,
            mem_limit,
            path,
            disk: None,
        }
    }

    /// Bytes kept, in both tiers.
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// Bytes kept in the spool file.
    #[cfg(test)]
    fn on_disk(&self) -> u64 {
        self.disk.as_ref().map_or(0, |d| d.live)
    }

    pub fn push(&mut self, stream: Stream, data: &[u8]) {
        self.push_bytes(stream, bytes::Bytes::copy_from_slice(data));
    }

    /// As [`Chunks::push`], keeping the buffer itself while it stays in memory.
    pub fn push_bytes(&mut self, stream: Stream, data: bytes::Bytes) {
        if data.is_empty() {
            return;
        }
        let len = data.len();
        let body = if self.mem + len > self.mem_limit {
            self.write_disk(&data)
        } else {
            None
        }
        .unwrap_or_else(|| {
            self.mem += len;
            Body::Mem(data)
        });
        self.bytes += len;
        self.list.push_back(Chunk { stream, body });
    }

    /// Appends `data` to the spool file; `None` if there is no file to use.
    fn write_disk(&mut self, data: &[u8]) -> Option<Body> {
        if self.disk.is_none() {
            let path = self.path.as_ref()?;
            let file = open_private(path)
                .map_err(|e| {
                    tracing::warn!("spool {}: {e}; keeping output in memory", path.display())
                })
                .ok()?;
            self.disk = Some(Disk {
                file,
                end: 0,
                live: 0,
            });
        }
        let disk = self.disk.as_mut()?;
        if let Err(e) = disk.file.write_all_at(data, disk.end) {
            tracing::warn!("spool write: {e}; keeping output in memory");
            return None;
        }
        let off = disk.end;
        disk.end += data.len() as u64;
        disk.live += data.len() as u64;
        Some(Body::Disk {
            off,
            len: data.len(),
        })
    }

    /// Forgets the first `n` bytes (fewer if fewer are kept).
    pub fn pop_front(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.list.front_mut() else {
                break;
            };
            let cut = n.min(front.len());
            match &mut front.body {
                Body::Mem(d) => {
                    let _ = d.split_to(cut);
                    self.mem -= cut;
                }
                Body::Disk { off, len } => {
                    *off += cut as u64;
                    *len -= cut;
                    if let Some(disk) = self.disk.as_mut() {
                        disk.live -= cut as u64;
                    }
                }
            }
            if front.len() == 0 {
                self.list.pop_front();
            }
            self.bytes -= cut;
            n -= cut;
        }
        self.tidy_disk();
    }

    /// Deletes a file with nothing live in it, and compacts one that is mostly dead.
    fn tidy_disk(&mut self) {
        let Some(disk) = self.disk.as_ref() else {
            return;
        };
        if disk.live == 0 {
            self.disk = None;
            if let Some(p) = &self.path {
                let _ = std::fs::remove_file(p);
            }
            return;
        }
        let dead = disk.end - disk.live;
        if dead >= COMPACT_AFTER
            && dead > disk.live
            && let Err(e) = self.compact()
        {
            tracing::warn!("spool compaction: {e}");
        }
    }

    /// Rewrites the live chunks into a fresh file.
    fn compact(&mut self) -> std::io::Result<()> {
        let (Some(path), Some(old)) = (self.path.as_ref(), self.disk.as_ref()) else {
            return Ok(());
        };
        let tmp = path.with_extension("compact");
        let file = open_private(&tmp)?;
        let mut end = 0u64;
        let mut moved = Vec::new();
        for (i, c) in self.list.iter().enumerate() {
            if let Body::Disk { off, len } = c.body {
                let mut buf = vec![0; len];
                old.file.read_exact_at(&mut buf, off)?;
                file.write_all_at(&buf, end)?;
                moved.push((i, end));
                end += len as u64;
            }
        }
        std::fs::rename(&tmp, path).map_err(tether_transport::at(path))?;
        for (i, off) in moved {
            if let Some(Chunk {
                body: Body::Disk { off: o, .. },
                ..
            }) = self.list.get_mut(i)
            {
                *o = off;
            }
        }
        self.disk = Some(Disk {
            file,
            end,
            live: end,
        });
        Ok(())
    }

    /// Copies of up to about `max` bytes from byte `skip` on (chunks are not split except at
    /// `skip`). A chunk the disk cannot give back ends the batch early; the error is returned
    /// when nothing could be read.
    pub fn read(&self, skip: usize, max: usize) -> std::io::Result<Vec<(Stream, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut at = 0usize;
        let mut size = 0usize;
        for c in &self.list {
            let end = at + c.len();
            if end > skip && size < max {
                let from = skip.saturating_sub(at);
                let data = match &c.body {
                    Body::Mem(d) => d[from..].to_vec(),
                    Body::Disk { off, len } => {
                        let mut buf = vec![0; len - from];
                        let read = match self.disk.as_ref() {
                            Some(d) => d.file.read_exact_at(&mut buf, off + from as u64),
                            None => Err(std::io::Error::other("spool file missing")),
                        };
                        if let Err(e) = read {
                            if out.is_empty() {
                                return Err(e);
                            }
                            break;
                        }
                        buf
                    }
                };
                size += data.len();
                out.push((c.stream, data));
            }
            at = end;
            if size >= max {
                break;
            }
        }
        Ok(out)
    }

    /// Forgets everything and deletes the spool file.
    pub fn clear(&mut self) {
        self.list.clear();
        self.bytes = 0;
        self.mem = 0;
        if self.disk.take().is_some()
            && let Some(p) = &self.path
        {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for Chunks {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The memory tier's size for the hosts of a system daemon, set once by the host: there the
/// host's memory is root's, so kept output goes to the user's own spool file early.
static SHARED_DEFAULT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Kept output a system daemon's host holds in memory before spooling (1 MiB).
pub(crate) const SHARED_MEMORY: usize = 1 << 20;

/// Makes [`SHARED_MEMORY`] the default memory tier of this process (a system daemon's host).
pub(crate) fn shared_default() {
    let _ = SHARED_DEFAULT.set(SHARED_MEMORY);
}

/// Opens (creates) a spool file, private to the session's user: in a system daemon's tree it
/// is given to the user whose shell runs in the session, so the disk it takes is charged to
/// them (quotas), not to root. Links are never followed.
fn open_private(path: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(tether_transport::at(path))?;
    crate::runas::give_fd(&f).map_err(tether_transport::at(path))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(c: &Chunks) -> Vec<u8> {
        c.read(0, usize::MAX)
            .unwrap()
            .into_iter()
            .flat_map(|(_, d)| d)
            .collect()
    }

    fn spool(limit: usize) -> (tempdir::Dir, Chunks) {
        let dir = tempdir::Dir::new();
        let mut c = Chunks::new(Some(dir.0.join("spool")));
        c.mem_limit = limit;
        (dir, c)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                let p = std::env::temp_dir().join(format!(
                    "tether-spool-{}-{:?}",
                    std::process::id(),
                    std::thread::current().id()
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn spills_past_the_memory_limit_and_keeps_order() {
        let (dir, mut c) = spool(10);
        let mut want = Vec::new();
        for i in 0..50u8 {
            let d = vec![i; 3 + (i as usize % 5)];
            want.extend_from_slice(&d);
            c.push(
                if i % 2 == 0 {
                    Stream::Stdout
                } else {
                    Stream::Stderr
                },
                &d,
            );
        }
        assert!(c.on_disk() > 0, "nothing spilled");
        assert!(dir.0.join("spool").exists());
        assert_eq!(all(&c), want);
        c.pop_front(7);
        assert_eq!(all(&c), want[7..]);
        // Reading from the middle, in small batches, gives the same bytes.
        let mut got = Vec::new();
        while got.len() < want.len() - 7 {
            let batch = c.read(got.len(), 4).unwrap();
            assert!(!batch.is_empty());
            got.extend(batch.into_iter().flat_map(|(_, d)| d));
        }
        assert_eq!(got, want[7..]);
        c.pop_front(usize::MAX);
        assert_eq!(c.len(), 0);
        assert!(
            !dir.0.join("spool").exists(),
            "empty spool file not deleted"
        );
    }

    #[test]
    fn compacts_a_mostly_dead_file() {
        let (_dir, mut c) = spool(0);
        let mut want = std::collections::VecDeque::new();
        for i in 0..100u8 {
            let chunk = vec![i; 1 << 20];
            c.push(Stream::Stdout, &chunk);
            want.extend(chunk);
            if c.len() > 4 << 20 {
                c.pop_front(1 << 20);
                want.drain(..1 << 20);
            }
        }
        let d = c.disk.as_ref().unwrap();
        assert!(d.end < 2 * COMPACT_AFTER, "file grew to {}", d.end);
        assert_eq!(all(&c), want.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn without_a_path_everything_stays_in_memory() {
        let mut c = Chunks::new(None);
        c.mem_limit = 1;
        c.push(Stream::Stdout, b"hello");
        assert_eq!(all(&c), b"hello");
        assert_eq!(c.on_disk(), 0);
    }
}
