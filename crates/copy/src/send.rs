//! The sending side: walks the sources and writes the stream.

use crate::partial::{self, Partial};
use crate::{CHUNK, CopyError, Frame, Received, Reply, read_frame, write_frame};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// How to send.
#[derive(Clone, Copy)]
pub struct SendOptions<'a> {
    /// Directories and what they hold (`-r`); without it a directory is a problem.
    pub recursive: bool,
    /// Where the sender runs ("session web", "this computer"), for the problems it reports.
    pub label: &'a str,
    /// Count the bytes first and say so ([`Frame::Total`]): the receiver can show a bar.
    pub total: bool,
    /// Told of each chunk of file data sent.
    pub progress: Option<&'a dyn Fn(u64)>,
}

/// Bytes of file data under `sources` (what a copy of them sends), not following links.
pub fn total_bytes(sources: &[&Path], recursive: bool) -> u64 {
    fn walk(p: &Path, recursive: bool) -> u64 {
        let Ok(m) = std::fs::symlink_metadata(p) else {
            return 0;
        };
        if m.is_file() {
            return m.len();
        }
        if !(m.is_dir() && recursive) {
            return 0;
        }
        std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| walk(&e.path(), recursive)).sum())
            .unwrap_or(0)
    }
    sources.iter().map(|s| walk(s, recursive)).sum()
}

/// The next run of data at or after `pos` in a file with holes: where it starts and ends
/// (`lseek` with SEEK_DATA and SEEK_HOLE). `None` where the system cannot say (the file is
/// then read whole, its holes as zeros).
fn data_run(f: &std::fs::File, pos: u64, len: u64) -> Option<(u64, u64)> {
    #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
    {
        use std::os::fd::AsRawFd;
        let fd = f.as_raw_fd();
        let at = libc::off_t::try_from(pos).ok()?;
        // SAFETY: lseek on an open descriptor we own; no memory is touched.
        let data = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
        if data < 0 {
            // ENXIO: nothing but a hole from here to the end.
            return (std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO))
                .then_some((len, len));
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let (data, hole) = (u64::try_from(data).ok()?, u64::try_from(hole).ok()?);
        Some((data.min(len), hole.clamp(data, len)))
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "freebsd")))]
    {
        let _ = (f, pos, len);
        None
    }
}

/// What a copy sent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sent {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    /// Bytes of the files (holes count).
    pub bytes: u64,
    /// Of those, bytes the receiver had from an earlier copy, not sent again.
    pub resumed: u64,
    /// Sources (or entries under them) that could not be read.
    pub problems: usize,
    /// What the receiver says it wrote, when it was asked.
    pub received: Option<Received>,
}

/// Most bytes of names in [`Frame::Names`] (well under a frame's limit): sources past it are
/// copied whole, never resumed.
const NAMES_MAX: usize = 4 << 20;

/// Writes `sources` to `out` as a stream ending with [`Frame::End`]. A source that cannot be
/// read becomes a [`Frame::Problem`] (the receiver reports it), so one bad path does not stop
/// the others. An error writing `out` ends it. With `replies` (the receiver's answers), it
/// first asks which partial files the receiver has and sends only what they lack, and at the
/// end reads what the receiver wrote.
pub fn send(
    sources: &[&Path],
    opts: SendOptions,
    mut replies: Option<&mut dyn Read>,
    out: &mut impl Write,
) -> Result<Sent, CopyError> {
    let mut s = Sender {
        out,
        sent: Sent::default(),
        label: opts.label,
        progress: opts.progress,
        offers: HashMap::new(),
        buf: Vec::new(),
    };
    let mut named = Vec::new();
    for src in sources {
        let name = match src.file_name().and_then(|n| n.to_str()) {
            Some(n) => Some(n.to_string()),
            None => std::fs::canonicalize(src)
                .ok()
                .and_then(|p| p.file_name()?.to_str().map(str::to_string)),
        };
        named.push((*src, name));
    }
    if let Some(r) = replies.as_deref_mut() {
        let mut size = 0;
        let names = named
            .iter()
            .filter_map(|(_, n)| n.clone())
            .take_while(|n| {
                size += n.len() + 8;
                size < NAMES_MAX
            })
            .collect();
        s.frame(&Frame::Names {
            names,
            recursive: opts.recursive,
        })?;
        s.flush()?;
        // The receiver looks while we count.
        let total = opts.total.then(|| total_bytes(sources, opts.recursive));
        let Reply::Partials(offers) = read_frame(r, closed)? else {
            return Err(CopyError::Stream(
                "the receiver answered out of turn".into(),
            ));
        };
        s.offers = offers.into_iter().map(|p| (p.path.clone(), p)).collect();
        if let Some(t) = total {
            s.frame(&Frame::Total(t))?;
        }
    } else if opts.total {
        s.frame(&Frame::Total(total_bytes(sources, opts.recursive)))?;
    }
    for (src, name) in named {
        match name {
            Some(name) => s.entry(src, &name, false, opts)?,
            None => s.problem(format!(
                "{}: cannot copy this path as a whole",
                src.display()
            ))?,
        }
    }
    s.frame(&Frame::End)?;
    s.flush()?;
    if let Some(r) = replies {
        let Reply::Done(got) = read_frame(r, closed)? else {
            return Err(CopyError::Stream(
                "the receiver answered out of turn".into(),
            ));
        };
        s.sent.received = Some(got);
    }
    Ok(s.sent)
}

