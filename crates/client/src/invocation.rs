//! One running command: its event stream, and a control handle for stdin and Ctrl-C.

use crate::lend::{End, Lending};
use crate::{ClientError, Paths, Reader, Writer, open, read_hello};
use tether_proto::{ExitInfo, InvokeSpec, Request, Response, Stream};
use tokio::sync::mpsc;

/// What an invocation produces, in order; `Exit` is always last.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Output {
        stream: Stream,
        data: Vec<u8>,
    },
    /// The stdout given to [`Invocation::splice_stdout`] was closed by its reader (EPIPE):
    /// as for a write to it that failed, the caller leaves (`abandon`).
    OutputClosed,
    /// A line for the user about the connection (reconnecting, restored).
    Notice(String),
    Exit(ExitInfo),
}

/// Everything a finished command produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: ExitInfo,
}

pub(crate) enum Control {
    Stdin(Vec<u8>),
    Eof,
    Cancel,
    Resize(u16, u16),
    /// The lent stdout FIFO is ours no more ([`crate::lend`]).
    Returned,
    /// Our stdin is the relay's now ([`crate::give`]): sent after every frame of it.
    Given,
    /// Sent, then the sender is told so (the caller is about to exit).
    Abandon(tokio::sync::oneshot::Sender<()>),
}

/// Sends stdin and Ctrl-C to a running invocation; cheap to clone.
#[derive(Clone)]
pub struct InvocationControl {
    tx: mpsc::Sender<Control>,
    /// The latest acknowledgement. Acks are cumulative, so a newer one replaces an unsent one
    /// and sending never waits: a reader blocked on an ack while the host is blocked writing
    /// output to it would deadlock.
    ack: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
}

impl InvocationControl {
    /// Queues standard input for the command (waits when the command is not reading).
    pub async fn stdin(&self, data: Vec<u8>) -> bool {
        self.tx.send(Control::Stdin(data)).await.is_ok()
    }
    /// Ends the command's standard input.
    pub async fn eof(&self) -> bool {
        self.tx.send(Control::Eof).await.is_ok()
    }
    /// Stops the command and everything it started; the session survives.
    pub async fn cancel(&self) -> bool {
        self.tx.send(Control::Cancel).await.is_ok()
    }
    /// The terminal of a line run on the session's terminal changed size.
    pub async fn resize(&self, rows: u16, cols: u16) -> bool {
        self.tx.send(Control::Resize(rows, cols)).await.is_ok()
    }
    /// Leaves for good (our output was closed, or we were told to end): the command is
    /// stopped as by Ctrl-C, none of its output is kept, and the session stays usable.
    /// Returns once the request is written, so the caller may exit right after.
    pub async fn abandon(&self) -> bool {
        let (done, written) = tokio::sync::oneshot::channel();
        self.tx.send(Control::Abandon(done)).await.is_ok() && written.await.is_ok()
    }
}

/// A running command.
pub struct Invocation {
    frames: Frames,
    control: InvocationControl,
    /// Invocation number within its session.
    pub id: u64,
    /// Output byte number after the last byte received (for acknowledgements).
    seq: u64,
    done: bool,
    /// The host's own socket and the host protocol it speaks, when reached straight.
    pub(crate) host: Option<(std::path::PathBuf, u32)>,
    /// The daemon's socket and the token of the relay that carries this invocation to another
    /// computer, when it takes our stdin ([`crate::give`]).
    pub(crate) relay: Option<(std::path::PathBuf, u64)>,
    lending: Option<Lending>,
    /// The host lent us its stdout FIFO and waits for `Returned`.
    owes: bool,
    /// The write end of a pipe the stdin thread ([`Invocation::forward_stdin`]) watches:
    /// closed when the command has exited or this handle is dropped, so that the thread stops
    /// reading our stdin instead of swallowing what a later reader of it should get.
    stdin_stop: std::sync::Mutex<Option<std::os::fd::OwnedFd>>,
}

/// The invocation's frames: read here, or by a task of their own while the stdout FIFO is
/// lent (so that they can be awaited beside the splicing: reading a frame is not
/// cancel-safe).
enum Frames {
    Direct(Reader),
    Task(mpsc::Receiver<Result<Option<Response>, tether_transport::TransportError>>),
}

