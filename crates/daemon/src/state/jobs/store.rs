//! Jobs written down, so that a restarted client daemon lists them and picks them up again.
//!
//! `$TETHER_HOME/jobs/<id>/` (0700, files 0600) holds:
//! - `job.json`: the job's name, command and children (by id). Written last when the job is
//!   made, so a directory without it is a job that never finished being made.
//! - `<child>.json`: a child's state, how it runs ([`Run`]) and how much of each stream
//!   `job receive` has taken; rewritten whole (and atomically) on every change, so a child's
//!   change never rewrites the job's command or its siblings.
//! - `<child>.out`: for an invocation child, the output it received, appended as it arrives
//!   and before the session's host is told it may forget it. Records are `stream (1 byte) |
//!   output byte number (8, big-endian) | length (4) | data`; the file is emptied once
//!   `job receive` has taken everything in it.
//!
//! Reading back trusts nothing: sizes are bounded before anything is allocated, names and ids
//! are checked as if they came from a client, a cut or inconsistent output record ends the
//! file there, and a job or child that does not read back is logged and left out.

use super::{Child, ChildState, Job, Run};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use tether_proto::Stream;
use tether_transport::paths::Paths;

/// `job.json` holds the command (a script is at most 4 MiB, more once escaped in JSON) and
/// the children's ids.
const MAX_JOB_FILE: u64 = 32 << 20;
const MAX_CHILD_FILE: u64 = 64 << 10;
const MAX_CHILDREN: usize = 100_000;
/// Job directories read back at most.
const MAX_JOBS: usize = 10_000;
/// Largest output record (a frame's data is far smaller).
const MAX_CHUNK: usize = 16 << 20;
const HEADER: usize = 13;
const MAX_TEXT: usize = 4096;

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    id: u32,
    name: String,
    command: String,
    children: Vec<u32>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ChildFile {
    id: u32,
    location: String,
    session: String,
    state: String,
    exit_code: Option<i32>,
    reason: Option<String>,
    run: Run,
    taken: [u64; 2],
}

/// What [`Store::load`] found: the jobs, and every job id seen (readable or not), so that
/// new ids never collide with a directory left behind.
#[derive(Default)]
pub(crate) struct Loaded {
    pub jobs: Vec<(u32, Job)>,
    pub ids: Vec<u32>,
}

