//! Jobs (SPEC §3.17, §3.18), as the client runs them: starting them, following each child's
//! output into the job table, collecting it for `job receive`, stopping and removing them, and
//! picking children up again after a `connect` or a restart.
//!
//! The table itself is shared state ([`crate::state::jobs`]). A child job is a client of this
//! same daemon (through its own socket, [`feed`]), so it reaches local sessions, temporary
//! ones and other computers exactly as `invoke` does; a job inside a session is started, read
//! and stopped by that session's computer through the [`Here`](crate::state::Here) seam.

mod collect;
pub(crate) mod feed;
mod in_session;
mod run;

pub use collect::{receive, remove, stop, wait};
pub use run::{reconnected, start};

use crate::state::Daemon;
use crate::state::jobs::{ChildState, Run};

/// A restarted daemon's jobs, just read back: children that were running (or Disconnected,
/// as a `daemon stop` leaves those on other computers) are picked up again; a job inside a
/// session reads its files again from where `job receive` had got to. A temporary session
/// does not outlive the daemon that made it, so its child is over.
pub(crate) fn restore(daemon: &Daemon) {
    // Only a daemon that runs has tasks to follow its children (not a unit test's).
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    let jobs = &daemon.jobs.shared();
    let paths = &daemon.paths;
    let mut invocations = Vec::new();
    let mut in_session = Vec::new();
    {
        let mut t = jobs.lock();
        for (id, job) in t.iter_mut() {
            for (i, c) in job.children.iter_mut().enumerate() {
                let again = !c.state.finished() || c.state == ChildState::Disconnected;
                match &c.run {
                    Run::InSession { session, job: sj } => {
                        in_session.push((*id, i, session.clone(), sj.clone(), c.taken));
                    }
                    Run::Invocation {
                        instance_id: Some(_),
                        temporary: false,
                        ..
                    } if again => invocations.push((*id, i)),
                    Run::Invocation { temporary, .. } if again => {
                        c.state = ChildState::Failed;
                        c.reason = Some(if *temporary {
                            "this client's daemon restarted while it ran, and a temporary \
                             session does not outlive that: its output from then on is lost"
                                .into()
                        } else {
                            "this client's daemon restarted before it started".into()
                        });
                        jobs.save_child(*id, c);
                    }
                    _ => {}
                }
            }
        }
    }
    jobs.bump();
    for (job, idx) in invocations {
        tokio::spawn(run::pick_up(jobs.clone(), paths.clone(), job, idx));
    }
    for (job, idx, session, sj, taken) in in_session {
        let follow = in_session::follow_output(
            jobs.clone(),
            paths.clone(),
            (job, idx),
            (session, sj),
            taken,
        );
        tokio::spawn(follow);
    }
}
