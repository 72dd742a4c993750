//! Stdins that CLIs give to the relays carrying their commands to other computers
//! (`Request::GiveStdin`). A relay that may take its CLI's stdin registers a token, tells the
//! CLI (`Response::Relayed`), and waits for the pipe; the CLI hands it over on a connection of
//! its own. Only the process at the other end of the relay's connection may give to it, so a
//! second client of the same user, or another user of a system daemon, can neither feed a
//! command nor learn anything by trying: every refusal reads the same.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tether_proto::{ErrorInfo, ErrorKind};
use tokio::sync::oneshot;

/// The relays waiting for a stdin, by token.
#[derive(Default)]
pub struct Gifts {
    waiting: Mutex<HashMap<u64, (i32, oneshot::Sender<OwnedFd>)>>,
    next: AtomicU64,
}

/// A relay's place in [`Gifts`]. Dropping it takes the place back, so no token outlives its
/// relay.
pub struct Registration<'a> {
    gifts: &'a Gifts,
    pub token: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.gifts.lock().remove(&self.token);
    }
}

impl Gifts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (i32, oneshot::Sender<OwnedFd>)>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for the stdin of the CLI whose process is `pid`, and where it arrives.
    pub fn register(&self, pid: i32) -> (Registration<'_>, oneshot::Receiver<OwnedFd>) {
        let token = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, given) = oneshot::channel();
        self.lock().insert(token, (pid, tx));
        (Registration { gifts: self, token }, given)
    }

    /// `fd`, from the process `pid`, for the relay `token`. Refused (one message for every
    /// reason) unless that relay waits for a stdin from that very process.
    pub fn give(&self, token: u64, pid: Option<i32>, fd: Option<OwnedFd>) -> Result<(), ErrorInfo> {
        let refused = || {
            ErrorInfo::new(
                ErrorKind::Permission,
                "no command of this process waits for its standard input here",
            )
        };
        let (Some(pid), Some(fd)) = (pid, fd) else {
            return Err(refused());
        };
        let mut waiting = self.lock();
        match waiting.get(&token) {
            Some((p, _)) if *p == pid => {}
            _ => return Err(refused()),
        }
        let Some((_, tx)) = waiting.remove(&token) else {
            return Err(refused());
        };
        drop(waiting);
        tx.send(fd).map_err(|_| refused())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    #[test]
    fn only_the_relays_own_process_gives_once_and_a_gone_relay_takes_nothing() {
        let gifts = Gifts::default();
        let (r, mut given) = gifts.register(100);
        assert!(
            gifts.give(r.token, Some(101), Some(fd())).is_err(),
            "another process"
        );
        assert!(
            gifts.give(r.token + 1, Some(100), Some(fd())).is_err(),
            "another token"
        );
        assert!(
            gifts.give(r.token, None, Some(fd())).is_err(),
            "a process not known"
        );
        assert!(
            gifts.give(r.token, Some(100), None).is_err(),
            "no descriptor"
        );
        assert!(given.try_recv().is_err(), "nothing given yet");
        assert!(gifts.give(r.token, Some(100), Some(fd())).is_ok());
        assert!(given.try_recv().is_ok());
        assert!(
            gifts.give(r.token, Some(100), Some(fd())).is_err(),
            "only once"
        );
        let token = {
            let (gone, _) = gifts.register(100);
            gone.token
        };
        assert!(
            gifts.give(token, Some(100), Some(fd())).is_err(),
            "its relay ended"
        );
        assert!(gifts.lock().is_empty(), "nothing left behind");
    }
}
