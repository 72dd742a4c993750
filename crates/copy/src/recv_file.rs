//! One file of the stream on the receiving side: written under its partial name (or a unique
//! temporary one), checked, renamed into place.

use crate::partial::{self, Found, Opened};
use crate::recv::Progress;
use crate::{CopyError, Frame, plain, read_frame};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, Write};
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A file announced by the stream.
pub(crate) struct Incoming<'a> {
    /// Where it goes.
    pub to: &'a Path,
    pub len: u64,
    /// Where its data starts (the length of the partial file the sender matched).
    pub from: u64,
    pub mode: u32,
    /// Its modification time, to set (`-p`).
    pub mtime: Option<i64>,
    /// The partial file the receiver offered for it, if any.
    pub found: Option<Found>,
    /// Read its data and write nothing (it is under a directory that could not be made).
    pub discard: bool,
    /// Its directory was made by this copy, so nothing but this stream put anything there: the
    /// check that its name is not a directory already is left to the rename (`EISDIR`), which
    /// saves a lookup that fails per file (on tmpfs, a tenth of the receiver's time).
    pub fresh_dir: bool,
    /// The directory `to` is in, open (see [`partial::at`]); `None`: reached by its path.
    pub dir: Option<BorrowedFd<'a>>,
}

/// Where the data goes.
struct Sink {
    file: std::fs::File,
    /// Its name until the rename.
    tmp: PathBuf,
    /// A partial name, kept when the stream is cut (the next run resumes from it).
    resumable: bool,
    /// For a resumed file: the hash of everything so far, checked against the sender's.
    hasher: Option<Sha256>,
    /// The file's length as it stands, and where the next data lands: the length is set at
    /// the end only when it is not already right (a hole at the end), which saves a
    /// journalled `ftruncate` per file in a tree of small ones.
    length: u64,
    pos: u64,
    /// Its permissions as they stand, when known: changed at the end only if they differ.
    mode: Option<u32>,
}

/// Reads the file's data (and, when resumed, its `Sum`) and renames it into place. `Err` is an
/// error of the stream, which ends the copy; `Ok(Err(line))` is this file's problem (it could
/// not be written, or did not check out): its data was read, nothing of it is in place, and
/// the copy goes on.
pub(crate) fn receive(
    input: &mut impl Read,
    f: Incoming,
    progress: &dyn Progress,
) -> Result<Result<(), String>, CopyError> {
    if f.from > f.len {
        return Err(CopyError::Stream(format!(
            "{}: data from byte {} of a file of {}",
            f.to.display(),
            f.from,
            f.len
        )));
    }
    let opened = match f.discard {
        true => Ok(None),
        false => open(&f).map(Some),
    };
    let mut sink = match opened {
        Ok(s) => s,
        Err(problem) => {
            drain(input, f.to, f.len - f.from, f.from > 0)?;
            return Ok(Err(problem));
        }
    };
    if sink.is_some() {
        progress.wrote(f.from);
    }
    match data(input, &f, sink.as_mut(), progress) {
        Ok(Ok(())) => {}
        Ok(Err(problem)) => {
            if let Some(s) = sink {
                let _ = std::fs::remove_file(&s.tmp);
            }
            return Ok(Err(problem));
        }
        Err(e) => {
            // Cut short: a partial file keeps what came, for the next run; anything else (a
            // stream that makes no sense) leaves nothing.
            if let Some(s) = sink {
                let empty = s.file.metadata().is_ok_and(|m| m.len() == 0);
                if !(s.resumable && matches!(e, CopyError::Closed(_)) && !empty) {
                    let _ = std::fs::remove_file(&s.tmp);
                }
            }
            return Err(e);
        }
    }
    let Some(s) = sink else { return Ok(Ok(())) };
    let done = finish(&s, &f);
    if done.is_err() {
        let _ = std::fs::remove_file(&s.tmp);
    }
    Ok(done)
}