impl Frames {
    async fn next(&mut self) -> Result<Option<Response>, ClientError> {
        match self {
            Frames::Direct(r) => Ok(r.read::<Response>().await?),
            Frames::Task(rx) => match rx.recv().await {
                Some(r) => Ok(r?),
                None => Ok(None),
            },
        }
    }

    /// Moves the reading to a task of its own.
    fn move_to_task(&mut self) {
        let (tx, rx) = mpsc::channel(16);
        if let Frames::Direct(mut reader) = std::mem::replace(self, Frames::Task(rx)) {
            tokio::spawn(async move {
                loop {
                    let r = reader.read::<Response>().await;
                    let last = !matches!(r, Ok(Some(_)));
                    if tx.send(r).await.is_err() || last {
                        return;
                    }
                }
            });
        }
    }
}

impl Invocation {
    pub(crate) async fn start(
        paths: &Paths,
        upgrades: bool,
        spec: InvokeSpec,
    ) -> Result<Invocation, ClientError> {
        let (reader, writer) = open(paths).await?;
        Invocation::start_retrying(
            paths,
            upgrades,
            (reader, writer, true),
            Request::Invoke(spec),
        )
        .await
    }

    /// Starts `req` on a daemon connection whose first reply may be an older daemon's refusal:
    /// with `upgrades`, that daemon is replaced and `req` sent once more to the new one
    /// (`crate::upgrade`).
    pub(crate) async fn start_retrying(
        paths: &Paths,
        upgrades: bool,
        (reader, writer, hello_pending): (Reader, Writer, bool),
        req: Request,
    ) -> Result<Invocation, ClientError> {
        let started = match Invocation::start_request(reader, writer, hello_pending, &req).await {
            Err(e) if hello_pending && upgrades => {
                let (reader, writer) = crate::upgrade::reconnect_after(paths, e).await?;
                Invocation::start_request(reader, writer, true, &req).await
            }
            Err(e) if hello_pending => Err(crate::upgrade::explain(e)),
            other => other,
        };
        started.map(|mut inv| {
            if let Some((path, _)) = &mut inv.relay {
                *path = paths.daemon_socket();
            }
            inv
        })
    }

    pub(crate) async fn start_on(
        reader: Reader,
        writer: Writer,
        hello_pending: bool,
        spec: InvokeSpec,
    ) -> Result<Invocation, ClientError> {
        Invocation::start_request(reader, writer, hello_pending, &Request::Invoke(spec)).await
    }

    /// Sends a request whose answer is an invocation's stream (`Invoke`, `Receive`).
    pub(crate) async fn start_request(
        mut reader: Reader,
        mut writer: Writer,
        hello_pending: bool,
        req: &Request,
    ) -> Result<Invocation, ClientError> {
        if let Err(e) = writer.send(req).await {
            return Err(crate::refusal(&mut reader, e).await);
        }
        let version = match hello_pending {
            true => Some(read_hello(&mut reader).await?),
            false => None,
        };
        let mut first = reader.read::<Response>().await?;
        // A relay that would take our stdin says so first.
        let mut relay = None;
        if let Some(Response::Relayed { token }) = first {
            relay = Some((std::path::PathBuf::new(), token));
            first = reader.read::<Response>().await?;
        }
        let (id, seq) = match first {
            Some(Response::Started {
                invocation, from, ..
            }) => (invocation, from),
            Some(Response::Error(e)) => return Err(e.into()),
            Some(other) => return Err(ClientError::Protocol(format!("{other:?}"))),
            None => return Err(ClientError::Lost("the daemon closed the connection".into())),
        };
        let (tx, rx) = mpsc::channel(8);
        let (ack_tx, ack_rx) = tokio::sync::watch::channel(seq);
        tokio::spawn(pump_control(writer, rx, ack_rx));
        Ok(Invocation {
            frames: Frames::Direct(reader),
            control: InvocationControl {
                tx,
                ack: std::sync::Arc::new(ack_tx),
            },
            id,
            seq,
            done: false,
            host: version.map(|v| (std::path::PathBuf::new(), v)),
            relay,
            lending: None,
            owes: false,
            stdin_stop: std::sync::Mutex::new(None),
        })
    }

