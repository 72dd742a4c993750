//! Jobs (SPEC §3.17): invocations the client daemon runs in the background, one child job per
//! target, so they outlive the CLI call that started them.
//!
//! A child job is an ordinary client of this same daemon (through its own socket), so it runs
//! exactly as `invoke` does: on a local session, a temporary one, or another computer through
//! the relay with its reconnection. What the command writes is kept here, per child and per
//! stream, until `job receive` takes it (or, with `--keep`, shows it and leaves it). A child
//! whose unreceived output passes the quota stops reading, so the command waits, as a
//! disconnected session's does. A session disconnect makes the child `Disconnected`; connecting
//! the session again resumes it with `receive`.

use crate::server::Daemon;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use tether_client::{Client, ClientError, Event, Invocation, InvocationControl};
use tether_proto::{
    ChildJobInfo, ErrorInfo, ErrorKind, JobChunk, JobInfo, JobQuery, JobStart, SessionInfo, Stream,
};
use tokio::sync::{Notify, watch};

/// Most output bytes in one `JobOutput` frame.
const FRAME_DATA: usize = 1 << 20;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ChildState {
    NotStarted,
    Running,
    Completed,
    Failed,
    Stopped,
    Disconnected,
}

impl ChildState {
    fn as_str(self) -> &'static str {
        match self {
            ChildState::NotStarted => "NotStarted",
            ChildState::Running => "Running",
            ChildState::Completed => "Completed",
            ChildState::Failed => "Failed",
            ChildState::Stopped => "Stopped",
            ChildState::Disconnected => "Disconnected",
        }
    }

    /// Whether `job wait` is over for it (a Disconnected child waits for a `connect`).
    fn finished(self) -> bool {
        !matches!(self, ChildState::NotStarted | ChildState::Running)
    }
}

struct Child {
    id: u32,
    location: String,
    /// The session as the user named it (empty for a temporary session): what a later
    /// `connect` names, to resume a Disconnected child.
    session: String,
    state: ChildState,
    exit_code: Option<i32>,
    reason: Option<String>,
    /// Output not yet received, in order.
    out: VecDeque<(Stream, Vec<u8>)>,
    unread: usize,
    control: Option<InvocationControl>,
}

struct Job {
    name: String,
    command: String,
    children: Vec<Child>,
}

impl Job {
    /// The parent's state, from its children's (a running child makes the job Running, and
    /// so on down the list).
    fn state(&self) -> ChildState {
        let has = |s: ChildState| self.children.iter().any(|c| c.state == s);
        [
            ChildState::Running,
            ChildState::NotStarted,
            ChildState::Disconnected,
            ChildState::Stopped,
            ChildState::Failed,
        ]
        .into_iter()
        .find(|s| has(*s))
        .unwrap_or(ChildState::Completed)
    }

    fn info(&self, id: u32) -> JobInfo {
        let mut locations: Vec<&str> = Vec::new();
        for c in &self.children {
            if !locations.contains(&c.location.as_str()) {
                locations.push(&c.location);
            }
        }
        JobInfo {
            id,
            name: self.name.clone(),
            state: self.state().as_str().into(),
            has_more_data: self.children.iter().any(|c| !c.out.is_empty()),
            location: locations.join(", "),
            command: self.command.clone(),
            children: self
                .children
                .iter()
                .map(|c| ChildJobInfo {
                    id: c.id,
                    location: c.location.clone(),
                    state: c.state.as_str().into(),
                    has_more_data: !c.out.is_empty(),
                    exit_code: c.exit_code,
                    reason: c.reason.clone(),
                })
                .collect(),
        }
    }
}

/// The client daemon's jobs.
pub struct Jobs {
    table: std::sync::Mutex<BTreeMap<u32, Job>>,
    next_id: std::sync::atomic::AtomicU32,
    /// Bumped on every change, for `wait` and `receive --wait`.
    changed: watch::Sender<u64>,
    /// Raised when output is received, for children waiting for room.
    room: Notify,
    quota: usize,
}

