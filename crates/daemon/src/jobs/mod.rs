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
    pub(crate) fn finished(self) -> bool {
        !matches!(self, ChildState::NotStarted | ChildState::Running)
    }
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
}

impl Child {
    /// A running child job with nothing received yet.
    pub(crate) fn running(id: u32, location: &str, session: &str) -> Child {
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
        }
    }

    /// Keeps output for `job receive`.
    pub(crate) fn keep(&mut self, stream: Stream, data: Vec<u8>) {
        if !data.is_empty() {
            self.unread += data.len();
            self.out.push_back((stream, data));
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
}

/// How a running child is stopped.
#[derive(Clone)]
pub(crate) enum Control {
    /// Ctrl-C to its invocation.
    Invocation(InvocationControl),
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

/// The client daemon's jobs.
pub struct Jobs {
    pub(crate) table: std::sync::Mutex<BTreeMap<u32, Job>>,
    next_id: std::sync::atomic::AtomicU32,
    /// Bumped on every change, for `wait` and `receive --wait`.
    pub(crate) changed: watch::Sender<u64>,
    /// Raised when output is received, for children waiting for room.
    pub(crate) room: Notify,
    pub(crate) quota: usize,
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

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Job>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    pub(crate) fn next_id(&self) -> u32 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
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

    /// Adds a job with these children and returns it as `job list` shows it.
    pub(crate) fn record(&self, id: u32, command: String, children: Vec<Child>) -> JobInfo {
        let job = Job {
            name: format!("Job{id}"),
            command,
            children,
        };
        let info = job.info(id);
        self.lock().insert(id, job);
        self.bump();
        info
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

mod collect;
mod run;
pub use collect::{receive, remove, stop, wait};
pub use run::{reconnected, start};