    /// Forwards `input` (our stdin) to the command as its stdin, then ends it, on a thread of
    /// its own. Straight at a host that lends it (host protocol 9), once a megabyte went in
    /// frames, the rest is spliced (or, from a device or a socket the kernel does not splice
    /// from, copied) into the command's stdin FIFO instead; through a relay that takes it,
    /// our stdin itself is given to the relay to read. A terminal is never forwarded.
    pub fn forward_stdin(&self, input: std::os::fd::OwnedFd) {
        let give = self
            .relay
            .clone()
            .filter(|(p, _)| !p.as_os_str().is_empty());
        let lend = match &self.host {
            Some((path, v))
                if *v >= crate::lend_in::LENDING_STDIN && !path.as_os_str().is_empty() =>
            {
                Some((path.clone(), self.id))
            }
            _ => None,
        };
        let tx = self.control.tx.clone();
        let Ok((stop, stop_w)) = nix::unistd::pipe() else {
            return;
        };
        *self.stdin_stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(stop_w);
        let _ = std::thread::Builder::new()
            .name("tether-stdin".into())
            .spawn(move || crate::lend_in::forward(input, &tx, (lend, give), &stop));
    }

    /// Offers `out` (a pipe: our stdout) for the command's stdout to be spliced into, once it
    /// has written a megabyte in frames (`LEND_AFTER`), when the host was reached straight and
    /// lends (host protocol 8); otherwise nothing changes. Output that goes this way comes as
    /// no [`Event::Output`]; a closed `out` comes as [`Event::OutputClosed`].
    pub fn splice_stdout(&mut self, out: std::os::fd::OwnedFd) {
        if let Some((path, version)) = &self.host
            && *version >= crate::lend::LENDING_HOSTS
            && !path.as_os_str().is_empty()
            && cfg!(target_os = "linux")
        {
            self.lending = Some(Lending::new(path.clone(), out));
        }
    }

    /// A handle for stdin and cancellation, usable from another task.
    pub fn control(&self) -> InvocationControl {
        self.control.clone()
    }

    /// The next event; after `Exit` the stream is over.
    pub async fn next(&mut self) -> Result<Event, ClientError> {
        loop {
            let frame = match &mut self.lending {
                Some(Lending::Active(splicer)) => tokio::select! {
                    f = self.frames.next() => f?,
                    end = splicer.ended() => {
                        self.lending = Some(Lending::Over);
                        match end {
                            End::Closed => return Ok(Event::OutputClosed),
                            // The host reads on once it is back.
                            End::Failed => self.give_back().await,
                            End::Eof | End::Stopped => {}
                        }
                        continue;
                    }
                },
                _ => self.frames.next().await?,
            };
            match frame {
                Some(Response::Output { stream, data }) => {
                    self.seq += data.len() as u64;
                    if stream == Stream::Stdout
                        && let Some(l) = &mut self.lending
                    {
                        l.counted(data.len(), self.id);
                    }
                    return Ok(Event::Output { stream, data });
                }
                Some(Response::Lent) => {
                    let taken = match &mut self.lending {
                        Some(l) => l.lent().await,
                        None => false,
                    };
                    self.owes = true;
                    match taken {
                        true => self.frames.move_to_task(),
                        false => self.give_back().await,
                    }
                }
                Some(Response::Reclaim) => {
                    let end = self.stop_splicing(true).await;
                    self.give_back().await;
                    if matches!(end, Some(End::Closed)) {
                        return Ok(Event::OutputClosed);
                    }
                }
                Some(Response::Exit(e)) => {
                    self.done = true;
                    // The command is over: nothing more of our stdin is its.
                    self.stdin_stop
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take();
                    return Ok(Event::Exit(e));
                }
                Some(Response::Notice(n)) => return Ok(Event::Notice(n)),
                Some(Response::Error(e)) => {
                    self.stop_splicing(false).await;
                    self.give_back().await;
                    return Err(e.into());
                }
                Some(other) => return Err(ClientError::Protocol(format!("{other:?}"))),
                None => {
                    return Err(ClientError::Lost(
                        "the connection ended before the command's exit status arrived".into(),
                    ));
                }
            }
        }
    }

    /// Ends the splicing, if any (draining the FIFO first with `drain`).
    async fn stop_splicing(&mut self, drain: bool) -> Option<End> {
        match self.lending.replace(Lending::Over) {
            Some(Lending::Active(mut s)) => Some(s.finish(drain).await),
            other => {
                self.lending = other;
                None
            }
        }
    }

    /// Tells the host the FIFO is back (once).
    async fn give_back(&mut self) {
        if std::mem::take(&mut self.owes) {
            let _ = self.control.tx.send(Control::Returned).await;
        }
    }

