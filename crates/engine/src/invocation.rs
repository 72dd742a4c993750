//! One invocation, once admitted ([`crate::driver`]): its FIFOs and wrapper, streaming output,
//! the status record, Ctrl-C and timeouts ([`crate::stopping`]), a client that goes away or
//! is let go ([`crate::deliver::Route`]), and the end: what is left in the FIFOs, the `Exit`.
//!
//! Ordering guarantee: the shell writes the status record only after the brace group that ran
//! the command has finished, so every byte the command itself wrote is already in the FIFOs
//! when the record arrives. We then read what is buffered (bounded) and only then send `Exit`.
//! Output that background jobs write later stays with this invocation (its own FIFOs) and is
//! never seen by the next one.

use crate::deliver::{Route, drain, forward};
use crate::fifos::{OutFifo, linger, mkfifo};
use crate::procs;
use crate::session::Host;
use crate::shell::{self, InvocationPaths};
use crate::stopping::{Step, Stopping};
use nix::sys::signal::Signal;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tether_proto::{
    ErrorInfo, ErrorKind, ExitInfo, InvokeSpec, OUTPUT_CHUNK, Request, Response, Stream,
};
use tether_transport::FrameWriter;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::watch;

/// Returns whether the client is still there to serve another request. `note`: a notice for
/// the client once the command has started (what taking the session back discarded);
/// `detach`: the session's `disconnect` signal, watched since before it was marked busy.
pub(crate) async fn run(
    host: &Arc<Host>,
    (id, note, mut detach): (u64, Option<String>, watch::Receiver<u64>),
    spec: &InvokeSpec,
    requests: &mut crate::requests::Requests,
    writer: &mut FrameWriter<OwnedWriteHalf>,
) -> Result<bool, tether_transport::TransportError> {
    let dir = &host.shell.fifo_dir;
    let spare = host
        .shell
        .spare
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let (mut out, mut err) = match spare {
        Some(pair) => pair,
        None => (
            OutFifo::open(dir.join(format!("o.{id}")), Stream::Stdout)?,
            OutFifo::open(dir.join(format!("e.{id}")), Stream::Stderr)?,
        ),
    };
    let stdin_path = dir.join(format!("i.{id}"));
    // The process of this invocation's client: the only one its FIFOs are lent to.
    let client_pid = crate::lend::peer_pid(writer);
    // Made when the invocation is stopped, before the shell is signalled (`shell::begin`).
    let cancelled = dir.join(format!("x.{id}"));
    host.stdin.close();
    // A pooled invocation starts as in a new session: `$?` is 0.
    let last = match host.spec.pooled {
        true => 0,
        false => host.lock_inner().last_status,
    };
    let mut tty_input = None;
    let mut line_live = None;
    let tty = match &spec.tty {
        Some(t) => Some((host.terminal().await?, t)),
        None => None,
    };
    let mut status = shell::status_script(host.shell.flavour, id, &dir.join("st"));
    let text = if let Some((tty, t)) = &tty {
        tty.resize(t.rows, t.cols);
        tty.attach(&out.path).await?;
        // A terminal's Ctrl-C is SIGINT and nothing more: a REPL catches it and goes on (no
        // escalation, unlike `Cancel`).
        // Only while the line runs: a key read after its end must never signal the shell,
        // which may be starting the next invocation by then.
        let (shell, t0, mark) = (host.shell.pid, Instant::now(), cancelled.clone());
        let live = Arc::new(std::sync::atomic::AtomicBool::new(true));
        line_live = Some(live.clone());
        let (keys, input) = tty.input(Arc::new(move || {
            if live.load(std::sync::atomic::Ordering::SeqCst) {
                interrupt(shell, since_ticks(t0), &mark);
            }
        }));
        host.stdin.open(keys);
        tty_input = Some(input);
        let exe = crate::foreground::own_program();
        status.push_str(&shell::tty_restore(host.shell.flavour, exe));
        shell::tty_wrapper(
            host.shell.flavour,
            &spec.script,
            &spec.args,
            (&tty.slave, &cancelled),
            &t.term,
            last,
            exe,
        )
    } else {
        if spec.stdin {
            mkfifo(&stdin_path)?;
            host.stdin.open_fifo(id, stdin_path.clone(), client_pid);
        }
        shell::wrapper(
            host.shell.flavour,
            &spec.script,
            &spec.args,
            &InvocationPaths {
                stdin: spec.stdin.then_some(stdin_path.as_path()),
                stdout: &out.path,
                stderr: &err.path,
                cancelled: &cancelled,
            },
            last,
            host.spec.pooled || spec.isolated || spec.probe,
        )
    };
    // A restricted session's leader gets the checked command itself, not a script.
    let trigger = match &host.spec.restricted {
        Some(rules) => {
            let (program, args) =
                crate::restricted::check(rules, &spec.script).map_err(std::io::Error::other)?;
            let on_tty = tty.as_ref().map(|(t, _)| t.slave.clone());
            let req = crate::leader::Request {
                id,
                program,
                args,
                stdin: on_tty
                    .clone()
                    .or_else(|| spec.stdin.then(|| stdin_path.clone())),
                stdout: on_tty.clone().unwrap_or_else(|| out.path.clone()),
                stderr: on_tty.unwrap_or_else(|| err.path.clone()),
                status: dir.join("st"),
            };
            let mut line = serde_json::to_string(&req).map_err(std::io::Error::other)?;
            line.push('\n');
            line
        }
        None => {
            host.shell.script_file.write(&text)?;
            host.shell.status_file.write(&status)?;
            shell::TRIGGER.to_string()
        }
    };
    host.shell.console.clear();
    // Output is numbered from 0 per invocation; in acked mode it is kept until acknowledged.
    host.outbox.reset();
    let acked = spec.acked;
    // Only a client that may resume keeps the command's stdin open once it is gone.
    let resumes = acked && requests.resumes;
    let req_rx = &mut requests.rx;
    let started = Response::Started {
        invocation: id,
        session: host.spec.instance_id.clone(),
        from: 0,
        stdin_from: None,
    };
    // Sent at once, not held back to share a write with the `Exit`: a client that sees no
    // `Started` treats Ctrl-C as giving up a command that never ran (docs/PROFILES.md).
    writer.send(&started).await?;
    if let Some(note) = note {
        writer.send(&Response::Notice(note)).await?;
    }

    let mut exited = host.shell.exited.clone();
    let mut status_rx = host.shell.status_rx.lock().await;
    let wrote = {
        let mut stdin = host.shell.stdin.lock().await;
        match stdin.as_mut() {
            Some(s) => s.write_all(trigger.as_bytes()).await.is_ok(),
            None => false,
        }
    };
    if !wrote && exited.borrow().is_none() {
        // The pipe is gone but the shell has not been reaped yet: wait for it.
        let _ = exited.changed().await;
    }

    let started = Instant::now();
    let timeout = spec.timeout_ms.map(Duration::from_millis);
    let mut stopping = Stopping::new(started, timeout);
    // Where output goes: the client, or the outbox once it went away or was let go
    // (disconnect): the command goes on and its output is kept until `receive`.
    let mut route = Route { gone: false, acked };
    // Set when the client said it leaves for good (`Abandon`: its output was closed, or it
    // was told to end): the command is stopped, nothing of it is kept, and the session stays
    // Opened for that client's next command.
    let mut abandoned = false;
    let mut requests_open = true;
    let mut remote_cancel = host.remote_cancel.subscribe();
    let mut remote_abandon = host.remote_abandon.subscribe();
    let mut remote_ack = host.remote_ack.subscribe();
    remote_ack.borrow_and_update();
    remote_abandon.borrow_and_update();
    let mut kept = host.outbox.subscribe();
    // The command's stdout is lent to the client ([`crate::lend`]): the host reads it not.
    let mut lent = false;
    let mut lends = host.lends.rx.lock().await;
    // Only a local client straight at the host, on pipes, may borrow it.
    let lendable = tty.is_none() && !requests.resumes;
    // Disconnected between its admission and now (the `disconnect` saw it idle): let go too.
    if host.lock_inner().state == tether_proto::State::Disconnected {
        detach.mark_changed();
    }
    remote_cancel.borrow_and_update();
    let stop = |step: Option<Step>| {
        if let Some(step) = step {
            act(host.shell.pid, step, started, &cancelled);
        }
    };

    let code: i32;
    let mut broken = None;
    // Stdin is queued, never waited for; past the queue's bound the client is read no more
    // until the command takes some, while output goes on ([`crate::fifos::StdinFeed`]).
    let mut freed = host.stdin.freed();
    loop {
        let due = stopping.due();
        tokio::select! {
            biased;
            rec = status_rx.recv() => {
                match rec {
                    Some((rid, c)) if rid == id => { code = c; break; }
                    Some(_) => continue,
                    None => { code = 255; break; }
                }
            }
            _ = exited.changed() => {
                let c = (*exited.borrow()).unwrap_or(255);
                code = c;
                broken = Some(format!("the shell exited with status {c}"));
                break;
            }
            // Requests come before output: acknowledgements must never starve behind a
            // command that writes without pause.
            // After a detach the connection is still read, for the acknowledgement of what the
            // client did receive; stdin and Ctrl-C from it no longer apply.
            _ = freed.changed(), if !host.stdin.has_room() => {}
            req = req_rx.recv(), if requests_open && host.stdin.has_room() => match req {
                Some(Request::Ack(seq)) => host.outbox.ack(seq),
                // Leaving for good, perhaps after we already saw its writes fail: the command
                // is stopped, nothing is kept, and the session is its client's again.
                Some(Request::Abandon) if !abandoned => {
                    lent = false;
                    stop(stopping.cancel(Instant::now()));
                    (abandoned, route.gone) = (true, true);
                    forget_command(host);
                    host.set_connected(&host.client_or_me(spec.client.as_ref()));
                }
                Some(Request::Returned) => lent = false,
                Some(_) if route.gone => {}
                Some(Request::Stdin(data)) => host.stdin.push(data),
                Some(Request::StdinEof) => host.stdin.close(),
                Some(Request::Resize { rows, cols }) => {
                    if let Some((tty, _)) = &tty { tty.resize(rows, cols); }
                }
                Some(Request::Cancel) => stop(stopping.cancel(Instant::now())),
                // The client went away without a word (killed, network lost): the command
                // goes on and the session is Disconnected (SPEC §3.13).
                None if route.gone => (requests_open, lent) = (false, false),
                // An acknowledging client (a relay) may come back and go on with stdin; a
                // local CLI that went away has nothing more to give.
                None => {
                    (requests_open, lent) = (false, false);
                    route.gone = true;
                    client_left(host, resumes);
                }
                Some(_) => {}
            },
            // While detached, reading stops at the quota: the command blocks on its next write.
            // An abandoned command's output goes nowhere; it is read so that it never blocks.
            n = out.read(), if !lent && (abandoned || (!route.gone && !acked) || host.outbox.room()) => {
                if abandoned {
                    out.discard(n);
                } else if !forward(&mut route, &host.outbox, &mut out, n, writer).await {
                    client_left(host, resumes);
                }
            }
            n = err.read(), if abandoned || (!route.gone && !acked) || host.outbox.room() => {
                if abandoned {
                    err.discard(n);
                } else if !forward(&mut route, &host.outbox, &mut err, n, writer).await {
                    client_left(host, resumes);
                }
            }
            _ = kept.changed(), if route.gone || acked => {}
            ask = lends.recv() => if let Some(ask) = ask {
                if lent {
                    // Answered at once: it cannot be lent twice.
                    crate::lend::refuse_lent(ask, id);
                    continue;
                }
                let fd = match lendable && !route.gone && !abandoned {
                    true => out.lendable(),
                    false => Err("its output cannot be lent"),
                };
                match crate::lend::grant(ask, (id, client_pid), fd, writer).await {
                    Ok(granted) => lent = granted,
                    Err(_) => {
                        route.gone = true;
                        client_left(host, resumes);
                    }
                }
            },
            _ = detach.changed(), if !route.gone && !abandoned => {
                let msg = format!(
                    "session {name} was disconnected; its command goes on: 'tether receive {name}' gets its output",
                    name = host.spec.name
                );
                let _ = writer.send(&Response::Error(ErrorInfo::new(ErrorKind::Lost, msg))).await;
                if lent {
                    // It stops at once when told; one that does not is read beside.
                    let within = Some(Duration::from_secs(2));
                    crate::lend::returned(host, req_rx, within).await;
                    lent = false;
                }
                host.outbox.forget_sent();
                route.gone = true;
                host.stdin.close();
                host.let_go();
            }
            _ = remote_abandon.changed(), if !abandoned => {
                lent = false;
                stop(stopping.cancel(Instant::now()));
                (abandoned, route.gone, requests_open) = (true, true, false);
                forget_command(host);
            }
            _ = remote_cancel.changed() => stop(stopping.cancel(Instant::now())),
            _ = remote_ack.changed() => {
                let (of, seq) = *remote_ack.borrow_and_update();
                if of == id {
                    host.outbox.ack(seq);
                }
            }
            _ = sleep_until(due), if due.is_some() => stop(stopping.tick(Instant::now())),
        }
    }
    drop(status_rx);
    drop(lends);
    if lent && requests_open {
        // The client drains what the command left in the FIFO, then gives it back; the host
        // then finds it empty (or reads what a background job added meanwhile).
        match crate::lend::reclaim(host, writer, req_rx).await {
            crate::lend::Returned::Back => {}
            crate::lend::Returned::Abandoned => {
                (abandoned, route.gone) = (true, true);
                forget_command(host);
            }
            crate::lend::Returned::Gone => {
                if !route.gone {
                    route.gone = true;
                    client_left(host, resumes);
                }
            }
        }
    }
    if let Some(live) = &line_live {
        live.store(false, std::sync::atomic::Ordering::SeqCst);
    }
    let _ = std::fs::remove_file(&cancelled);
    host.stdin.close();
    let mut typeahead = Vec::new();
    let mut stdin_taken = None;
    if let Some((tty, _)) = &tty {
        if let Some(input) = tty_input {
            stdin_taken = Some(input.finish().await);
        }
        tty.detach().await;
        typeahead = tty.unread();
    }
    // The group is done; what it wrote is buffered. Read that, then hand the FIFOs to a task
    // that swallows whatever background jobs write later.
    out.hold = None;
    err.hold = None;
    let attached = !route.gone;
    for f in [&mut out, &mut err] {
        drain(&mut route, &host.outbox, f, writer).await;
    }
    if broken.is_some() {
        // Output of an EXIT trap lands on the shell's own stdout/stderr: it is this invocation's.
        let [o, e] = host.shell.console.take_final().await;
        for (stream, data) in [(Stream::Stdout, o), (Stream::Stderr, e)] {
            for chunk in data.chunks(OUTPUT_CHUNK) {
                let chunk = bytes::Bytes::copy_from_slice(chunk);
                route
                    .chunk(&host.outbox, writer, stream, chunk, false)
                    .await;
            }
        }
    }
    if out.eof && err.eof {
        if let (Ok(o), Ok(e)) = (out.rearm(), err.rearm()) {
            *host.shell.spare.lock().unwrap_or_else(|p| p.into_inner()) = Some((o, e));
        }
    } else {
        linger(out);
        linger(err);
    }
    if spec.stdin {
        // Release a stdin opener still waiting for a shell that never opened the FIFO.
        let _ = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&stdin_path);
        let _ = std::fs::remove_file(&stdin_path);
    }
    let code = stopping.status(code);
    // A probe's status is its own: the session's `$?` stays the user's last.
    if !spec.probe {
        host.lock_inner().last_status = code;
    }
    let exit = ExitInfo {
        code,
        timed_out: stopping.timed_out,
        cancelled: stopping.cancelled_only(),
        broken,
        cwd: tty.as_ref().and_then(|_| procs::cwd(host.shell.pid)),
        typeahead,
        stdin_taken,
    };
    // A spare whose invocation ended cleanly is free again before its client hears the end,
    // once nothing the invocation started is left: the client's next call finds it free
    // instead of racing its notice and making another.
    if host.spec.pooled
        && !route.gone
        && exit.broken.is_none()
        && !host.outbox.pending()
        && host.lock_inner().reason.is_none()
    {
        procs::end_strays(host.shell.pid);
        host.pool_free.send_modify(|n| *n += 1);
    }
    if !route.gone && writer.send(&Response::Exit(exit.clone())).await.is_err() {
        route.gone = true;
    }
    if abandoned {
        // Nothing is kept for anyone: the session is ready for its client's next command.
        host.outbox.reset();
        return Ok(false);
    }
    if route.gone && attached {
        // The client went away while the output was drained or the exit sent.
        host.dropped();
    }
    if route.gone || acked {
        // Kept until received (detached) or acknowledged (acked: the Exit may be lost in a
        // connection that breaks right now, and a resume must find it).
        host.outbox.finish(exit);
    }
    Ok(!route.gone)
}

