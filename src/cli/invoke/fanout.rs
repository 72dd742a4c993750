//! `invoke` on several targets at once: up to the throttle in parallel, output prefixed by
//! target (or JSON lines), a progress bar on a terminal, Ctrl-C passed to each target, and
//! every target left for good when our output closes or we are told to end.

use super::super::error::CliError;
use super::super::error::CliResult;
use super::super::stream::{Prefixer, Progress, json_line, note, stdout_closed, stream_name};
use super::{Ends, Target, annotate, leave, read_shared_stdin, report_exit};
use std::sync::Arc;
use tether_client::{Client, ErrorKind, Event};
use tokio::sync::{Semaphore, watch};

/// How the targets are run and shown.
pub(super) struct Options {
    pub throttle: usize,
    pub json: bool,
    pub hide_computer_name: bool,
}

/// Runs every target, up to the throttle at once. Ctrl-C is passed on to each running target;
/// a third one gives up waiting.
pub(super) async fn fan_out(client: Client, targets: Vec<Target>, a: Options) -> CliResult {
    let stdin = if targets[0].spec.stdin {
        Some(Arc::new(read_shared_stdin()?))
    } else {
        None
    };
    let client = Arc::new(client);
    let limit = Arc::new(Semaphore::new(a.throttle.max(1)));
    let progress = Arc::new(Progress::start(targets.len(), !a.json));
    let (cancel_tx, cancel_rx) = watch::channel(0u32);
    // Raised when every target must be left for good (our output closed, SIGTERM, SIGHUP).
    let (leave_tx, leave_rx) = watch::channel(false);
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut ends = Ends::new()?;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, t) in targets.into_iter().enumerate() {
        let (client, limit, stdin) = (client.clone(), limit.clone(), stdin.clone());
        let (progress, cancel) = (progress.clone(), (cancel_rx.clone(), leave_rx.clone()));
        let show = Show {
            json: a.json,
            prefix: if a.hide_computer_name {
                Vec::new()
            } else {
                format!("{}: ", t.label).into_bytes()
            },
        };
        tasks.spawn(async move {
            let _permit = limit.acquire().await;
            let code = one_of_many(&client, t, stdin, show, cancel).await;
            progress.finished(code == 0);
            (i, code)
        });
    }
    let mut codes = Vec::new();
    let mut ended = None;
    loop {
        tokio::select! {
            done = tasks.join_next() => {
                match done {
                    Some(Ok(ic)) => codes.push(ic),
                    Some(Err(_)) => codes.push((usize::MAX, 1)),
                    None => break,
                }
                if stdout_closed() && !*leave_tx.borrow() {
                    let _ = leave_tx.send(true);
                    ended.get_or_insert(141);
                }
            }
            code = ends.next(), if ended.is_none() => {
                let _ = leave_tx.send(true);
                ended = Some(code);
            }
            _ = sigint.recv() => {
                let n = *cancel_tx.borrow() + 1;
                if n > 2 {
                    progress.done();
                    return Ok(130);
                }
                let _ = cancel_tx.send(n);
            }
        }
    }
    progress.done();
    if let Some(code) = ended {
        return Ok(code);
    }
    codes.sort_unstable();
    Ok(codes.iter().map(|(_, c)| *c).find(|c| *c != 0).unwrap_or(0))
}

/// How one target of several is shown.
struct Show {
    json: bool,
    prefix: Vec<u8>,
}

async fn one_of_many(
    client: &Client,
    t: Target,
    stdin: Option<Arc<Vec<u8>>>,
    show: Show,
    (mut cancel, mut leaving): (watch::Receiver<u32>, watch::Receiver<bool>),
) -> i32 {
    let Target {
        label,
        computer,
        spec,
    } = t;
    let session = spec.session.clone();
    let failed = |e: CliError| {
        if show.json {
            json_line(serde_json::json!({"computer": computer, "session": session,
                "error": e.message, "exit_code": e.kind.exit_code()}));
        }
        note(&e.message);
        if e.kind == ErrorKind::Internal {
            1
        } else {
            e.kind.exit_code()
        }
    };
    let mut inv = tokio::select! {
        inv = client.invoke(spec) => match inv {
            Ok(i) => i,
            Err(e) => return failed(annotate(e, &label)),
        },
        // Ctrl-C before the command started: give up on this target.
        _ = cancel.changed() => return 130,
        _ = leaving.changed() => return 141,
    };
    if let Some(data) = stdin {
        let ctl = inv.control();
        tokio::spawn(async move {
            for chunk in data.chunks(64 * 1024) {
                if !ctl.stdin(chunk.to_vec()).await {
                    return;
                }
            }
            ctl.eof().await;
        });
    }
    let mut px = Prefixer::new(show.prefix.clone());
    let ctl = inv.control();
    loop {
        let ev = tokio::select! {
            ev = inv.next() => ev,
            changed = cancel.changed() => {
                if changed.is_ok() {
                    ctl.cancel().await;
                }
                continue;
            }
            _ = leaving.changed() => {
                leave(&ctl).await;
                return 141;
            }
        };
        match ev {
            Ok(Event::Notice(n)) => note(&n),
            // Fan-out output is prefixed line by line, never spliced.
            Ok(Event::OutputClosed) => {}
            Ok(Event::Output { stream, data }) => {
                if show.json {
                    json_line(serde_json::json!({"computer": computer, "session": session,
                        "stream": stream_name(stream), "data": String::from_utf8_lossy(&data)}));
                } else {
                    px.push(stream, &data);
                }
                if stdout_closed() {
                    leave(&ctl).await;
                    return 141;
                }
                inv.delivered();
            }
            Ok(Event::Exit(exit)) => {
                px.finish();
                tracing::info!(on = %label, code = exit.code, "command ended");
                if show.json {
                    json_line(serde_json::json!({"computer": computer, "session": session,
                        "exit_code": exit.code}));
                }
                report_exit(&label, &exit);
                return exit.code;
            }
            Err(e) => {
                px.finish();
                return failed(annotate(e, &label));
            }
        }
    }
}
