//! Stopping a running command (Ctrl-C, a timeout, a client leaving for good), as an explicit
//! state machine: SIGINT first (to the shell, whose trap abandons the rest of the script, and
//! to the command's processes), SIGKILL of the command's processes [`ESCALATE_KILL`] later,
//! and the shell itself [`ESCALATE_SHELL`] after that (a builtin loop that ignores INT; the
//! session is then Broken). The machine only decides; the invocation does what each [`Step`]
//! says, so the escalation is tested here without processes or real clocks.

use std::time::{Duration, Instant};

/// From the first SIGINT to SIGKILL of the command's processes.
pub(crate) const ESCALATE_KILL: Duration = Duration::from_secs(2);
/// From that SIGKILL to SIGKILL of the shell.
pub(crate) const ESCALATE_SHELL: Duration = Duration::from_secs(5);

/// How far stopping the command has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Running,
    Interrupted { at: Instant },
    Killed { at: Instant },
    ShellKilled,
}

/// What the invocation must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// SIGINT to the shell, then to the command's processes.
    Interrupt,
    /// SIGKILL to the command's processes, SIGINT to the shell again.
    KillCommand,
    /// SIGKILL to the shell.
    KillShell,
}

#[derive(Debug)]
pub(crate) struct Stopping {
    stage: Stage,
    started: Instant,
    timeout: Option<Duration>,
    /// Stopped by Ctrl-C (or a client leaving).
    pub cancelled: bool,
    /// Stopped by `--timeout`.
    pub timed_out: bool,
}

impl Stopping {
    /// A command started at `started`, stopped after `timeout` if it has one.
    pub fn new(started: Instant, timeout: Option<Duration>) -> Stopping {
        Stopping {
            stage: Stage::Running,
            started,
            timeout: timeout.filter(|t| !t.is_zero()),
            cancelled: false,
            timed_out: false,
        }
    }

    /// Ctrl-C: the first stage, once; later ones change nothing (escalation is timed).
    pub fn cancel(&mut self, now: Instant) -> Option<Step> {
        if self.stage != Stage::Running {
            return None;
        }
        self.cancelled = true;
        self.stage = Stage::Interrupted { at: now };
        Some(Step::Interrupt)
    }

    /// When [`Stopping::tick`] is due next: the timeout while the command runs, the next
    /// escalation once it is being stopped, never after the shell was killed.
    pub fn due(&self) -> Option<Instant> {
        match self.stage {
            Stage::Running => self.timeout.map(|t| self.started + t),
            Stage::Interrupted { at } => Some(at + ESCALATE_KILL),
            Stage::Killed { at } => Some(at + ESCALATE_SHELL),
            Stage::ShellKilled => None,
        }
    }

    /// The due time has come.
    pub fn tick(&mut self, now: Instant) -> Option<Step> {
        if self.due().is_none_or(|due| now < due) {
            return None;
        }
        let (stage, step) = match self.stage {
            Stage::Running => {
                self.timed_out = true;
                (Stage::Interrupted { at: now }, Step::Interrupt)
            }
            Stage::Interrupted { .. } => (Stage::Killed { at: now }, Step::KillCommand),
            Stage::Killed { .. } => (Stage::ShellKilled, Step::KillShell),
            Stage::ShellKilled => return None,
        };
        self.stage = stage;
        Some(step)
    }

    /// The status to report: a stopped command fails even if the shell's `$?` after an
    /// interrupted builtin loop says 0.
    pub fn status(&self, code: i32) -> i32 {
        if (self.cancelled || self.timed_out) && code == 0 {
            130
        } else {
            code
        }
    }

    /// What `ExitInfo::cancelled` says: stopped by Ctrl-C, not by the timeout.
    pub fn cancelled_only(&self) -> bool {
        self.cancelled && !self.timed_out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn ctrl_c_interrupts_once_then_escalates_on_time() {
        let t0 = Instant::now();
        let mut s = Stopping::new(t0, None);
        assert_eq!(s.due(), None, "no timeout: nothing is due");
        assert_eq!(s.cancel(t0 + secs(1)), Some(Step::Interrupt));
        assert_eq!(
            s.cancel(t0 + secs(1)),
            None,
            "a second Ctrl-C is not a second stage"
        );
        assert_eq!(s.due(), Some(t0 + secs(1) + ESCALATE_KILL));
        assert_eq!(s.tick(t0 + secs(2)), None, "not yet due");
        assert_eq!(s.tick(t0 + secs(3)), Some(Step::KillCommand));
        assert_eq!(s.due(), Some(t0 + secs(3) + ESCALATE_SHELL));
        assert_eq!(s.tick(t0 + secs(8)), Some(Step::KillShell));
        assert_eq!(s.due(), None);
        assert_eq!(s.tick(t0 + secs(100)), None);
        assert!(s.cancelled_only());
        assert_eq!(s.status(0), 130);
        assert_eq!(s.status(2), 2);
    }

    #[test]
    fn a_timeout_interrupts_and_says_so() {
        let t0 = Instant::now();
        let mut s = Stopping::new(t0, Some(secs(10)));
        assert_eq!(s.due(), Some(t0 + secs(10)));
        assert_eq!(s.tick(t0 + secs(9)), None);
        assert_eq!(s.tick(t0 + secs(10)), Some(Step::Interrupt));
        assert!(s.timed_out && !s.cancelled_only());
        // Ctrl-C during the escalation changes nothing.
        assert_eq!(s.cancel(t0 + secs(11)), None);
        assert_eq!(
            s.tick(t0 + secs(10) + ESCALATE_KILL),
            Some(Step::KillCommand)
        );
        assert_eq!(s.status(0), 130);
    }

    #[test]
    fn an_untouched_command_reports_its_own_status() {
        let s = Stopping::new(Instant::now(), Some(Duration::ZERO));
        assert_eq!(s.due(), None, "a zero timeout means none");
        assert_eq!(s.status(0), 0);
        assert!(!s.cancelled_only());
    }
}