/// Where the file is written: its partial file (resumed at `from`, or started afresh), or a
/// unique temporary name when the partial one cannot be used. `Err` is the problem to report.
fn open(f: &Incoming) -> Result<Sink, String> {
    let problem = |e: std::io::Error| format!("{}: {}", f.to.display(), plain(&e));
    if !f.fresh_dir && is_dir(f.dir, f.to) {
        return Err(format!("{}: is a directory", f.to.display()));
    }
    let name = partial::partial_name(f.to);
    if f.from > 0 {
        // The sender matched what we offered: that very file, still as long.
        let changed = || {
            format!(
                "{}: the partial file changed before the copy could resume it; copy again",
                f.to.display()
            )
        };
        let (Some(found), Some(name)) = (&f.found, name) else {
            return Err(changed());
        };
        if found.have != f.from || found.file != name {
            return Err(changed());
        }
        let Ok(Opened::Locked(mut file, meta)) = partial::open_locked(f.dir, &name, false, 0o600)
        else {
            return Err(changed());
        };
        if meta.len() != f.from || file.seek(std::io::SeekFrom::Start(f.from)).is_err() {
            return Err(changed());
        }
        return Ok(Sink {
            file,
            tmp: name,
            resumable: true,
            hasher: Some(found.hasher.clone()),
            length: f.from,
            pos: f.from,
            mode: Some(meta.permissions().mode() & 0o7777),
        });
    }
    // Made with the file's own permissions (less the special bits, and as the umask allows),
    // so that usually nothing is left to change at the end; but always readable and writable
    // by its owner, so that a run after an interruption can hash and finish it.
    let create_mode = (f.mode & 0o777) | 0o600;
    // An error opening the partial name (something there that is not ours to write: a
    // directory, or another user's file in a sticky directory, which `fs.protected_regular`
    // refuses) leaves the unique name below; a directory we cannot write fails there too.
    if let Some(name) = name
        && let Ok(Opened::Locked(file, meta)) =
            partial::open_locked(f.dir, &name, true, create_mode)
    {
        // What an earlier copy left is not wanted (the sender did not match it).
        if meta.len() > 0 {
            file.set_len(0).map_err(problem)?;
        }
        return Ok(Sink {
            file,
            tmp: name,
            resumable: true,
            hasher: None,
            length: 0,
            pos: 0,
            mode: Some(meta.permissions().mode() & 0o7777),
        });
    }
    let tmp = temp_beside(f.to);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(problem)?;
    Ok(Sink {
        file,
        tmp,
        resumable: false,
        hasher: None,
        length: 0,
        pos: 0,
        mode: None,
    })
}

/// A name beside `to` that nothing else uses: `.NAME.tether-PID-N`.
pub(crate) fn temp_beside(to: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = N.fetch_add(1, Ordering::Relaxed);
    to.with_file_name(format!(".{name}.tether-{}-{n}", std::process::id()))
}

