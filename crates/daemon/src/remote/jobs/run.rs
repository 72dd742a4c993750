//! Starting jobs, gathering their children's output, and picking children up again (after a
//! `connect`, or when a restarted daemon reads its jobs back).

use super::feed::Feed;
use crate::state::Daemon;
use crate::state::jobs::{Child, ChildState, Control, Run, Shared};
use crate::state::registry::Found;
use std::sync::Arc;
use tether_proto::{ErrorInfo, ErrorKind, JobInfo, JobStart, Request, Response, SessionInfo};
use tether_transport::paths::Paths;

/// `invoke --as-job`: starts every child, and answers once each has started or failed to. A
/// busy session fails the whole job at once (SPEC §3.3), and children already started are
/// stopped; any other failure only fails its own child.
pub async fn start(daemon: &Arc<Daemon>, req: JobStart) -> Result<JobInfo, ErrorInfo> {
    if daemon.system.is_some() {
        let kept = daemon.jobs.lock().len();
        let max = crate::limits::jobs_per_user();
        if kept >= max {
            return Err(ErrorInfo::new(
                ErrorKind::Busy,
                format!(
                    "user {} has {kept} jobs, the limit per user (TETHER_MAX_JOBS_PER_USER={max}); \
                     'tether job remove' some first",
                    daemon.owner
                ),
            ));
        }
    }
    if req.in_session {
        return super::in_session::start(daemon, req).await;
    }
    let jobs = daemon.jobs.shared();
    // Where each child runs, to pick it up again after a restart.
    let runs: Vec<Run> = {
        let reg = daemon.registry.lock().await;
        req.children
            .iter()
            .map(|c| {
                let (remote, temporary) = if c.spec.session.is_empty() {
                    (c.spec.remote.is_some(), true)
                } else {
                    let remote = matches!(reg.resolve(&c.spec.session), Ok(Found::Remote(_)));
                    (remote, false)
                };
                Run::Invocation {
                    instance_id: None,
                    remote,
                    temporary,
                }
            })
            .collect()
    };
    let starts = req.children.iter().map(|c| {
        let mut spec = c.spec.clone();
        spec.wait_timeout_ms = Some(0);
        spec.stdin = false;
        // The host keeps what is not acknowledged, and the child acknowledges output once
        // it is written down: a restarted daemon continues from there.
        spec.acked = true;
        let paths = daemon.paths.clone();
        async move { Feed::open(&paths, Request::Invoke(spec)).await }
    });
    let started: Vec<Result<Feed, ErrorInfo>> = futures_util::future::join_all(starts).await;
    if let Some(busy) = started.iter().find_map(|r| match r {
        Err(e) if e.kind == ErrorKind::Busy => Some(e.clone()),
        _ => None,
    }) {
        for feed in started.iter().flatten() {
            let _ = feed.control().send(Request::Abandon);
        }
        return Err(busy);
    }
    let id = jobs.next_id();
    let mut children = Vec::new();
    let mut follows = Vec::new();
    for (i, ((c, r), mut run)) in req.children.iter().zip(started).zip(runs).enumerate() {
        match r {
            Ok(feed) => {
                if let Run::Invocation { instance_id, .. } = &mut run {
                    *instance_id =
                        Some(feed.session.clone()).filter(|s| tether_proto::is_instance_id(s));
                }
                let mut child = Child::running(jobs.next_id(), &c.location, &c.spec.session, run);
                child.control = Some(Control::Stream(feed.control()));
                children.push(child);
                follows.push((i, feed));
            }
            Err(e) => {
                let mut child = Child::running(jobs.next_id(), &c.location, &c.spec.session, run);
                child.state = ChildState::Failed;
                child.reason = Some(e.message);
                children.push(child);
            }
        }
    }
    let info = jobs.record(id, req.command, children);
    for (i, feed) in follows {
        tokio::spawn(follow(jobs.clone(), id, i, feed));
    }
    Ok(info)
}