impl Jobs {
    pub fn new() -> Jobs {
        let quota = std::env::var("TETHER_OUTPUT_QUOTA")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|q| *q > 0)
            .unwrap_or(1 << 30);
        Jobs {
            table: Default::default(),
            next_id: 1.into(),
            changed: watch::channel(0).0,
            room: Notify::new(),
            quota,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Job>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    fn next_id(&self) -> u32 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    fn with_child<T>(&self, job: u32, idx: usize, f: impl FnOnce(&mut Child) -> T) -> Option<T> {
        let out = self
            .lock()
            .get_mut(&job)
            .and_then(|j| j.children.get_mut(idx))
            .map(f);
        self.bump();
        out
    }

    /// The jobs a query names (all when it names none); an unknown id is an error.
    fn select(&self, q: &JobQuery) -> Result<Vec<u32>, ErrorInfo> {
        let t = self.lock();
        if q.ids.is_empty() {
            return Ok(t.keys().copied().collect());
        }
        for id in &q.ids {
            if !t.contains_key(id) {
                return Err(ErrorInfo::new(
                    ErrorKind::NotFound,
                    format!("job {id} not found; 'tether job list' shows the jobs"),
                ));
            }
        }
        Ok(q.ids.clone())
    }

    pub fn list(&self, q: &JobQuery) -> Result<Vec<JobInfo>, ErrorInfo> {
        let ids = self.select(q)?;
        let t = self.lock();
        Ok(ids
            .iter()
            .filter_map(|id| t.get(id).map(|j| j.info(*id)))
            .collect())
    }
}

/// `invoke --as-job`: starts every child, and answers once each has started or failed to. A
/// busy session fails the whole job at once (SPEC §3.3), and children already started are
/// stopped; any other failure only fails its own child.
pub async fn start(daemon: &Arc<Daemon>, req: JobStart) -> Result<JobInfo, ErrorInfo> {
    let jobs = &daemon.jobs;
    let starts = req.children.iter().map(|c| {
        let mut spec = c.spec.clone();
        spec.wait_timeout_ms = Some(0);
        spec.stdin = false;
        let paths = daemon.paths.clone();
        async move { Client::connect(&paths).await?.into_invocation(spec).await }
    });
    let started: Vec<Result<Invocation, ClientError>> =
        futures_util::future::join_all(starts).await;
    if let Some(busy) = started.iter().find_map(|r| match r {
        Err(e) if e.kind() == ErrorKind::Busy => Some(e.to_string()),
        _ => None,
    }) {
        for inv in started.iter().flatten() {
            let _ = inv.control().cancel().await;
        }
        return Err(ErrorInfo::new(ErrorKind::Busy, busy));
    }
    let id = jobs.next_id();
    let mut children = Vec::new();
    let mut runs = Vec::new();
    for (i, (c, r)) in req.children.iter().zip(started).enumerate() {
        let mut child = Child {
            id: jobs.next_id(),
            location: c.location.clone(),
            session: c.spec.session.clone(),
            state: ChildState::Running,
            exit_code: None,
            reason: None,
            out: VecDeque::new(),
            unread: 0,
            control: None,
        };
        match r {
            Ok(inv) => {
                child.control = Some(inv.control());
                runs.push((i, inv));
            }
            Err(e) => {
                child.state = ChildState::Failed;
                child.reason = Some(e.to_string());
            }
        }
        children.push(child);
    }
    let job = Job {
        name: format!("Job{id}"),
        command: req.command,
        children,
    };
    let info = job.info(id);
    jobs.lock().insert(id, job);
    jobs.bump();
    for (i, inv) in runs {
        tokio::spawn(run_child(daemon.clone(), id, i, inv));
    }
    Ok(info)
}

/// Gathers one child's events until its invocation ends.
async fn run_child(daemon: Arc<Daemon>, job: u32, idx: usize, mut inv: Invocation) {
    let jobs = &daemon.jobs;
    loop {
        // Unreceived output past the quota: stop reading, so the command waits.
        loop {
            let room = jobs.room.notified();
            let unread = jobs.with_child(job, idx, |c| c.unread);
            match unread {
                None => return, // removed
                Some(u) if u > jobs.quota => room.await,
                Some(_) => break,
            }
        }
        let event = inv.next().await;
        let gone = jobs.with_child(job, idx, |c| match event {
            Ok(Event::Output { stream, data }) => {
                c.unread += data.len();
                c.out.push_back((stream, data));
                false
            }
            Ok(Event::Notice(_)) => false,
            Ok(Event::Exit(e)) => {
                c.exit_code = Some(e.code);
                if c.state != ChildState::Stopped {
                    c.state = if e.code == 0 {
                        ChildState::Completed
                    } else {
                        ChildState::Failed
                    };
                }
                c.control = None;
                true
            }
            Err(e) => {
                if c.state != ChildState::Stopped {
                    c.state = if e.kind() == ErrorKind::Lost {
                        ChildState::Disconnected
                    } else {
                        ChildState::Failed
                    };
                }
                c.reason = Some(e.to_string());
                c.control = None;
                true
            }
        });
        if gone != Some(false) {
            return;
        }
        inv.delivered();
    }
}

/// After `connect`: Disconnected children in those sessions resume, collecting with
/// `receive` what their commands wrote meanwhile and the rest.
pub fn reconnected(daemon: &Arc<Daemon>, sessions: &[SessionInfo]) {
    let names = |w: &str| {
        sessions
            .iter()
            .any(|s| s.name == w || s.instance_id == w || s.id.to_string() == w)
    };
    let mut resume = Vec::new();
    {
        let mut t = daemon.jobs.lock();
        for (id, job) in t.iter_mut() {
            for (i, c) in job.children.iter_mut().enumerate() {
                if c.state == ChildState::Disconnected && !c.session.is_empty() && names(&c.session)
                {
                    c.state = ChildState::Running;
                    c.reason = None;
                    resume.push((*id, i, c.session.clone()));
                }
            }
        }
    }
    daemon.jobs.bump();
    for (job, idx, session) in resume {
        let daemon = daemon.clone();
        tokio::spawn(async move {
            let got = async {
                Client::connect(&daemon.paths)
                    .await?
                    .into_receive(&session)
                    .await
            }
            .await;
            match got {
                Ok(inv) => {
                    daemon
                        .jobs
                        .with_child(job, idx, |c| c.control = Some(inv.control()));
                    run_child(daemon.clone(), job, idx, inv).await;
                }
                Err(e) => {
                    daemon.jobs.with_child(job, idx, |c| {
                        c.state = ChildState::Disconnected;
                        c.reason = Some(e.to_string());
                    });
                }
            }
        });
    }
}

/// `job wait`: until every named job (or, with `any`, one of them) is over, or the timeout.
pub async fn wait(jobs: &Jobs, q: &JobQuery) -> Result<Vec<JobInfo>, ErrorInfo> {
    let ids = jobs.select(q)?;
    let mut changed = jobs.changed.subscribe();
    let deadline = q
        .timeout_ms
        .map(|ms| tokio::time::Instant::now() + std::time::Duration::from_millis(ms));
    loop {
        changed.borrow_and_update();
        let (done, all): (Vec<JobInfo>, usize) = {
            let t = jobs.lock();
            let infos: Vec<(bool, JobInfo)> = ids
                .iter()
                .filter_map(|id| t.get(id).map(|j| (j.state().finished(), j.info(*id))))
                .collect();
            let n = infos.len();
            (
                infos
                    .into_iter()
                    .filter(|(f, _)| *f)
                    .map(|(_, i)| i)
                    .collect(),
                n,
            )
        };
        if done.len() == all || (q.any && !done.is_empty()) {
            return Ok(done);
        }
        let timed_out = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = changed.changed() => if r.is_err() { return Ok(done) },
            _ = timed_out => {
                return Err(ErrorInfo::new(
                    ErrorKind::Busy,
                    format!("{} of {all} jobs still running after the timeout", all - done.len()),
                ));
            }
        }
    }
}

