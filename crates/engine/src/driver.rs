//! Admitting one invocation: the checks a request must pass (size, NUL bytes, a broken or
//! restricted session, the holder), waiting for a busy session (given up on Ctrl-C or
//! hang-up), and the session's busy and idle bookkeeping around the run itself
//! ([`crate::invocation`]).

use crate::requests::Requests;
use crate::session::Host;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tether_proto::{ErrorInfo, ErrorKind, ExitInfo, InvokeSpec, Response, State};
use tether_transport::FrameWriter;
use tokio::net::unix::OwnedWriteHalf;

/// Sends an error on a connection whose invocation never started; true if it was delivered.
async fn refuse(writer: &mut FrameWriter<OwnedWriteHalf>, kind: ErrorKind, msg: String) -> bool {
    writer
        .send(&Response::Error(ErrorInfo::new(kind, msg)))
        .await
        .is_ok()
}

/// Largest script (with its arguments) one invocation may carry: scripts are code, and data
/// belongs on standard input, which streams.
const MAX_SCRIPT: usize = 4 << 20;

/// Runs one invocation, from waiting for the session to sending `Exit`. Returns whether the
/// connection can serve another request.
pub(crate) async fn invoke(
    host: Arc<Host>,
    spec: InvokeSpec,
    requests: &mut Requests,
    writer: &mut FrameWriter<OwnedWriteHalf>,
) -> bool {
    let name = host.spec.name.clone();
    let size = spec.script.len() + spec.args.iter().map(String::len).sum::<usize>();
    if size > MAX_SCRIPT {
        let msg = format!(
            "session {name}: the script and its arguments are {size} bytes; the limit is {} MiB \
             (pass data on standard input instead)",
            MAX_SCRIPT >> 20
        );
        return refuse(writer, ErrorKind::Usage, msg).await;
    }
    if spec.probe && spec.tty.is_some() {
        let msg = format!("session {name}: a prompt's probe never runs on the terminal");
        return refuse(writer, ErrorKind::Usage, msg).await;
    }
    if spec.script.contains('\0') || spec.args.iter().any(|a| a.contains('\0')) {
        let msg = format!("session {name}: scripts and arguments cannot contain NUL bytes");
        return refuse(writer, ErrorKind::Usage, msg).await;
    }
    let reason = host.lock_inner().reason.clone();
    if let Some(reason) = reason {
        let msg = format!("session {name} is broken ({reason}); remove it and create a new one");
        return refuse(writer, ErrorKind::NotFound, msg).await;
    }
    if let Some(rules) = &host.spec.restricted {
        let refused = if spec.args.is_empty() {
            crate::restricted::check(rules, &spec.script).err()
        } else {
            Some("--arg (a restricted session has no script to give it to)".into())
        };
        if let Some(why) = refused {
            let msg = format!("command not allowed in configuration {}: {why}", rules.name);
            return refuse(writer, ErrorKind::Permission, msg).await;
        }
    }
    let client = host.client_or_me(spec.client.as_ref());
    host.claim_spare(&client);
    if let Err(e) = host.check_holder(&client) {
        return refuse(writer, e.kind, e.message).await;
    }
    // A client that vanished (killed, its link lost) and now runs another command takes its
    // session back: it waits for the command it left behind, like any busy session's.
    let returning = host.returning(&client);
    if !returning && let Some(e) = unusable(&host) {
        return refuse(writer, e.kind, e.message).await;
    }
    // A Ctrl-C or hang-up while we wait for a busy session gives up: a command the user has
    // abandoned must never start later.
    let seen = requests.stop.borrow().cancels;
    let mut stop = requests.stop.clone();
    let lock = host.lock.clone();
    let acquire = async move {
        match spec.wait_timeout_ms {
            Some(0) => lock.try_acquire_owned().ok(),
            Some(ms) => tokio::time::timeout(Duration::from_millis(ms), lock.acquire_owned())
                .await
                .ok()
                .and_then(|r| r.ok()),
            None => lock.acquire_owned().await.ok(),
        }
    };
    let permit = tokio::select! {
        p = acquire => p,
        _ = async { let _ = stop.wait_for(|s| s.hung_up || s.cancels > seen).await; } => {
            let exit = ExitInfo { code: 130, cancelled: true, ..Default::default() };
            return writer.send(&Response::Exit(exit)).await.is_ok();
        }
    };
    let Some(_permit) = permit else {
        let msg = match returning {
            true => format!(
                "session {name} is still running the command its client left; \
                 'tether receive {name}' shows it, or wait longer (--wait-timeout)"
            ),
            false => format!("session {name} is busy"),
        };
        return refuse(writer, ErrorKind::Busy, msg).await;
    };
    // Taken back now that nothing runs (its client may also have vanished while this one
    // waited), unless someone else connected it meanwhile.
    let note = match host.returning(&client) {
        true => host.take_back(&client),
        false => None,
    };
    if let Some(e) = unusable(&host) {
        return refuse(writer, e.kind, e.message).await;
    }
    let reason = host.lock_inner().reason.clone();
    if let Some(reason) = reason {
        let msg = format!("session {name} is broken ({reason}); remove it and create a new one");
        return refuse(writer, ErrorKind::NotFound, msg).await;
    }
    // Watched from before the session is busy: a `disconnect` that sees it busy bumps this,
    // and the run must see that bump however early it comes.
    let detach = host.detach.subscribe();
    // A prompt's helper (syntax check, completion) is not the user's: it leaves the idle
    // clock as it was.
    let id = {
        let mut inner = host.lock_inner();
        inner.busy = true;
        if !spec.probe {
            inner.last_used = Instant::now();
        }
        inner.next_inv += 1;
        inner.next_inv - 1
    };
    let result = crate::invocation::run(&host, (id, note, detach), &spec, requests, writer).await;
    {
        let mut inner = host.lock_inner();
        inner.busy = false;
        if !spec.probe {
            inner.last_used = Instant::now();
        }
    }
    let alive = match result {
        Ok(client_alive) => client_alive,
        Err(e) => {
            tracing::debug!("session {name}: invocation {id} ended early: {e}");
            false
        }
    };
    // A shell that died during the invocation: now that its Exit is out, the session is Broken.
    if let Some(code) = *host.shell.exited.borrow() {
        host.finish(
            State::Broken,
            format!("the shell exited with status {code}"),
        );
        return false;
    }
    alive
}

/// Why a session cannot take a command now: Disconnected (another client may have it), or
/// holding the output of a command that ran while it was.
fn unusable(host: &Host) -> Option<ErrorInfo> {
    let name = &host.spec.name;
    if host.lock_inner().state == State::Disconnected {
        let msg = format!("session {name} is Disconnected; 'tether connect {name}' reattaches it");
        return Some(ErrorInfo::new(ErrorKind::NotFound, msg));
    }
    if host.outbox.pending() {
        let msg = format!(
            "session {name} holds output of a command that ran while disconnected; \
             'tether receive {name}' gets it"
        );
        return Some(ErrorInfo::new(ErrorKind::Busy, msg));
    }
    None
}
