//! The sending side: walks the sources and writes the stream.

use crate::{CHUNK, CopyError, Frame};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// How to send.
#[derive(Debug, Clone, Copy)]
pub struct SendOptions<'a> {
    /// Directories and what they hold (`-r`); without it a directory is a problem.
    pub recursive: bool,
    /// Where the sender runs ("session web", "this computer"), for the problems it reports.
    pub label: &'a str,
}

/// Writes `sources` to `out` as a stream ending with [`Frame::End`]. A source that cannot be
/// read becomes a [`Frame::Problem`] (the receiver reports it), so one bad path does not stop
/// the others; the return value is how many there were. An error writing `out` ends it.
pub fn send(
    sources: &[&Path],
    opts: SendOptions,
    out: &mut impl Write,
) -> Result<usize, CopyError> {
    let mut s = Sender {
        out,
        problems: 0,
        label: opts.label,
    };
    for src in sources {
        let name = match src.file_name().and_then(|n| n.to_str()) {
            Some(n) => n.to_string(),
            None => match std::fs::canonicalize(src)
                .ok()
                .and_then(|p| p.file_name()?.to_str().map(str::to_string))
            {
                Some(n) => n,
                None => {
                    s.problem(format!(
                        "{}: cannot copy this path as a whole",
                        src.display()
                    ))?;
                    continue;
                }
            },
        };
        s.entry(src, &name, opts)?;
    }
    s.frame(&Frame::End)?;
    s.out
        .flush()
        .map_err(|e| CopyError::Stream(format!("cannot send: {e}")))?;
    Ok(s.problems)
}

struct Sender<'a, W: Write> {
    out: &'a mut W,
    problems: usize,
    label: &'a str,
}

impl<W: Write> Sender<'_, W> {
    fn frame(&mut self, f: &Frame) -> Result<(), CopyError> {
        let bytes = tether_proto::encode(f).map_err(|e| CopyError::Stream(e.to_string()))?;
        self.out
            .write_all(&bytes)
            .map_err(|e| CopyError::Stream(format!("cannot send: {e}")))
    }

    fn problem(&mut self, what: String) -> Result<(), CopyError> {
        self.problems += 1;
        let what = format!("{}: {what}", self.label);
        self.frame(&Frame::Problem(what))
    }

    fn entry(&mut self, path: &Path, name: &str, opts: SendOptions) -> Result<(), CopyError> {
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
            return self.frame(&Frame::Link {
                path: name.to_string(),
                target: target.to_string(),
            });
        }
        if kind.is_dir() {
            if !opts.recursive {
                return self.problem(format!("{}: is a directory (use -r)", path.display()));
            }
            let mut names: Vec<String> = match std::fs::read_dir(path) {
                Ok(rd) => rd
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .collect(),
                Err(e) => return self.problem(format!("{}: {}", path.display(), crate::plain(&e))),
            };
            names.sort();
            self.frame(&Frame::Dir {
                path: name.to_string(),
                mode,
                mtime,
            })?;
            for n in names {
                self.entry(&path.join(&n), &format!("{name}/{n}"), opts)?;
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
        self.frame(&Frame::File {
            path: name.to_string(),
            len,
            mode,
            mtime,
        })?;
        // Exactly `len` bytes follow, whatever happens to the file meanwhile: a file that
        // shrank is padded and reported, one that grew is cut (its size at the start counts).
        let mut left = len;
        let mut buf = vec![0u8; CHUNK];
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
            let n = match f.read(&mut buf[..want]) {
                Ok(0) | Err(_) => {
                    let pad = vec![0u8; want];
                    self.frame(&Frame::Data(pad))?;
                    left -= want as u64;
                    if left == 0 {
                        return self
                            .problem(format!("{}: changed while it was copied", path.display()));
                    }
                    continue;
                }
                Ok(n) => n,
            };
            self.frame(&Frame::Data(buf[..n].to_vec()))?;
            left -= n as u64;
        }
        Ok(())
    }
}