/// Gathers one child's output until its command ends: each chunk is written down, kept for
/// `job receive`, and only then acknowledged (so the host forgets it).
async fn follow(jobs: Arc<Shared>, job: u32, idx: usize, mut feed: Feed) {
    // Where the stream is, and whether it starts later than what we have (output lost) or
    // earlier (the host had not heard our last acknowledgement: those bytes are had).
    let mut seq = feed.from;
    let Some(gap) = jobs.with_child(job, idx, |c| feed.from.saturating_sub(c.received)) else {
        let _ = feed.control().send(Request::Abandon);
        return;
    };
    if gap > 0 {
        jobs.update(job, idx, |c| {
            c.reason = Some(format!(
                "{gap} bytes of its output were lost while it was picked up again"
            ));
            c.received = feed.from;
        });
    }
    loop {
        // Unreceived output past the quota: stop reading, so the command waits.
        loop {
            let room = jobs.room.notified();
            match jobs.with_child(job, idx, |c| c.unread) {
                None => {
                    // Removed (`job remove --force`): leave the command for good.
                    let _ = feed.control().send(Request::Abandon);
                    return;
                }
                Some(u) if u > jobs.quota() => room.await,
                Some(_) => break,
            }
        }
        match feed.next().await {
            Ok(Response::Output { stream, data }) => {
                let at = seq;
                seq += data.len() as u64;
                jobs.with_child(job, idx, |c| {
                    let had = c.received.saturating_sub(at).min(data.len() as u64) as usize;
                    if had < data.len() {
                        jobs.received(job, c, stream, &data[had..]);
                    }
                });
                feed.ack(seq);
            }
            Ok(Response::Exit(e)) => {
                // Written down before the host may forget it.
                jobs.update(job, idx, |c| c.ended(e.code));
                feed.ack(seq + 1);
                return;
            }
            Ok(_) => {}
            Err(e) => {
                jobs.update(job, idx, |c| {
                    if c.state != ChildState::Stopped {
                        c.state = if e.kind == ErrorKind::Lost {
                            ChildState::Disconnected
                        } else {
                            ChildState::Failed
                        };
                    }
                    c.reason = Some(e.message.clone());
                    c.control = None;
                });
                return;
            }
        }
    }
}

/// Picks up a child whose command went on without us: its stream from the first byte we have
/// not received. A local session's host is asked directly (`Resume`, kept until acknowledged);
/// a session on another computer through the relay (`Receive`, with its reconnection).
pub(super) async fn pick_up(jobs: Arc<Shared>, paths: Paths, job: u32, idx: usize) {
    let Some((run, received, session)) =
        jobs.with_child(job, idx, |c| (c.run.clone(), c.received, c.session.clone()))
    else {
        return;
    };
    let req = match run {
        Run::Invocation {
            instance_id: Some(iid),
            remote: false,
            temporary: false,
        } => Request::Resume {
            session: iid,
            from: received,
            keep_stdin: false,
            keep: false,
        },
        Run::Invocation {
            instance_id: Some(iid),
            remote: true,
            temporary: false,
        } => Request::Receive(tether_proto::SessionList {
            sessions: vec![iid],
            ..Default::default()
        }),
        _ => return,
    };
    match Feed::open(&paths, req).await {
        Ok(feed) => {
            let stopped = jobs.update(job, idx, |c| {
                c.control = Some(Control::Stream(feed.control()));
                if c.state == ChildState::Stopped {
                    // `job stop` came while it was being picked up.
                    let _ = feed.control().send(Request::Cancel);
                    return true;
                }
                c.state = ChildState::Running;
                c.reason = None;
                false
            });
            if stopped.is_some() {
                follow(jobs, job, idx, feed).await;
            }
        }
        Err(e) => {
            let word = if session.is_empty() {
                "SESSION"
            } else {
                &session
            };
            jobs.update(job, idx, |c| {
                let (state, how) = match e.kind {
                    ErrorKind::NotFound | ErrorKind::Usage | ErrorKind::Permission => {
                        (ChildState::Failed, String::new())
                    }
                    _ => (
                        ChildState::Disconnected,
                        format!("; 'tether connect {word}' picks it up again"),
                    ),
                };
                if c.state != ChildState::Stopped {
                    c.state = state;
                }
                c.reason = Some(format!("{}{how}", e.message));
                c.control = None;
            });
        }
    }
}

/// After `connect`: Disconnected children in those sessions resume, collecting what their
/// commands wrote meanwhile and the rest (nothing twice: from the first byte not received).
pub fn reconnected(daemon: &Arc<Daemon>, sessions: &[SessionInfo]) {
    let names = |c: &Child| {
        let iid = match &c.run {
            Run::Invocation {
                instance_id: Some(i),
                temporary: false,
                ..
            } => i.as_str(),
            _ => return false,
        };
        sessions.iter().any(|s| {
            s.instance_id == iid
                || (!c.session.is_empty() && (s.name == c.session || s.id.to_string() == c.session))
        })
    };
    let jobs = daemon.jobs.shared();
    let mut resume = Vec::new();
    {
        let mut t = jobs.lock();
        for (id, job) in t.iter_mut() {
            for (i, c) in job.children.iter_mut().enumerate() {
                if c.state == ChildState::Disconnected && names(c) {
                    c.state = ChildState::Running;
                    c.reason = None;
                    resume.push((*id, i));
                }
            }
        }
    }
    jobs.bump();
    for (job, idx) in resume {
        tokio::spawn(pick_up(jobs.clone(), daemon.paths.clone(), job, idx));
    }
}