    /// Tells the host that everything received so far has been delivered (written out), so it
    /// may forget it. With [`InvokeSpec::acked`] the host keeps output until then: a client that
    /// dies loses nothing, because `receive` returns exactly what was not acknowledged.
    pub fn delivered(&self) {
        let upto = if self.done { self.seq + 1 } else { self.seq };
        self.control.ack.send_replace(upto);
    }

    /// Reads every event until the exit.
    pub async fn collect(mut self) -> Result<Output, ClientError> {
        let _ = self.control.eof().await;
        let mut out = Output::default();
        loop {
            match self.next().await? {
                Event::Output {
                    stream: Stream::Stdout,
                    data,
                } => out.stdout.extend_from_slice(&data),
                Event::Output {
                    stream: Stream::Stderr,
                    data,
                } => out.stderr.extend_from_slice(&data),
                Event::Notice(_) | Event::OutputClosed => {}
                Event::Exit(e) => {
                    out.exit = e;
                    return Ok(out);
                }
            }
        }
    }
}

async fn pump_control(
    mut writer: Writer,
    mut rx: mpsc::Receiver<Control>,
    mut ack: tokio::sync::watch::Receiver<u64>,
) {
    ack.borrow_and_update();
    loop {
        let msg = tokio::select! {
            c = rx.recv() => match c {
                Some(Control::Stdin(d)) => {
                    // Written from the buffer it was read into.
                    if writer.send_stdin(&d).await.is_err() {
                        return;
                    }
                    continue;
                }
                Some(Control::Eof) => Request::StdinEof,
                Some(Control::Cancel) => Request::Cancel,
                Some(Control::Resize(rows, cols)) => Request::Resize { rows, cols },
                Some(Control::Returned) => Request::Returned,
                Some(Control::Given) => Request::StdinGiven,
                Some(Control::Abandon(done)) => {
                    let _ = writer.send(&Request::Abandon).await;
                    let _ = done.send(());
                    return;
                }
                None => return,
            },
            changed = ack.changed() => match changed {
                Ok(()) => Request::Ack(*ack.borrow_and_update()),
                Err(_) => return,
            },
        };
        if writer.send(&msg).await.is_err() {
            return;
        }
    }
}

/// Where a pooled run failed: before the host accepted it (the connection is stale and the call
/// may be retried elsewhere) or after (the error is the command's).
pub(crate) enum RunError {
    BeforeStart(ClientError),
    Started(ClientError),
}

/// Runs one invocation without stdin on an existing connection and hands the connection back
/// for reuse once the exit status has arrived.
pub(crate) async fn run_on(
    (mut reader, mut writer): (Reader, Writer),
    hello_pending: bool,
    spec: &InvokeSpec,
) -> Result<(Output, (Reader, Writer)), RunError> {
    let before = RunError::BeforeStart;
    if let Err(e) = writer.send(&Request::Invoke(spec.clone())).await {
        return Err(before(crate::refusal(&mut reader, e).await));
    }
    if hello_pending {
        read_hello(&mut reader).await.map_err(before)?;
    }
    match reader.read::<Response>().await {
        Ok(Some(Response::Started { .. })) => {}
        Ok(Some(Response::Error(e))) => return Err(RunError::Started(e.into())),
        Ok(Some(other)) => return Err(before(ClientError::Protocol(format!("{other:?}")))),
        Ok(None) => {
            return Err(before(ClientError::Lost(
                "the connection closed before the command started".into(),
            )));
        }
        Err(e) => return Err(before(e.into())),
    }
    let mut out = Output::default();
    loop {
        match reader.read::<Response>().await {
            Ok(Some(Response::Output { stream, data })) => match stream {
                Stream::Stdout => out.stdout.extend_from_slice(&data),
                Stream::Stderr => out.stderr.extend_from_slice(&data),
            },
            Ok(Some(Response::Exit(exit))) => {
                out.exit = exit;
                return Ok((out, (reader, writer)));
            }
            Ok(Some(Response::Error(e))) => return Err(RunError::Started(e.into())),
            Ok(Some(other)) => {
                return Err(RunError::Started(ClientError::Protocol(format!(
                    "{other:?}"
                ))));
            }
            Ok(None) => {
                return Err(RunError::Started(ClientError::Lost(
                    "the connection ended before the command's exit status arrived".into(),
                )));
            }
            Err(e) => return Err(RunError::Started(e.into())),
        }
    }
}
