//! Jobs inside a session (SPEC §3.18, `job start --session N SCRIPT`), as the client's job
//! table sees them: each is started through the session's computer (the local role, through
//! the [`Here`](crate::state::Here) seam, which forwards to another computer when the session
//! is there) and its output is then followed into its child job like any other's.

use crate::state::Daemon;
use crate::state::jobs::{Child, ChildState, Control, Run, Shared};
use crate::state::registry::Found;
use std::sync::Arc;
use tether_proto::{
    ErrorInfo, ErrorKind, Request, Response, SessionJob, SessionJobAction, SessionJobData,
};

/// `job start --session N SCRIPT`: forks the job in each named session, then follows its
/// output from here like any child job's.
pub async fn start(
    daemon: &Arc<Daemon>,
    req: tether_proto::JobStart,
) -> Result<tether_proto::JobInfo, ErrorInfo> {
    let jobs = daemon.jobs.shared();
    let id = jobs.next_id();
    let mut children = Vec::new();
    for c in &req.children {
        let job = uuid::Uuid::new_v4().to_string();
        // Named by its instance id from now on: that is what a restarted daemon asks for.
        let session = {
            let reg = daemon.registry.lock().await;
            match reg.resolve(&c.spec.session)? {
                Found::Local(m) => m.info.instance_id.clone(),
                Found::Remote(h) => h.info.instance_id.clone(),
            }
        };
        let start = SessionJob {
            session: session.clone(),
            job: job.clone(),
            action: SessionJobAction::Start {
                script: c.spec.script.clone(),
            },
        };
        daemon.here.session_job(daemon, start, &daemon.me).await?;
        let run = Run::InSession {
            session: session.clone(),
            job: job.clone(),
        };
        let mut child = Child::running(jobs.next_id(), &c.location, &c.spec.session, run);
        child.control = Some(Control::InSession { session, job });
        children.push(child);
    }
    let follow: Vec<(usize, String, String)> = children
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match &c.control {
            Some(Control::InSession { session, job }) => Some((i, session.clone(), job.clone())),
            _ => None,
        })
        .collect();
    let info = jobs.record(id, req.command, children);
    for (i, session, job) in follow {
        let paths = daemon.paths.clone();
        tokio::spawn(follow_output(
            jobs.clone(),
            paths,
            (id, i),
            (session, job),
            [0, 0],
        ));
    }
    Ok(info)
}

/// Polls a session job's output into its child job, from these offsets of its stdout and
/// stderr files, until it ends. It asks this daemon (its own socket), which reads the files
/// or asks the session's computer; a computer out of reach is tried again, and the job goes
/// on there meanwhile. A child already over (read back by a restarted daemon) only collects
/// what was not yet received.
pub(crate) async fn follow_output(
    jobs: Arc<Shared>,
    paths: tether_transport::paths::Paths,
    (id, idx): (u32, usize),
    (session, job): (String, String),
    [mut out_from, mut err_from]: [u64; 2],
) {
    use std::time::Duration;
    let mut conn = super::feed::Conn::new(paths);
    loop {
        // A stopped job is read once more (what it wrote before it was stopped), then left.
        let last = loop {
            let room = jobs.room.notified();
            match jobs.with_child(id, idx, |c| (c.unread, c.state)) {
                None => return,
                Some((u, _)) if u > jobs.quota() => room.await,
                Some((_, s)) => break s.finished(),
            }
        };
        let req = SessionJob {
            session: session.clone(),
            job: job.clone(),
            action: SessionJobAction::Read { out_from, err_from },
        };
        let data = match conn.call(Request::SessionJob(req)).await {
            Ok(Response::SessionJobData(d)) => d,
            Ok(_) => SessionJobData::default(),
            // Tried again while the job runs; one already over is not worth waiting for.
            Err(e) if matches!(e.kind, ErrorKind::Connection | ErrorKind::Lost) && !last => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => {
                jobs.update(id, idx, |c| {
                    if !c.state.finished() {
                        c.state = ChildState::Failed;
                        c.reason = Some(e.message.clone());
                    }
                });
                return;
            }
        };
        let got = !data.out.is_empty() || !data.err.is_empty();
        out_from += data.out.len() as u64;
        err_from += data.err.len() as u64;
        let done = jobs.with_child(id, idx, |c| {
            c.keep(tether_proto::Stream::Stdout, data.out);
            c.keep(tether_proto::Stream::Stderr, data.err);
            if let Some(code) = data.exit {
                let was = (c.state, c.exit_code);
                c.ended(code);
                if (c.state, c.exit_code) != was {
                    jobs.save_child(id, c);
                }
                return true;
            }
            false
        });
        if done != Some(false) || (last && !got) {
            return;
        }
        if !got {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