pub(crate) struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(paths: &Paths) -> Store {
        Store {
            dir: paths.home.join("jobs"),
        }
    }

    fn job_dir(&self, id: u32) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// Writes a new job down: its children first, then `job.json`.
    pub fn create(&self, id: u32, job: &Job) -> std::io::Result<()> {
        tether_transport::paths::private_dir(&self.dir)?;
        let dir = self.job_dir(id);
        tether_transport::paths::private_dir(&dir)?;
        for c in &job.children {
            self.save_child(id, c)?;
        }
        let file = JobFile {
            id,
            name: job.name.clone(),
            command: job.command.clone(),
            children: job.children.iter().map(|c| c.id).collect(),
        };
        write_atomic(&dir.join("job.json"), &serde_json::to_vec(&file)?)
    }

    pub fn save_child(&self, id: u32, c: &Child) -> std::io::Result<()> {
        let file = ChildFile {
            id: c.id,
            location: c.location.clone(),
            session: c.session.clone(),
            state: c.state.as_str().into(),
            exit_code: c.exit_code,
            reason: c.reason.clone(),
            run: c.run.clone(),
            taken: c.taken,
        };
        let path = self.job_dir(id).join(format!("{}.json", c.id));
        write_atomic(&path, &serde_json::to_vec(&file)?)
    }

    /// Appends output that starts at output byte `seq`.
    pub fn append(
        &self,
        id: u32,
        child: u32,
        stream: Stream,
        seq: u64,
        data: &[u8],
    ) -> std::io::Result<()> {
        let mut rec = Vec::with_capacity(HEADER + data.len());
        rec.push(match stream {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        });
        rec.extend_from_slice(&seq.to_be_bytes());
        rec.extend_from_slice(&(data.len() as u32).to_be_bytes());
        rec.extend_from_slice(data);
        let path = self.job_dir(id).join(format!("{child}.out"));
        let mut f = open(&path, std::fs::OpenOptions::new().append(true).create(true))?;
        f.write_all(&rec)
    }

    /// Everything in a child's output file has been taken: empty it.
    pub fn compact(&self, id: u32, child: u32) {
        let path = self.job_dir(id).join(format!("{child}.out"));
        if let Ok(f) = open(&path, std::fs::OpenOptions::new().write(true)) {
            let _ = f.set_len(0);
        }
    }

    /// Forgets a job: `job.json` first (without it the rest is a leftover), then the rest.
    pub fn remove(&self, id: u32) {
        let dir = self.job_dir(id);
        let _ = std::fs::remove_file(dir.join("job.json"));
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("job {id}: cannot remove {}: {e}", dir.display());
        }
    }

    /// Reads every job back. A child's unreceived output is read into memory up to about
    /// `quota` bytes (what the daemon that wrote it could have held).
    pub fn load(&self, quota: usize) -> Loaded {
        let mut out = Loaded::default();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for entry in rd.flatten() {
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()) && n.len() <= 10)
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|id| *id > 0)
            else {
                continue;
            };
            out.ids.push(id);
            if out.jobs.len() >= MAX_JOBS {
                tracing::warn!("more than {MAX_JOBS} jobs written down; job {id} is left out");
                continue;
            }
            match self.load_job(id, quota) {
                Ok(Some(job)) => out.jobs.push((id, job)),
                // Never finished being made (the daemon died making it).
                Ok(None) => {
                    let _ = std::fs::remove_dir_all(self.job_dir(id));
                }
                Err(e) => tracing::warn!("job {id} cannot be read back, left out: {e}"),
            }
        }
        out
    }

    fn load_job(&self, id: u32, quota: usize) -> Result<Option<Job>, String> {
        let dir = self.job_dir(id);
        let Some(file) = read_json::<JobFile>(&dir.join("job.json"), MAX_JOB_FILE)? else {
            return Ok(None);
        };
        if file.id != id {
            return Err(format!("job.json names job {}", file.id));
        }
        if file.name.len() > 64 || file.children.len() > MAX_CHILDREN {
            return Err("job.json is out of bounds".into());
        }
        let mut children = Vec::new();
        for cid in file.children {
            children.push(match self.load_child(id, cid, quota) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("job {id}: child {cid} cannot be read back: {e}");
                    let run = Run::Invocation {
                        instance_id: None,
                        remote: false,
                        temporary: false,
                    };
                    let mut c = Child::running(cid, "?", "", run);
                    c.state = ChildState::Failed;
                    c.reason = Some(format!("its record could not be read back: {e}"));
                    c
                }
            });
        }
        Ok(Some(Job {
            name: file.name,
            command: file.command,
            children,
        }))
    }

    fn load_child(&self, id: u32, cid: u32, quota: usize) -> Result<Child, String> {
        let dir = self.job_dir(id);
        let f = read_json::<ChildFile>(&dir.join(format!("{cid}.json")), MAX_CHILD_FILE)?
            .ok_or("its record is missing")?;
        if f.id != cid {
            return Err(format!("the record names child {}", f.id));
        }
        let state = ChildState::parse(&f.state).ok_or("unknown state")?;
        if f.location.len() > MAX_TEXT {
            return Err("location too long".into());
        }
        if !f.session.is_empty() {
            tether_proto::validate_word(&f.session).map_err(|e| e.message)?;
        }
        match &f.run {
            Run::Invocation {
                instance_id: Some(iid),
                ..
            } if !tether_proto::is_instance_id(iid) => return Err("bad instance id".into()),
            Run::InSession { session, job } => {
                tether_proto::validate_word(session).map_err(|e| e.message)?;
                if !tether_proto::is_instance_id(job) {
                    return Err("bad session job id".into());
                }
            }
            _ => {}
        }
        let mut c = Child::running(cid, &f.location, &f.session, f.run);
        c.state = state;
        c.exit_code = f.exit_code;
        c.reason = f.reason.map(|r| r.chars().take(MAX_TEXT).collect());
        c.taken = f.taken;
        let taken = f.taken[0].saturating_add(f.taken[1]);
        c.received = taken;
        if c.logs_output() {
            let log = read_log(&dir.join(format!("{cid}.out")), taken, quota);
            c.received = log.end.max(taken);
            c.unread = log.unread;
            c.out = log.chunks;
            if let Some(problem) = log.problem {
                tracing::warn!("job {id}: output of child {cid}: {problem}");
                c.reason.get_or_insert(problem);
            }
        }
        Ok(c)
    }
}