/// Reads the file's data frames into `sink` (or nowhere), then its `Sum` when resumed.
fn data(
    input: &mut impl Read,
    f: &Incoming,
    mut sink: Option<&mut Sink>,
    progress: &dyn Progress,
) -> Result<Result<(), String>, CopyError> {
    let mut left = f.len - f.from;
    // The first error writing: the rest of the data is read and dropped.
    let mut failed: Option<String> = None;
    while left > 0 {
        match read_frame(input, cut)? {
            Frame::Data(d) => {
                if d.len() as u64 > left {
                    return Err(CopyError::Stream(format!(
                        "{}: more data than the file's length",
                        f.to.display()
                    )));
                }
                left -= d.len() as u64;
                let Some(s) = sink.as_deref_mut().filter(|_| failed.is_none()) else {
                    continue;
                };
                if let Err(e) = s.file.write_all(&d) {
                    failed = Some(format!("{}: {}", f.to.display(), plain(&e)));
                    continue;
                }
                s.pos += d.len() as u64;
                s.length = s.length.max(s.pos);
                if let Some(h) = &mut s.hasher {
                    h.update(&d);
                }
                progress.wrote(d.len() as u64);
            }
            Frame::Hole(n) if n <= left => {
                left -= n;
                let Some(s) = sink.as_deref_mut().filter(|_| failed.is_none()) else {
                    continue;
                };
                let skip = i64::try_from(n).map_err(|_| {
                    CopyError::Stream(format!("{}: a hole too large", f.to.display()))
                })?;
                if let Err(e) = s.file.seek(std::io::SeekFrom::Current(skip)) {
                    failed = Some(format!("{}: {}", f.to.display(), plain(&e)));
                    continue;
                }
                s.pos += n;
                if let Some(h) = &mut s.hasher {
                    partial::hash_zeros(h, n);
                }
            }
            _ => {
                return Err(CopyError::Stream(format!(
                    "{}: the stream ended {left} bytes before the file's end",
                    f.to.display()
                )));
            }
        }
    }
    if f.from > 0 {
        let Frame::Sum(sum) = read_frame(input, cut)? else {
            return Err(CopyError::Stream(format!(
                "{}: a resumed file without its checksum",
                f.to.display()
            )));
        };
        if let Some(h) = sink.and_then(|s| s.hasher.take())
            && failed.is_none()
            && <[u8; 32]>::from(h.finalize()) != sum
        {
            failed = Some(format!(
                "{}: the resumed file does not match the source (its partial file was \
                 damaged); it was removed: copy again",
                f.to.display()
            ));
        }
    }
    Ok(match failed {
        Some(p) => Err(p),
        None => Ok(()),
    })
}

/// Reads and drops a file's data (and `Sum`) that cannot be written.
fn drain(input: &mut impl Read, to: &Path, mut left: u64, sum: bool) -> Result<(), CopyError> {
    while left > 0 {
        match read_frame(input, cut)? {
            Frame::Data(d) if d.len() as u64 <= left => left -= d.len() as u64,
            Frame::Hole(n) if n <= left => left -= n,
            _ => {
                return Err(CopyError::Stream(format!(
                    "{}: the stream ended {left} bytes before the file's end",
                    to.display()
                )));
            }
        }
    }
    if sum && !matches!(read_frame(input, cut)?, Frame::Sum(_)) {
        return Err(CopyError::Stream(format!(
            "{}: a resumed file without its checksum",
            to.display()
        )));
    }
    Ok(())
}

/// The stream ended (or could not be read) in the middle.
pub(crate) fn cut(e: String) -> CopyError {
    CopyError::Closed(format!("the copy stream ended early: {e}"))
}

/// The whole file is in the temporary: its length, mode and time, then the rename.
fn finish(s: &Sink, f: &Incoming) -> Result<(), String> {
    let problem = |e: std::io::Error| format!("{}: {}", f.to.display(), plain(&e));
    let file = &s.file;
    // A hole at the end is only a length.
    if s.length != f.len {
        file.set_len(f.len).map_err(problem)?;
    }
    if s.mode != Some(f.mode) {
        file.set_permissions(std::fs::Permissions::from_mode(f.mode))
            .map_err(problem)?;
    }
    if let Some(t) = f.mtime {
        crate::recv::set_mtime(&s.tmp, t);
    }
    // The temporary is beside `to`, so in the same directory.
    let ((d, from), (_, to)) = (partial::at(f.dir, &s.tmp), partial::at(f.dir, f.to));
    nix::fcntl::renameat(d, from, d, to).map_err(|e| match e {
        // Said as the check before writing says it (a made directory skips that check).
        nix::errno::Errno::EISDIR => format!("{}: is a directory", f.to.display()),
        e => problem(e.into()),
    })
}

/// Whether `p` (in `dir`, [`partial::at`]) is a directory, following a link as `Path::is_dir`.
fn is_dir(dir: Option<BorrowedFd<'_>>, p: &Path) -> bool {
    let (d, name) = partial::at(dir, p);
    nix::sys::stat::fstatat(d, name, nix::fcntl::AtFlags::empty())
        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}
