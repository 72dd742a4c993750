//! Jobs (SPEC §3.17): invocations the client daemon runs in the background, one child job per
//! target, so they outlive the CLI call that started them — and the daemon itself.
//!
//! A child job is an ordinary client of this same daemon (through its own socket), so it runs
//! exactly as `invoke` does: on a local session, a temporary one, or another computer through
//! the relay with its reconnection. What the command writes is kept here, per child and per
//! stream, until `job receive` takes it (or, with `--keep`, shows it and leaves it). A child
//! whose unreceived output passes the quota stops reading, so the command waits, as a
//! disconnected session's does. A session disconnect makes the child `Disconnected`; connecting
//! the session again resumes it with `receive`.
//!
//! Every job is written down ([`store`]): its children's states, how much of their output has
//! been taken, and the output an invocation child received but nobody took yet (written before
//! the session's host is told it may forget it). A restarted daemon reads them back and picks
//! up the children that were running: an invocation child continues its command's stream from
//! the first byte it had not received (the host kept the rest), a job inside a session reads
//! its files again from where `job receive` had got to.
//!
//! This module is the job table and its store: shared state, a field of the
//! [`Daemon`](super::Daemon). Starting jobs, following their children and collecting their
//! output is the remote role's ([`crate::remote::jobs`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use tether_proto::{ChildJobInfo, ErrorInfo, ErrorKind, JobInfo, JobQuery, Request, Stream};
use tether_transport::paths::Paths;
use tokio::sync::{Notify, mpsc, watch};

/// Most output bytes in one `JobOutput` frame.
pub(crate) const FRAME_DATA: usize = 1 << 20;

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
    const ALL: [ChildState; 6] = [
        ChildState::NotStarted,
        ChildState::Running,
        ChildState::Completed,
        ChildState::Failed,
        ChildState::Stopped,
        ChildState::Disconnected,
    ];

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

    fn parse(s: &str) -> Option<ChildState> {
        ChildState::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether `job wait` is over for it (a Disconnected child waits for a `connect`).
    pub(crate) fn finished(self) -> bool {
        !matches!(self, ChildState::NotStarted | ChildState::Running)
    }
}

/// How a child runs: what a restarted daemon needs to pick it up again.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Run {
    /// An invocation (`invoke --as-job`). `instance_id` is its session's (on its computer);
    /// `remote`: reached through this client's handle; `temporary`: a temporary session,
    /// which does not outlive this daemon.
    Invocation {
        instance_id: Option<String>,
        remote: bool,
        temporary: bool,
    },
    /// A background job inside a session (`job start --session`): `session` is the session's
    /// instance id, `job` the job's id there.
    InSession { session: String, job: String },
}

pub(crate) struct Child {
    pub(crate) id: u32,
    pub(crate) location: String,
    /// The session as the user named it (empty for a temporary session): what a later
    /// `connect` names, to resume a Disconnected child.
    pub(crate) session: String,
    pub(crate) state: ChildState,
    pub(crate) exit_code: Option<i32>,
    pub(crate) reason: Option<String>,
    /// Output not yet received, in order.
    pub(crate) out: VecDeque<(Stream, Vec<u8>)>,
    pub(crate) unread: usize,
    pub(crate) control: Option<Control>,
    pub(crate) run: Run,
    /// Bytes of each stream (stdout, stderr) `job receive` has taken.
    pub(crate) taken: [u64; 2],
    /// Output bytes (both streams, as the host numbers them) received so far: where the
    /// stream continues after a restart.
    pub(crate) received: u64,
}

fn index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

impl Child {
    /// A running child job with nothing received yet.
    pub(crate) fn running(id: u32, location: &str, session: &str, run: Run) -> Child {
        Child {
            id,
            location: location.to_string(),
            session: session.to_string(),
            state: ChildState::Running,
            exit_code: None,
            reason: None,
            out: VecDeque::new(),
            unread: 0,
            control: None,
            run,
            taken: [0, 0],
            received: 0,
        }
    }

    /// Keeps output for `job receive`.
    pub(crate) fn keep(&mut self, stream: Stream, data: Vec<u8>) {
        if !data.is_empty() {
            self.unread += data.len();
            self.out.push_back((stream, data));
        }
    }

    /// `job receive` took the first `n` chunks.
    pub(crate) fn take_front(&mut self, n: usize) {
        for (stream, d) in self.out.drain(..n) {
            self.unread -= d.len();
            self.taken[index(stream)] += d.len() as u64;
        }
    }

    /// The command ended with `code` (a stopped child stays Stopped).
    pub(crate) fn ended(&mut self, code: i32) {
        self.exit_code = Some(code);
        if self.state != ChildState::Stopped {
            self.state = if code == 0 {
                ChildState::Completed
            } else {
                ChildState::Failed
            };
        }
        self.control = None;
    }

    /// Whether its output is kept in a file here (an invocation's); a job inside a session
    /// has its own files there.
    fn logs_output(&self) -> bool {
        matches!(self.run, Run::Invocation { .. })
    }
}

/// How a running child is stopped.
#[derive(Clone)]
pub(crate) enum Control {
    /// Frames (Ctrl-C, leaving) to its invocation's stream.
    Stream(mpsc::UnboundedSender<Request>),
    /// A background job inside a session: its process group is ended there.
    InSession { session: String, job: String },
}

pub(crate) struct Job {
    pub(crate) name: String,
    pub(crate) command: String,
    pub(crate) children: Vec<Child>,
}

