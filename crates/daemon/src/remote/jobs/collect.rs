//! Waiting for jobs, collecting their output, stopping and removing them.

use crate::state::jobs::{ChildState, Control, FRAME_DATA, Jobs, Shared};
use crate::state::{Daemon, Writer};
use std::collections::HashMap;
use tether_proto::{ErrorInfo, ErrorKind, JobChunk, JobInfo, JobQuery, Request};

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
/// Also says whether every job is over. What is taken is written down (and a child's output
/// file emptied once everything in it is taken), so a restarted daemon never repeats it.
fn take(jobs: &Shared, ids: &[u32], keep: bool, sent: &mut Sent) -> (Vec<JobChunk>, bool) {
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
                } else if n > 0 {
                    c.take_front(n);
                    jobs.save_child(*id, c);
                    jobs.taken_all(*id, c);
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
pub async fn stop(daemon: &Daemon, q: &JobQuery) -> Result<Vec<JobInfo>, ErrorInfo> {
    let jobs = &daemon.jobs;
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
                    jobs.save_child(*id, c);
                }
            }
        }
    }
    jobs.bump();
    for c in controls {
        match c {
            Control::Stream(c) => {
                let _ = c.send(Request::Cancel);
            }
            Control::InSession { session, job } => {
                let req = tether_proto::SessionJob {
                    session,
                    job,
                    action: tether_proto::SessionJobAction::Stop,
                };
                let _ = daemon.here.session_job(daemon, req, &daemon.me).await;
            }
        }
    }
    jobs.list(&JobQuery {
        ids,
        ..Default::default()
    })
}

/// `job remove`: forgets finished jobs; a running one only with `force` (it is stopped first).
pub async fn remove(daemon: &Daemon, q: &JobQuery) -> Result<(), ErrorInfo> {
    let jobs = &daemon.jobs;
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
            daemon,
            &JobQuery {
                ids: running,
                ..Default::default()
            },
        )
        .await?;
    }
    for id in &ids {
        jobs.forget(*id);
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
    w: &mut Writer,
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
