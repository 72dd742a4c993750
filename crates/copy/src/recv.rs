//! The receiving side: reads the stream and writes what it names under its destination, each
//! file under a temporary name first.

use crate::{CopyError, Frame, checked};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What a copy wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Received {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    pub bytes: u64,
    /// Sources the sender could not read, and entries that could not be written.
    pub problems: Vec<String>,
}

/// Where the stream goes.
pub struct Receiver {
    /// The destination as given: an existing directory receives the sources by their names;
    /// otherwise (one source) the source is written under this name.
    pub dest: PathBuf,
    /// How many sources the sender was given (more than one needs a directory).
    pub sources: usize,
    /// Keep modes (with set-id bits) and modification times (`-p`); otherwise files get the
    /// sender's permission bits less this side's umask, as `cp` does.
    pub preserve: bool,
}

/// Told of the total (once, if the sender says it) and of each chunk written.
pub trait Progress {
    fn total(&self, _bytes: u64) {}
    fn wrote(&self, _bytes: u64) {}
}

/// No progress to show.
pub struct Quiet;
impl Progress for Quiet {}

impl Receiver {
    /// Reads the stream to its end. An error in the stream (cut short, not a stream, an unsafe
    /// path) ends it: what was whole is in place, the file being written is removed.
    pub fn run(&self, input: &mut impl Read) -> Result<Received, CopyError> {
        self.run_showing(input, &Quiet)
    }

    /// As [`Receiver::run`], telling `progress` as it goes.
    pub fn run_showing(
        &self,
        input: &mut impl Read,
        progress: &dyn Progress,
    ) -> Result<Received, CopyError> {
        let into_dir = self.dest.is_dir();
        if !into_dir && self.sources != 1 {
            return Err(CopyError::Usage(format!(
                "{}: not a directory (needed for {} sources)",
                self.dest.display(),
                self.sources
            )));
        }
        let umask = current_umask();
        let mut got = Received::default();
        // Directories get their modes and times once everything inside them is written.
        let mut dirs: Vec<(PathBuf, u32, i64)> = Vec::new();
        loop {
            match read_frame(input)? {
                Frame::End => break,
                Frame::Problem(p) => got.problems.push(p),
                Frame::Total(n) => progress.total(n),
                Frame::Data(_) | Frame::Hole(_) => {
                    return Err(CopyError::Stream("file data without a file".into()));
                }
                Frame::Dir { path, mode, mtime } => {
                    let to = self.target(&path, into_dir)?;
                    match std::fs::create_dir(&to) {
                        Ok(()) => {}
                        Err(_) if to.is_dir() => {}
                        Err(e) => {
                            return Err(CopyError::io(&to, e));
                        }
                    }
                    got.dirs += 1;
                    dirs.push((to, mode, mtime));
                }
                Frame::File {
                    path,
                    len,
                    mode,
                    mtime,
                } => {
                    let to = self.target(&path, into_dir)?;
                    let mode = if self.preserve {
                        mode & 0o7777
                    } else {
                        mode & 0o777 & !umask
                    };
                    write_file(
                        &to,
                        len,
                        input,
                        (mode, self.preserve.then_some(mtime)),
                        progress,
                    )?;
                    got.files += 1;
                    got.bytes += len;
                }
                Frame::Link { path, target } => {
                    let to = self.target(&path, into_dir)?;
                    let tmp = temp_beside(&to);
                    std::os::unix::fs::symlink(&target, &tmp).map_err(|e| CopyError::io(&to, e))?;
                    if let Err(e) = std::fs::rename(&tmp, &to) {
                        let _ = std::fs::remove_file(&tmp);
                        return Err(CopyError::io(&to, e));
                    }
                    got.links += 1;
                }
            }
        }
        for (dir, mode, mtime) in dirs.into_iter().rev() {
            let mode = if self.preserve {
                mode & 0o7777
            } else {
                mode & 0o777 & !umask
            };
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode));
            if self.preserve {
                set_mtime(&dir, mtime);
            }
        }
        Ok(got)
    }

    /// Where an entry of the stream goes.
    fn target(&self, path: &str, into_dir: bool) -> Result<PathBuf, CopyError> {
        let rel = checked(path)?;
        if into_dir {
            return Ok(self.dest.join(rel));
        }
        // The one source is written under the destination's name.
        let mut parts = rel.components();
        parts.next();
        let rest = parts.as_path();
        Ok(match rest.as_os_str().is_empty() {
            true => self.dest.clone(),
            false => self.dest.join(rest),
        })
    }
}

