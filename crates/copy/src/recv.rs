//! The receiving side: reads the stream and writes what it names under its destination, each
//! file under a temporary name first ([`crate::recv_file`]). A destination that cannot be
//! written (a directory not writable, a full disk) is this entry's problem, reported with its
//! path; the copy goes on with the next.

use crate::partial::{self, Found};
use crate::recv_file::{self, Incoming, cut, temp_beside};
use crate::{CopyError, Frame, Reply, checked, read_frame, write_frame};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What a copy wrote.
#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq, Eq)]
pub struct Received {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    /// Bytes of the files in place (holes count).
    pub bytes: u64,
    /// Of those, bytes that were already there in partial files of an earlier copy, and were
    /// not sent again.
    pub resumed: u64,
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
    /// Where the receiver runs ("session web", "this computer"), for the problems it reports.
    pub label: String,
}

/// Told of the total (once, if the sender says it) and of each chunk written (a resumed file's
/// partial data counts as written when the file starts).
pub trait Progress {
    fn total(&self, _bytes: u64) {}
    fn wrote(&self, _bytes: u64) {}
}

/// No progress to show.
pub struct Quiet;
impl Progress for Quiet {}

impl Receiver {
    /// Reads the stream to its end, answering on `replies` (when the sender listens). An error
    /// in the stream (cut short, not a stream, an unsafe path) ends it: what was whole is in
    /// place, and the file being written is removed, or kept as a partial file for the next
    /// run when the stream was cut.
    pub fn run(
        &self,
        input: &mut impl Read,
        replies: Option<&mut dyn Write>,
    ) -> Result<Received, CopyError> {
        self.run_showing(input, replies, &Quiet)
    }

    /// As [`Receiver::run`], telling `progress` as it goes.
    pub fn run_showing(
        &self,
        input: &mut impl Read,
        mut replies: Option<&mut dyn Write>,
        progress: &dyn Progress,
    ) -> Result<Received, CopyError> {
        let into_dir = self.check()?;
        let umask = current_umask();
        let mode_of = |mode: u32| match self.preserve {
            true => mode & 0o7777,
            false => mode & 0o777 & !umask,
        };
        let mut got = Received::default();
        // Partial files of an earlier copy that this one may finish, by stream path.
        let mut found: HashMap<String, Found> = HashMap::new();
        // Directories that could not be made: what goes in them is dropped, unreported.
        let mut failed: Vec<PathBuf> = Vec::new();
        // Directories get their modes and times once everything inside them is written.
        let mut dirs: Vec<(PathBuf, u32, i64)> = Vec::new();
        // Directories this copy made (the others may hold anything).
        let mut made: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
        let mut parent = Parent::default();
        loop {
            let frame = read_frame(input, cut)?;
            if let Frame::File { path, .. } | Frame::Dir { path, .. } | Frame::Link { path, .. } =
                &frame
            {
                let to = self.target(path, into_dir)?;
                if failed.iter().any(|d| to.starts_with(d)) {
                    if let Frame::File { len, from, .. } = frame {
                        let skip = Incoming {
                            to: &to,
                            len,
                            from,
                            mode: 0,
                            mtime: None,
                            found: None,
                            discard: true,
                            fresh_dir: false,
                            dir: None,
                        };
                        let _ = recv_file::receive(input, skip, progress)?;
                    }
                    continue;
                }
            }
            match frame {
                Frame::End => break,
                Frame::Names { names, recursive } => {
                    found = partial::scan(&names, recursive, |p| self.target(p, into_dir));
                    if let Some(r) = replies.as_deref_mut() {
                        write_frame(r, &Reply::Partials(partial::offers(&found)))?;
                        r.flush().map_err(|e| CopyError::Closed(crate::plain(&e)))?;
                    }
                }
                Frame::Problem(p) => got.problems.push(p),
                Frame::Total(n) => progress.total(n),
                Frame::Data(_) | Frame::Hole(_) | Frame::Sum(_) => {
                    return Err(CopyError::Stream("file data without a file".into()));
                }
                Frame::Dir { path, mode, mtime } => {
                    let to = self.target(&path, into_dir)?;
                    match std::fs::create_dir(&to) {
                        Ok(()) => {
                            made.insert(to.clone());
                        }
                        Err(_) if to.is_dir() => {}
                        Err(e) => {
                            self.problem(&mut got, &to, &e);
                            failed.push(to);
                            continue;
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
                    from,
                } => {
                    let to = self.target(&path, into_dir)?;
                    let dir = parent.get(&to);
                    let file = Incoming {
                        to: &to,
                        len,
                        from,
                        mode: mode_of(mode),
                        mtime: self.preserve.then_some(mtime),
                        found: found.remove(&path),
                        discard: false,
                        fresh_dir: to.parent().is_some_and(|d| made.contains(d)),
                        dir,
                    };
                    match recv_file::receive(input, file, progress)? {
                        Ok(()) => {
                            got.files += 1;
                            got.bytes += len;
                            got.resumed += from;
                        }
                        Err(p) => got.problems.push(format!("{}: {p}", self.label)),
                    }
                }
                Frame::Link { path, target } => {
                    let to = self.target(&path, into_dir)?;
                    let tmp = temp_beside(&to);
                    let made = std::os::unix::fs::symlink(&target, &tmp)
                        .and_then(|()| std::fs::rename(&tmp, &to));
                    match made {
                        Ok(()) => got.links += 1,
                        Err(e) => {
                            let _ = std::fs::remove_file(&tmp);
                            self.problem(&mut got, &to, &e);
                        }
                    }
                }
            }
        }
        // Partial files whose sources this copy no longer has.
        for (_, f) in found.drain() {
            partial::forget(f);
        }
        for (dir, mode, mtime) in dirs.into_iter().rev() {
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode_of(mode)));
            if self.preserve {
                set_mtime(&dir, mtime);
            }
        }
        if let Some(r) = replies {
            // The sender may be gone already (an older one does not wait): nothing is lost.
            let _ = write_frame(r, &Reply::Done(got.clone())).map(|()| r.flush());
        }
        Ok(got)
    }

