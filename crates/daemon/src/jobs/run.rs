//! Starting jobs and gathering their children's output.

use super::*;

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
        return crate::session_jobs::start(daemon, req).await;
    }
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
        let mut child = Child::running(jobs.next_id(), &c.location, &c.spec.session);
        match r {
            Ok(inv) => {
                child.control = Some(Control::Invocation(inv.control()));
                runs.push((i, inv));
            }
            Err(e) => {
                child.state = ChildState::Failed;
                child.reason = Some(e.to_string());
            }
        }
        children.push(child);
    }
    let info = jobs.record(id, req.command, children);
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
                c.keep(stream, data);
                false
            }
            Ok(Event::Notice(_)) => false,
            Ok(Event::Exit(e)) => {
                c.ended(e.code);
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
                    daemon.jobs.with_child(job, idx, |c| {
                        c.control = Some(Control::Invocation(inv.control()))
                    });
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