/// The receiver's answers ended.
fn closed(e: String) -> CopyError {
    CopyError::Closed(format!("no answer from the receiving side: {e}"))
}

struct Sender<'a, W: Write> {
    out: &'a mut W,
    sent: Sent,
    label: &'a str,
    progress: Option<&'a dyn Fn(u64)>,
    /// The receiver's partial files, by stream path.
    offers: HashMap<String, Partial>,
    /// Where file data is read: one buffer for the whole copy, not one per file.
    buf: Vec<u8>,
}

impl<W: Write> Sender<'_, W> {
    fn frame(&mut self, f: &Frame) -> Result<(), CopyError> {
        write_frame(self.out, f)
    }

    fn flush(&mut self) -> Result<(), CopyError> {
        self.out
            .flush()
            .map_err(|e| CopyError::Closed(format!("cannot send: {}", crate::plain(&e))))
    }

    fn problem(&mut self, what: String) -> Result<(), CopyError> {
        self.sent.problems += 1;
        let what = format!("{}: {what}", self.label);
        self.frame(&Frame::Problem(what))
    }

    /// Sends one source or entry under one. `announced`: its `Dir` frame went already (with
    /// its siblings', see below).
    fn entry(
        &mut self,
        path: &Path,
        name: &str,
        announced: bool,
        opts: SendOptions,
    ) -> Result<(), CopyError> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => return self.problem(format!("{}: {}", path.display(), crate::plain(&e))),
        };
        let (mode, mtime) = (meta.mode() & 0o7777, meta.mtime());
        let kind = meta.file_type();
        if kind.is_symlink() {
            let target = match std::fs::read_link(path) {
                Ok(t) => t,
                Err(e) => return self.problem(format!("{}: {}", path.display(), crate::plain(&e))),
            };
            let Some(target) = target.to_str() else {
                return self.problem(format!(
                    "{}: a link target that is not UTF-8",
                    path.display()
                ));
            };
            self.sent.links += 1;
            return self.frame(&Frame::Link {
                path: name.to_string(),
                target: target.to_string(),
            });
        }
        if kind.is_dir() {
            if !opts.recursive {
                return self.problem(format!("{}: is a directory (use -r)", path.display()));
            }
            // Names, and which are directories (from the listing itself: no `stat` per file).
            let mut names: Vec<(String, bool)> = match std::fs::read_dir(path) {
                Ok(rd) => rd
                    .flatten()
                    .filter_map(|e| {
                        let dir = e.file_type().is_ok_and(|t| t.is_dir());
                        Some((e.file_name().to_str()?.to_string(), dir))
                    })
                    .collect(),
                Err(e) => return self.problem(format!("{}: {}", path.display(), crate::plain(&e))),
            };
            names.sort();
            if !announced {
                self.sent.dirs += 1;
                self.frame(&Frame::Dir {
                    path: name.to_string(),
                    mode,
                    mtime,
                })?;
            }
            // Its subdirectories are announced before anything in it or in them: the receiver
            // makes sibling directories one after the other, before their files. On ext4 that
            // order is what keeps new files from scanning past every inode that was freed in
            // the last minute (ext4's `recently_deleted`): a tree copied again just after it
            // was removed took 2.4x as long when each directory was made after the files of
            // the one before (docs/PROFILES.md §7).
            for (n, dir) in names.iter_mut() {
                if !*dir {
                    continue;
                }
                match std::fs::symlink_metadata(path.join(&*n)) {
                    Ok(m) if m.is_dir() => {
                        self.sent.dirs += 1;
                        self.frame(&Frame::Dir {
                            path: format!("{name}/{n}"),
                            mode: m.mode() & 0o7777,
                            mtime: m.mtime(),
                        })?;
                    }
                    // Gone or changed since the listing: sent as whatever it is now.
                    _ => *dir = false,
                }
            }
            for (n, dir) in names {
                self.entry(&path.join(&n), &format!("{name}/{n}"), dir, opts)?;
            }
            return Ok(());
        }
        if !kind.is_file() {
            return self.problem(format!("{}: not a file, directory or link", path.display()));
        }
        let mut f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => return self.problem(format!("{}: {}", path.display(), crate::plain(&e))),
        };
        let len = meta.len();
        // The receiver's partial file is worth finishing only if it holds what this file
        // starts with: its hash says so.
        let mut hasher = None;
        let mut from = 0;
        // Whether the file was read (hashed) since it was opened, so is not at its start.
        let offered = self.offers.contains_key(name);
        if let Some(offer) = self.offers.remove(name)
            && offer.have > 0
            && offer.have <= len
            && let Some(h) = partial::hash_prefix(&mut f, offer.have)
            && <[u8; 32]>::from(h.clone().finalize()) == offer.sha256
        {
            hasher = Some(h);
            from = offer.have;
        }
        // (A file just opened is at its start already.)
        if (offered || from > 0) && f.seek(SeekFrom::Start(from)).is_err() {
            return self.problem(format!("{}: cannot read it", path.display()));
        }
        self.sent.files += 1;
        self.sent.bytes += len;
        self.sent.resumed += from;
        self.frame(&Frame::File {
            path: name.to_string(),
            len,
            mode,
            mtime,
            from,
        })?;
        if let Some(p) = self.progress {
            p(from);
        }
        let shrank = self.data(&mut f, &meta, from, hasher.as_mut())?;
        if let Some(h) = hasher {
            self.frame(&Frame::Sum(h.finalize().into()))?;
        }
        if shrank {
            return self.problem(format!("{}: changed while it was copied", path.display()));
        }
        Ok(())
    }

    /// Sends the file's bytes from `pos` on, hashing them into `hasher` (a resumed file).
    /// Exactly the announced length follows, whatever happens to the file meanwhile: a file
    /// that shrank is padded (and `true` says so), one that grew is cut (its size at the start
    /// counts). A file with fewer blocks than its size has holes: they travel as `Hole`.
    fn data(
        &mut self,
        f: &mut std::fs::File,
        meta: &std::fs::Metadata,
        pos: u64,
        hasher: Option<&mut Sha256>,
    ) -> Result<bool, CopyError> {
        let len = meta.len();
        let sparse = meta.blocks() * 512 < len;
        let mut buf = std::mem::take(&mut self.buf);
        // A small file needs no more than its length (zeroed once, then reused).
        let want_buf = usize::try_from(len - pos).unwrap_or(CHUNK).min(CHUNK);
        if buf.len() < want_buf {
            buf.resize(want_buf, 0);
        }
        let shrank = self.data_into(f, &mut buf, len, sparse, pos, hasher);
        self.buf = buf;
        shrank
    }

    /// [`Self::data`] with its buffer.
    fn data_into(
        &mut self,
        f: &mut std::fs::File,
        buf: &mut [u8],
        len: u64,
        sparse: bool,
        mut pos: u64,
        mut hasher: Option<&mut Sha256>,
    ) -> Result<bool, CopyError> {
        while pos < len {
            let (data, end) = match sparse.then(|| data_run(f, pos, len)).flatten() {
                Some(run) => run,
                None => (pos, len),
            };
            if data > pos {
                self.frame(&Frame::Hole(data - pos))?;
                if let Some(h) = hasher.as_deref_mut() {
                    partial::hash_zeros(h, data - pos);
                }
                pos = data;
                continue;
            }
            if sparse && f.seek(SeekFrom::Start(pos)).is_err() {
                // Unreadable from here: zeros to the announced length.
                self.pad(pos, len, hasher)?;
                return Ok(true);
            }
            let mut left = end - pos;
            while left > 0 {
                let want = usize::try_from(left).unwrap_or(CHUNK).min(buf.len());
                let n = match f.read(&mut buf[..want]) {
                    Ok(0) | Err(_) => {
                        // Shrank meanwhile: zeros to the announced length.
                        self.pad(pos, len, hasher)?;
                        return Ok(true);
                    }
                    Ok(n) => n,
                };
                crate::write_data(self.out, &buf[..n])?;
                if let Some(h) = hasher.as_deref_mut() {
                    h.update(&buf[..n]);
                }
                left -= n as u64;
                pos += n as u64;
                if let Some(p) = self.progress {
                    p(n as u64);
                }
            }
        }
        Ok(false)
    }

    /// Zeros from `pos` to `len`, as a hole.
    fn pad(&mut self, pos: u64, len: u64, hasher: Option<&mut Sha256>) -> Result<(), CopyError> {
        self.frame(&Frame::Hole(len - pos))?;
        if let Some(h) = hasher {
            partial::hash_zeros(h, len - pos);
        }
        Ok(())
    }
}