impl Job {
    /// The parent's state, from its children's (a running child makes the job Running, and
    /// so on down the list).
    pub(crate) fn state(&self) -> ChildState {
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

    pub(crate) fn info(&self, id: u32) -> JobInfo {
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

/// The job table, shared with the tasks that follow the children.
pub struct Shared {
    pub(crate) table: std::sync::Mutex<BTreeMap<u32, Job>>,
    next_id: AtomicU32,
    /// Bumped on every change, for `wait` and `receive --wait`.
    pub(crate) changed: watch::Sender<u64>,
    /// Raised when output is received, for children waiting for room.
    pub(crate) room: Notify,
    quota: AtomicUsize,
    /// Where jobs are written down (`None`: they live in memory only).
    store: Option<store::Store>,
}

/// The client daemon's jobs.
pub struct Jobs {
    shared: Arc<Shared>,
    /// Unreceived output one child may hold before its command waits.
    pub(crate) quota: usize,
}

impl std::ops::Deref for Jobs {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Jobs {
    /// The jobs kept under `paths` (`None`: in memory only).
    pub(crate) fn at(paths: Option<Paths>) -> Jobs {
        let mut quota = tether_settings::get().output_quota;
        if paths.as_ref().is_some_and(|p| p.shared) {
            // A system daemon's view: unreceived output waits in root's memory.
            quota = quota.min(crate::limits::SYSTEM_JOB_QUOTA);
        }
        let store = paths.as_ref().map(store::Store::new);
        let loaded = store.as_ref().map(|s| s.load(quota)).unwrap_or_default();
        let next = loaded
            .jobs
            .iter()
            .flat_map(|(id, j)| std::iter::once(*id).chain(j.children.iter().map(|c| c.id)))
            .chain(loaded.ids)
            .max()
            .unwrap_or(0)
            + 1;
        let shared = Arc::new(Shared {
            table: std::sync::Mutex::new(loaded.jobs.into_iter().collect()),
            next_id: next.into(),
            changed: watch::channel(0).0,
            room: Notify::new(),
            quota: quota.into(),
            store,
        });
        // Picking the running children up again is the remote role's
        // (`remote::jobs::restore`), once the daemon they belong to exists.
        Jobs { shared, quota }
    }

    /// The table, for a task that follows a child (with this daemon's quota).
    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.quota.store(self.quota, Ordering::Relaxed);
        self.shared.clone()
    }
}

impl Shared {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Job>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    pub(crate) fn quota(&self) -> usize {
        self.quota.load(Ordering::Relaxed)
    }

    pub(crate) fn next_id(&self) -> u32 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn with_child<T>(
        &self,
        job: u32,
        idx: usize,
        f: impl FnOnce(&mut Child) -> T,
    ) -> Option<T> {
        let out = self
            .lock()
            .get_mut(&job)
            .and_then(|j| j.children.get_mut(idx))
            .map(f);
        self.bump();
        out
    }

    /// Changes a child and writes it down.
    pub(crate) fn update<T>(
        &self,
        job: u32,
        idx: usize,
        f: impl FnOnce(&mut Child) -> T,
    ) -> Option<T> {
        self.with_child(job, idx, |c| {
            let out = f(c);
            self.save_child(job, c);
            out
        })
    }

    pub(crate) fn save_child(&self, job: u32, c: &Child) {
        if let Some(s) = &self.store
            && let Err(e) = s.save_child(job, c)
        {
            tracing::warn!("job {job}: cannot write down child {}: {e}", c.id);
        }
    }

    /// Empties a child's output file once `job receive` took everything it held.
    pub(crate) fn taken_all(&self, job: u32, c: &Child) {
        if c.out.is_empty()
            && c.logs_output()
            && let Some(s) = &self.store
        {
            s.compact(job, c.id);
        }
    }

    /// Keeps output an invocation child received (its next bytes, from output byte
    /// `c.received` on): written down first, then kept for `job receive`.
    pub(crate) fn received(&self, job: u32, c: &mut Child, stream: Stream, data: &[u8]) {
        if let Some(s) = &self.store
            && let Err(e) = s.append(job, c.id, stream, c.received, data)
        {
            tracing::warn!(
                "job {job}: cannot write down the output of child {}: {e}",
                c.id
            );
            if c.reason.is_none() {
                c.reason = Some(format!(
                    "its output could not be written down ({e}): a restart of this client's \
                     daemon would lose what was not received"
                ));
            }
        }
        c.received += data.len() as u64;
        c.keep(stream, data.to_vec());
    }

    /// The jobs a query names (all when it names none); an unknown id is an error.
    pub(crate) fn select(&self, q: &JobQuery) -> Result<Vec<u32>, ErrorInfo> {
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

    /// Adds a job with these children, writes it down, and returns it as `job list` shows it.
    pub(crate) fn record(&self, id: u32, command: String, children: Vec<Child>) -> JobInfo {
        let job = Job {
            name: format!("Job{id}"),
            command,
            children,
        };
        let info = job.info(id);
        if let Some(s) = &self.store
            && let Err(e) = s.create(id, &job)
        {
            tracing::warn!("job {id}: cannot write it down: {e}");
        }
        self.lock().insert(id, job);
        self.bump();
        info
    }

    /// Forgets a job, here and on disk.
    pub(crate) fn forget(&self, id: u32) {
        let gone = self.lock().remove(&id);
        if gone.is_some()
            && let Some(s) = &self.store
        {
            s.remove(id);
        }
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

mod store;