/// Reads one frame, bounded by the framing's own limit.
fn read_frame(input: &mut impl Read) -> Result<Frame, CopyError> {
    let cut = |e: std::io::Error| CopyError::Stream(format!("the copy stream ended early: {e}"));
    let mut header = [0u8; tether_proto::FRAME_HEADER_LEN];
    input.read_exact(&mut header).map_err(cut)?;
    let len = tether_proto::frame_len(header).map_err(|e| CopyError::Stream(e.to_string()))?;
    let mut payload = vec![0u8; len];
    input.read_exact(&mut payload).map_err(cut)?;
    tether_proto::decode(&payload).map_err(|e| CopyError::Stream(format!("not a copy stream: {e}")))
}

/// A name beside `to` that nothing else uses: `.NAME.tether-PID-N`.
fn temp_beside(to: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = N.fetch_add(1, Ordering::Relaxed);
    to.with_file_name(format!(".{name}.tether-{}-{n}", std::process::id()))
}

/// Writes `len` bytes of `Data` frames to a temporary file beside `to`, then renames it into
/// place. The temporary file is removed if anything fails.
fn write_file(
    to: &Path,
    len: u64,
    input: &mut impl Read,
    (mode, mtime): (u32, Option<i64>),
    progress: &dyn Progress,
) -> Result<(), CopyError> {
    if to.is_dir() {
        return Err(CopyError::io(
            to,
            std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a directory"),
        ));
    }
    let tmp = temp_beside(to);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| CopyError::io(to, e))?;
    let result = (|| {
        let mut left = len;
        while left > 0 {
            let d = match read_frame(input)? {
                Frame::Data(d) => d,
                Frame::Hole(n) if n <= left => {
                    use std::io::Seek;
                    let skip = i64::try_from(n).map_err(|_| {
                        CopyError::Stream(format!("{}: a hole too large", to.display()))
                    })?;
                    f.seek(std::io::SeekFrom::Current(skip))
                        .map_err(|e| CopyError::io(to, e))?;
                    left -= n;
                    continue;
                }
                _ => {
                    return Err(CopyError::Stream(format!(
                        "{}: the stream ended {left} bytes before the file's end",
                        to.display()
                    )));
                }
            };
            if d.len() as u64 > left {
                return Err(CopyError::Stream(format!(
                    "{}: more data than the file's length",
                    to.display()
                )));
            }
            f.write_all(&d).map_err(|e| CopyError::io(to, e))?;
            left -= d.len() as u64;
            progress.wrote(d.len() as u64);
        }
        f.flush().map_err(|e| CopyError::io(to, e))?;
        // A hole at the end is only a length.
        f.set_len(len).map_err(|e| CopyError::io(to, e))?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| CopyError::io(to, e))?;
        if let Some(t) = mtime {
            set_mtime(&tmp, t);
        }
        std::fs::rename(&tmp, to).map_err(|e| CopyError::io(to, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Sets a path's modification (and access) time to `secs`, not following a link.
fn set_mtime(path: &Path, secs: i64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: a valid C string and two timespecs, read only.
    unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        );
    }
}

/// This process's umask (read by setting it and back: there is no other way in POSIX).
fn current_umask() -> u32 {
    // SAFETY: umask only swaps a process attribute; it is put back at once.
    unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m as u32
    }
}