/// Does what stopping the command takes now ([`crate::stopping`]).
fn act(shell: i32, step: Step, started: Instant, cancelled: &std::path::Path) {
    match step {
        Step::Interrupt => interrupt(shell, since_ticks(started), cancelled),
        Step::KillCommand => {
            procs::signal_started_since(shell, since_ticks(started), Signal::SIGKILL);
            signal_shell(shell, Signal::SIGINT);
        }
        // The shell itself will not stop (a builtin loop that ignores INT): end it; the
        // session becomes Broken with that reason.
        Step::KillShell => signal_shell(shell, Signal::SIGKILL),
    }
}

fn signal_shell(shell: i32, signal: Signal) {
    procs::signal_pid(shell, signal);
}

/// The client went away while attached (its writes failed, or its connection ended): the
/// command goes on, Disconnected; a client that cannot resume (a local CLI) has no more
/// stdin to give.
fn client_left(host: &Host, resumes: bool) {
    if !resumes {
        host.stdin.close();
    }
    host.dropped();
}

/// The client left for good (`Abandon`): the command gets no more input and nothing it
/// writes is kept.
fn forget_command(host: &Host) {
    host.stdin.close();
    host.outbox.reset();
}

/// The invocation's start in clock ticks since boot, with one tick of slack: processes started
/// since then are the command's. Computed only when stopping a command, to keep the fast path
/// free of /proc reads.
fn since_ticks(started: Instant) -> u64 {
    let elapsed = started.elapsed().as_millis() as u64 * procs::ticks_per_sec() / 1000;
    procs::ticks_now().saturating_sub(elapsed + 1)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// First stage of Ctrl-C: SIGINT to the command's process groups and to the shell, whose INT
/// trap (the prelude's) leaves the invocation's script, so the rest of the line or script is
/// abandoned in every shell, and breaks a builtin loop between invocations' scripts.
///
/// The shell first: its trap must be pending before the command dies, or a fast shell (zsh)
/// has already run the next command of the line when the signal arrives.
fn interrupt(shell: i32, since: u64, cancelled: &std::path::Path) {
    // A shell that has not reached the script yet finds this there and does not run it.
    let _ = std::fs::File::create(cancelled);
    signal_shell(shell, Signal::SIGINT);
    procs::signal_started_since(shell, since, Signal::SIGINT);
}