    /// Whether the destination is a directory that receives the sources by their names, or
    /// an error when it cannot be the destination of this copy (checked before anything is
    /// sent, so that the sending side need not start).
    pub fn check(&self) -> Result<bool, CopyError> {
        let into_dir = self.dest.is_dir();
        // A destination that is not there: named, as `cp` names it (a directory was meant if
        // several sources go there, or it ends with a slash).
        let wants_dir =
            self.sources != 1 || self.dest.as_os_str().as_encoded_bytes().ends_with(b"/");
        if !into_dir && wants_dir {
            if !self.dest.exists() {
                let missing = std::io::Error::from_raw_os_error(libc::ENOENT);
                return Err(CopyError::io(&self.dest, missing));
            }
            return Err(CopyError::Usage(match self.sources {
                1 => format!("{}: not a directory", self.dest.display()),
                n => format!(
                    "{}: not a directory (needed for {n} sources)",
                    self.dest.display()
                ),
            }));
        }
        Ok(into_dir)
    }

    /// Records that `to` could not be written.
    fn problem(&self, got: &mut Received, to: &Path, e: &std::io::Error) {
        got.problems.push(format!(
            "{}: {}: {}",
            self.label,
            to.display(),
            crate::plain(e)
        ));
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

/// Sets a path's modification (and access) time to `secs`, not following a link.
pub(crate) fn set_mtime(path: &Path, secs: i64) {
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

/// The directory the last file went into, kept open: the files of a tree arrive directory by
/// directory, and each is then created, checked and renamed by its name in it
/// ([`crate::partial::at`]).
#[derive(Default)]
struct Parent(Option<(PathBuf, std::os::fd::OwnedFd)>);

impl Parent {
    /// The open directory of `to`, or `None` when it cannot be opened (the path is used then,
    /// and says what is wrong).
    fn get(&mut self, to: &Path) -> Option<std::os::fd::BorrowedFd<'_>> {
        use nix::fcntl::OFlag;
        use std::os::fd::AsFd;
        let dir = to.parent()?;
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if self.0.as_ref().is_none_or(|(p, _)| p != dir) {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
            self.0 = nix::fcntl::open(dir, flags, nix::sys::stat::Mode::empty())
                .ok()
                .map(|fd| (dir.to_path_buf(), fd));
        }
        self.0.as_ref().map(|(_, fd)| fd.as_fd())
    }
}
