//! Partial files: what an interrupted copy leaves, and how the next one picks it up (issue 20).
//!
//! The receiver writes each file under `.NAME.tether-part` beside its destination: one name per
//! destination, so that when a copy is cut short (the CLI killed or interrupted, the far side
//! killed, a link that does not come back) the same copy run again finds what was written. Its
//! first frame names the sources ([`crate::Frame::Names`]); the receiver looks for partial files
//! under them and answers with their lengths and the SHA-256 of what they hold ([`Partial`]).
//! The sender hashes the same prefix of its file: only if they match does it send the rest
//! (`from` in [`crate::Frame::File`]) and then the hash of the whole file, which the receiver
//! checks before the rename. So a source that changed since (in the part already copied), or a
//! partial file damaged meanwhile, is never completed into a wrong file: the first is sent
//! whole, the second is removed and reported. Nothing needs recording beside the data: the hash
//! of the prefix is the test of whether the data can be kept.
//!
//! A partial name is predictable, so it is used only when safe: it must be a plain file owned by
//! this user with one link (not someone else's file planted in a shared directory, nor a hard
//! link to another file), and locked (`flock`) by this copy alone; a second copy to the same
//! destination at the same time uses a unique temporary name instead. What happens to a partial
//! file nobody comes back for: a copy of anything to that destination reuses (truncates) it, a
//! rerun whose sources no longer include it removes it, and otherwise it stays, hidden, until
//! removed by hand.

use crate::CopyError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What ends the name of a partial file (after `.NAME`).
pub const SUFFIX: &str = ".tether-part";

/// Most partial files one answer lists (an answer is one frame, and rarely lists more than one:
/// an interrupted copy leaves only the file it was writing).
const MAX_LISTED: usize = 1000;

/// A partial file the receiver has: the stream path of the file it is the start of, how many
/// bytes it holds and their SHA-256.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Partial {
    pub path: String,
    pub have: u64,
    pub sha256: [u8; 32],
}

/// `.NAME.tether-part` beside `to`; `None` when that name would be longer than a file name may
/// be (the file is then written under a unique temporary name, and cannot be resumed).
pub fn partial_name(to: &Path) -> Option<PathBuf> {
    let name = to.file_name()?;
    if name.len() + 1 + SUFFIX.len() > 255 {
        return None;
    }
    let mut n = std::ffi::OsString::from(".");
    n.push(name);
    n.push(SUFFIX);
    Some(to.with_file_name(n))
}

/// The destination name a partial file's name stands for (`.x.tether-part` → `x`).
fn real_name(partial: &str) -> Option<&str> {
    let n = partial.strip_prefix('.')?.strip_suffix(SUFFIX)?;
    (!n.is_empty()).then_some(n)
}

/// How [`open_locked`] went.
pub(crate) enum Opened {
    /// Ours alone until dropped, with what `fstat` said of it once locked (its length and
    /// mode: the receiver truncates and changes them only when they are not already right).
    Locked(File, std::fs::Metadata),
    /// Not to be used: another copy holds it, or it is not a plain file of ours with one link.
    Unusable,
}

/// Where a path is reached from: an open directory and the entry's name in it, or (with no
/// directory) the whole path. A copy of many files opens each directory once: every name
/// it then looks up, creates and renames is found in one step, not by walking the whole path
/// again (a sixth of the receiver's time in a tree of small files on tmpfs).
pub(crate) fn at<'a>(dir: Option<BorrowedFd<'a>>, p: &'a Path) -> (BorrowedFd<'a>, &'a Path) {
    match (dir, p.file_name()) {
        (Some(d), Some(name)) => (d, Path::new(name)),
        _ => (nix::fcntl::AT_FDCWD, p),
    }
}

/// Opens the partial file `p` (in `dir`, see [`at`]) for writing (creating it when `create`,
/// with permissions `mode`), locked for this copy. An error is the destination's own (a
/// directory that is missing or not writable, a full disk).
pub(crate) fn open_locked(
    dir: Option<BorrowedFd<'_>>,
    p: &Path,
    create: bool,
    mode: u32,
) -> std::io::Result<Opened> {
    use nix::fcntl::OFlag;
    let mut flags = OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    if create {
        flags |= OFlag::O_CREAT;
    }
    let (d, name) = at(dir, p);
    let f = match nix::fcntl::openat(
        d,
        name,
        flags,
        nix::sys::stat::Mode::from_bits_truncate(mode as _),
    ) {
        Ok(fd) => File::from(fd),
        // A link where the partial file would be: not ours to follow.
        Err(nix::errno::Errno::ELOOP) => return Ok(Opened::Unusable),
        Err(e) => return Err(e.into()),
    };
    if !lock(&f, libc::LOCK_EX) {
        return Ok(Opened::Unusable);
    }
    Ok(match still_ours_at(&f, dir, p) {
        Some(m) => Opened::Locked(f, m),
        None => Opened::Unusable,
    })
}