/// Where a `receive --keep --wait` has got to in each child's kept output.
type Sent = HashMap<(u32, usize), usize>;

/// Output not yet received of the named jobs (up to about [`FRAME_DATA`] bytes); with `keep`
/// it stays for the next receive, and `sent` records what this call has already returned.
/// Also says whether every job is over.
fn take(jobs: &Jobs, ids: &[u32], keep: bool, sent: &mut Sent) -> (Vec<JobChunk>, bool) {
    let mut out = Vec::new();
    let mut size = 0;
    let mut finished = true;
    {
        let mut t = jobs.lock();
        for id in ids {
            let Some(job) = t.get_mut(id) else { continue };
            finished &= job.state().finished();
            for (i, c) in job.children.iter_mut().enumerate() {
                let from = if keep {
                    sent.get(&(*id, i)).copied().unwrap_or(0)
                } else {
                    0
                };
                let mut n = 0;
                for (stream, data) in c.out.iter().skip(from) {
                    if size >= FRAME_DATA {
                        break;
                    }
                    size += data.len();
                    n += 1;
                    out.push(JobChunk {
                        job: *id,
                        location: c.location.clone(),
                        stream: *stream,
                        data: data.clone(),
                    });
                }
                if keep {
                    *sent.entry((*id, i)).or_default() += n;
                } else {
                    for (_, d) in c.out.drain(..n) {
                        c.unread -= d.len();
                    }
                }
            }
        }
    }
    if !keep && !out.is_empty() {
        jobs.room.notify_waiters();
        jobs.bump();
    }
    // More is left when this batch was cut at the frame size.
    (out, finished && size < FRAME_DATA)
}