/// A child's output file, read back from output byte `from`.
struct Log {
    chunks: VecDeque<(Stream, Vec<u8>)>,
    unread: usize,
    /// The output byte after the last one in the file.
    end: u64,
    problem: Option<String>,
}

fn read_log(path: &Path, from: u64, quota: usize) -> Log {
    let mut log = Log {
        chunks: VecDeque::new(),
        unread: 0,
        end: 0,
        problem: None,
    };
    let file = match open(path, std::fs::OpenOptions::new().read(true).write(true)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return log,
        Err(e) => {
            log.problem = Some(format!("its output could not be read back: {e}"));
            return log;
        }
    };
    // What the writer could have held, plus a frame's worth.
    let bound = quota.saturating_add(MAX_CHUNK);
    let mut r = std::io::BufReader::new(&file);
    let mut good = 0u64;
    let mut expect: Option<u64> = None;
    let mut dropped = 0u64;
    let cut = loop {
        let mut h = [0u8; HEADER];
        match read_full(&mut r, &mut h) {
            Ok(0) => break None,
            Ok(n) if n < HEADER => break Some("a cut record"),
            Ok(_) => {}
            Err(_) => break Some("a read error"),
        }
        let stream = match h[0] {
            0 => Stream::Stdout,
            1 => Stream::Stderr,
            _ => break Some("a bad record"),
        };
        let seq = u64::from_be_bytes(h[1..9].try_into().unwrap_or_default());
        let len = u32::from_be_bytes(h[9..13].try_into().unwrap_or_default()) as usize;
        // Records follow each other; a gap is output that was lost (and said so), an overlap
        // is damage.
        if len == 0 || len > MAX_CHUNK || expect.is_some_and(|e| seq < e) {
            break Some("a bad record");
        }
        let end = seq.saturating_add(len as u64);
        let keep = end > from && log.unread < bound;
        if keep {
            let mut data = vec![0u8; len];
            match read_full(&mut r, &mut data) {
                Ok(n) if n == len => {}
                _ => break Some("a cut record"),
            }
            let skip = from.saturating_sub(seq) as usize;
            data.drain(..skip);
            log.unread += data.len();
            log.chunks.push_back((stream, data));
        } else {
            if end > from {
                dropped += len as u64;
            }
            if r.seek_relative(len as i64).is_err() {
                break Some("a read error");
            }
        }
        good += (HEADER + len) as u64;
        expect = Some(end);
        log.end = end;
    };
    // A crash may cut the last record (it was never acknowledged, so the host still has
    // it): later output is appended after the good ones.
    if let Some(what) = cut {
        let size = file.metadata().map(|m| m.len()).unwrap_or(good);
        let _ = file.set_len(good);
        if what != "a cut record" {
            log.problem = Some(format!(
                "{} bytes of its output file could not be read back ({what})",
                size.saturating_sub(good)
            ));
        }
    }
    if dropped > 0 {
        log.problem = Some(format!(
            "{dropped} bytes of its unreceived output were left out (more than {quota} bytes)"
        ));
    }
    log
}

/// Reads until `buf` is full or the end; returns how much was read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Opens a file (created private) without following a symbolic link; only a regular file.
fn open(path: &Path, how: &mut std::fs::OpenOptions) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = how
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(tether_transport::at(path))?;
    if !f.metadata().map_err(tether_transport::at(path))?.is_file() {
        let e = std::io::Error::other("not a regular file");
        return Err(tether_transport::at(path)(e));
    }
    Ok(f)
}

/// Reads a JSON file of at most `max` bytes; `None` when it does not exist.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path, max: u64) -> Result<Option<T>, String> {
    let f = match open(path, std::fs::OpenOptions::new().read(true)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut buf = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if buf.len() as u64 > max {
        return Err(format!("{} is over {max} bytes", path.display()));
    }
    serde_json::from_slice(&buf)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Replaces a file whole: a reader sees the old one or the new one, never a part.
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    tether_transport::paths::write_private(&tmp, data)?;
    std::fs::rename(&tmp, path).map_err(tether_transport::at(path))
}

#[cfg(test)]
mod tests;