/// Takes a `flock` without waiting.
fn lock(f: &File, how: libc::c_int) -> bool {
    // SAFETY: flock on a descriptor we own; no memory is touched.
    unsafe { libc::flock(f.as_raw_fd(), how | libc::LOCK_NB) == 0 }
}

/// The open `f`'s metadata if it is a plain file of this user with one link, still named `p`
/// (another copy may have renamed it into place between our open and our lock).
fn still_ours(f: &File, p: &Path) -> Option<std::fs::Metadata> {
    still_ours_at(f, None, p)
}

/// [`still_ours`] with `p` in `dir` ([`at`]).
fn still_ours_at(f: &File, dir: Option<BorrowedFd<'_>>, p: &Path) -> Option<std::fs::Metadata> {
    let m = f.metadata().ok()?;
    let (d, name) = at(dir, p);
    let now = nix::sys::stat::fstatat(d, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
    // Asked once: a copy of many small files would otherwise ask once per file.
    static ME: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    // SAFETY: geteuid cannot fail and touches no memory.
    let me = *ME.get_or_init(|| unsafe { libc::geteuid() });
    // (The casts are no-ops on Linux; other systems' `stat` fields are narrower.)
    #[allow(clippy::unnecessary_cast)]
    let same = (m.dev(), m.ino()) == (now.st_dev as u64, now.st_ino as u64);
    let ours = m.is_file() && m.uid() == me && m.nlink() == 1 && same;
    ours.then_some(m)
}

/// A partial file found by [`scan`], kept until its file arrives.
pub(crate) struct Found {
    pub file: PathBuf,
    pub have: u64,
    /// SHA-256 of its `have` bytes so far: the receiver goes on hashing what arrives.
    pub hasher: Sha256,
}

/// Looks for partial files where the stream's entries go: beside each source's destination
/// and, for directories (`recursive`), anywhere under it. `target` is where a stream path is
/// written. A partial file another copy holds, or one that is empty, is left out.
pub(crate) fn scan(
    names: &[String],
    recursive: bool,
    target: impl Fn(&str) -> Result<PathBuf, CopyError>,
) -> HashMap<String, Found> {
    let mut found = HashMap::new();
    let mut add = |path: String, file: PathBuf| {
        if found.len() < MAX_LISTED
            && let Some((have, hasher)) = hash_partial(&file)
            && have > 0
        {
            found.insert(path, Found { file, have, hasher });
        }
    };
    for name in names {
        let Ok(to) = target(name) else { continue };
        if let Some(p) = partial_name(&to) {
            add(name.clone(), p);
        }
        let is_dir = std::fs::symlink_metadata(&to).is_ok_and(|m| m.is_dir());
        if !(recursive && is_dir) {
            continue;
        }
        let mut stack = vec![(to, name.clone())];
        while let Some((dir, stream)) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let Some(n) = e.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let Ok(kind) = e.file_type() else { continue };
                if kind.is_dir() {
                    stack.push((e.path(), format!("{stream}/{n}")));
                } else if kind.is_file()
                    && let Some(real) = real_name(&n)
                {
                    add(format!("{stream}/{real}"), e.path());
                }
            }
        }
    }
    found
}

/// The length and SHA-256 of a partial file, read under a shared lock (so not while another
/// copy writes it); `None` if it cannot be read or is not ours.
fn hash_partial(p: &Path) -> Option<(u64, Sha256)> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(p)
        .ok()?;
    if !(lock(&f, libc::LOCK_SH) && still_ours(&f, p).is_some()) {
        return None;
    }
    let mut hasher = Sha256::new();
    let mut have = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Some((have, hasher)),
            Ok(n) => {
                hasher.update(&buf[..n]);
                have += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Removes a partial file that no entry of the stream used (its source is gone, or is no
/// longer a file): unless another copy holds it by now.
pub(crate) fn forget(found: Found) {
    if let Ok(f) = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&found.file)
        && lock(&f, libc::LOCK_EX)
        && still_ours(&f, &found.file).is_some()
    {
        let _ = std::fs::remove_file(&found.file);
    }
}

/// SHA-256 of the first `n` bytes `f` reads (from where it is), or `None` if it has fewer.
pub(crate) fn hash_prefix(f: &mut File, n: u64) -> Option<Sha256> {
    let mut hasher = Sha256::new();
    let mut left = n;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(buf.len()).min(buf.len());
        match f.read(&mut buf[..want]) {
            Ok(0) => return None,
            Ok(k) => {
                hasher.update(&buf[..k]);
                left -= k as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(hasher)
}

/// Hashes `n` zero bytes (a hole) into `hasher`.
pub(crate) fn hash_zeros(hasher: &mut Sha256, mut n: u64) {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    while n > 0 {
        let k = usize::try_from(n).unwrap_or(ZEROS.len()).min(ZEROS.len());
        hasher.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

/// The answer to [`crate::Frame::Names`], from what [`scan`] found.
pub(crate) fn offers(found: &HashMap<String, Found>) -> Vec<Partial> {
    found
        .iter()
        .map(|(path, f)| Partial {
            path: path.clone(),
            have: f.have,
            sha256: f.hasher.clone().finalize().into(),
        })
        .collect()
}
