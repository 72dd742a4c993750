//! Jobs (SPEC §3.17): invocations that run in the background in the client daemon, one child
//! job per target, collected later with `job receive`.

use crate::{InvokeSpec, Stream};
use serde::{Deserialize, Serialize};

/// `invoke --as-job`: one child per target, each a ready invocation (a session, a computer, or
/// neither for a temporary local session).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct JobStart {
    /// The script, as `job list` shows it.
    pub command: String,
    pub children: Vec<JobChild>,
    /// `job start --session`: each child runs in the background inside its session (forked
    /// from the session's shell), not as one of its commands.
    pub in_session: bool,
}

/// A background job inside a session (`job start --session`), asked of the daemon that holds
/// the session (or, through it, of the session's computer).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SessionJob {
    /// The session, by Name, Id or InstanceId.
    pub session: String,
    /// The job's id inside the session (a UUID).
    pub job: String,
    pub action: SessionJobAction,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum SessionJobAction {
    /// Fork the script from the session's shell; answered with `Ok`.
    Start { script: String },
    /// Output from these byte offsets on; answered with `SessionJobData`.
    Read { out_from: u64, err_from: u64 },
    /// Stop it; answered with `Ok`.
    Stop,
}

/// What a background job in a session wrote from the offsets asked, and its exit status once
/// it ended (after everything it wrote).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct SessionJobData {
    #[serde(with = "serde_bytes")]
    pub out: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub err: Vec<u8>,
    pub exit: Option<i32>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct JobChild {
    /// Where it runs, as users name it (`localhost`, a computer, or `COMPUTER:SESSION`).
    pub location: String,
    pub spec: InvokeSpec,
}

/// Which jobs a job command is about (empty: all of them).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct JobQuery {
    pub ids: Vec<u32>,
    /// `wait --any`: the first to finish is enough.
    pub any: bool,
    /// `wait --timeout` in milliseconds (`None`: forever).
    pub timeout_ms: Option<u64>,
    /// `receive --keep`: leave what is returned for the next receive.
    pub keep: bool,
    /// `receive --wait`: stream until the jobs end.
    pub wait: bool,
    /// `remove --force`: stop running jobs first.
    pub force: bool,
}

/// A job as `job list` shows it. Field names are the JSON names.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct JobInfo {
    pub id: u32,
    pub name: String,
    /// `NotStarted`, `Running`, `Completed`, `Failed`, `Stopped` or `Disconnected`.
    pub state: String,
    pub has_more_data: bool,
    pub location: String,
    pub command: String,
    pub children: Vec<ChildJobInfo>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ChildJobInfo {
    pub id: u32,
    pub location: String,
    pub state: String,
    pub has_more_data: bool,
    /// The command's exit status, once it ended.
    pub exit_code: Option<i32>,
    /// Why it failed or stopped, when tether knows more than the exit status.
    pub reason: Option<String>,
}

/// Output of one child job, in the order it was produced.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct JobChunk {
    pub job: u32,
    pub location: String,
    pub stream: Stream,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}