/// `job stop`: Ctrl-C to every running child; they become Stopped.
pub async fn stop(jobs: &Jobs, q: &JobQuery) -> Result<Vec<JobInfo>, ErrorInfo> {
    let ids = jobs.select(q)?;
    let mut controls = Vec::new();
    {
        let mut t = jobs.lock();
        for id in &ids {
            let Some(job) = t.get_mut(id) else { continue };
            for c in &mut job.children {
                if !c.state.finished() || c.state == ChildState::Disconnected {
                    c.state = ChildState::Stopped;
                    c.reason = Some("stopped by 'tether job stop'".into());
                    controls.extend(c.control.clone());
                }
            }
        }
    }
    jobs.bump();
    for c in controls {
        let _ = c.cancel().await;
    }
    jobs.list(&JobQuery {
        ids,
        ..Default::default()
    })
}

/// `job remove`: forgets finished jobs; a running one only with `force` (it is stopped first).
pub async fn remove(jobs: &Jobs, q: &JobQuery) -> Result<(), ErrorInfo> {
    let ids = jobs.select(q)?;
    if q.ids.is_empty() {
        return Err(ErrorInfo::new(ErrorKind::Usage, "job remove needs job ids"));
    }
    let running: Vec<u32> = {
        let t = jobs.lock();
        ids.iter()
            .copied()
            .filter(|id| t.get(id).is_some_and(|j| !j.state().finished()))
            .collect()
    };
    if !running.is_empty() && !q.force {
        let list: Vec<String> = running.iter().map(|i| i.to_string()).collect();
        return Err(ErrorInfo::new(
            ErrorKind::Busy,
            format!(
                "job {} is still running; 'tether job stop' it first, or remove it with --force",
                list.join(", ")
            ),
        ));
    }
    if !running.is_empty() {
        stop(
            jobs,
            &JobQuery {
                ids: running,
                ..Default::default()
            },
        )
        .await?;
    }
    {
        let mut t = jobs.lock();
        for id in &ids {
            t.remove(id);
        }
    }
    jobs.room.notify_waiters();
    jobs.bump();
    Ok(())
}

/// `job receive`: `JobOutput` frames with what the jobs wrote (and, with `wait`, what they
/// write until they end), then `Ok`.
pub async fn receive(
    jobs: &Jobs,
    q: &JobQuery,
    w: &mut crate::server::Writer,
) -> Result<tether_proto::Response, ErrorInfo> {
    let ids = jobs.select(q)?;
    let mut sent = Sent::new();
    let mut changed = jobs.changed.subscribe();
    loop {
        changed.borrow_and_update();
        let (chunks, finished) = take(jobs, &ids, q.keep, &mut sent);
        if chunks.is_empty() {
            if !q.wait || finished {
                return Ok(tether_proto::Response::Ok);
            }
            if changed.changed().await.is_err() {
                return Ok(tether_proto::Response::Ok);
            }
            continue;
        }
        if w.send(&tether_proto::Response::JobOutput(chunks))
            .await
            .is_err()
        {
            return Err(ErrorInfo::new(ErrorKind::Lost, "the client went away"));
        }
    }
}
