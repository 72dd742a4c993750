//! tether's client library: talk to the per-user daemon without the CLI.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tether_client::ClientError> {
//! use tether_client::{Client, InvokeSpec, NewSession};
//! let mut client = Client::connect_or_start(&tether_client::Paths::from_env()?).await?;
//! let s = client.new_session(NewSession { name: Some("web".into()), ..Default::default() }).await?;
//! let out = client.run(InvokeSpec { session: s[0].name.clone(), script: "echo hi".into(),
//!                                   ..Default::default() }).await?;
//! assert_eq!(out.stdout, b"hi\n");
//! # Ok(()) }
//! ```
//!
//! A [`Client`] holds one control connection for requests (`new`, `get`, `remove`, …). Each
//! invocation gets a connection of its own ([`Client::invoke`]), so several can stream at once and
//! a slow reader of one never stalls another.

mod give;
mod invocation;
mod jobs;
mod lend;
mod lend_in;
pub mod upgrade;

pub use invocation::{Event, Invocation, InvocationControl, Output};
pub use tether_proto::{
    Availability, ChildJobInfo, DaemonStatus, ErrorInfo, ErrorKind, ExitInfo, InvokeSpec, JobChild,
    JobChunk, JobInfo, JobQuery, JobStart, NewSession, RemoveSpec, SessionFilter, SessionInfo,
    SessionList, State, Stream, TtySpec,
};
pub use tether_proto::{ConfigInfo, ConfigQuery, parse_size};
pub use tether_transport::paths::Paths;

use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;
use tether_proto::{PROTOCOL_VERSION, Request, Response};
use tether_transport::{FrameReader, FrameWriter, TransportError};
use tokio::net::UnixStream;

/// Errors from the client library. `Remote` carries the daemon's own error kind and message.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Remote(#[from] ErrorInfo),
    #[error("cannot reach the tether daemon at {path}: {err}")]
    Connect { path: PathBuf, err: std::io::Error },
    #[error("cannot start the tether daemon: {0}")]
    Start(String),
    #[error("connection lost: {0}")]
    Lost(String),
    #[error("unexpected reply from the tether daemon: {0}")]
    Protocol(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ClientError {
    /// The CLI exit status for this error (SPEC §2).
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Remote(e) => e.kind,
            ClientError::Connect { .. } | ClientError::Start(_) => ErrorKind::Connection,
            ClientError::Lost(_) => ErrorKind::Lost,
            ClientError::Protocol(_) | ClientError::Io(_) => ErrorKind::Internal,
        }
    }
}

impl From<TransportError> for ClientError {
    fn from(e: TransportError) -> Self {
        ClientError::Lost(e.to_string())
    }
}

type Reader = FrameReader<tokio::net::unix::OwnedReadHalf>;
type Writer = FrameWriter<tokio::net::unix::OwnedWriteHalf>;

/// A connection to the daemon for one `TETHER_HOME`.
pub struct Client {
    paths: Paths,
    reader: Reader,
    writer: Writer,
    /// Connections already handed to a session's host, kept after a [`Client::run`] so the next
    /// one on that session goes straight to the host (no daemon hop, no connection set-up).
    pool: std::sync::Mutex<std::collections::HashMap<String, (Reader, Writer)>>,
    /// The daemon's `Hello` reply has not been read yet: it is read with the first response, so
    /// connecting costs no round trip of its own.
    hello_pending: bool,
    /// An older daemon that refuses this client is replaced by this release's (see
    /// [`upgrade`]): set by [`Client::connect_or_start`] for the user's own daemon.
    upgrades: bool,
}

/// Opens a connection and sends `Hello` without waiting for the reply (it is read before the
/// first response, saving a round trip).
async fn open(paths: &Paths) -> Result<(Reader, Writer), ClientError> {
    let path = paths.daemon_socket();
    let stream = UnixStream::connect(&path)
        .await
        .map_err(|err| ClientError::Connect { path, err })?;
    let (r, w) = stream.into_split();
    let mut writer = FrameWriter::new(w);
    writer.feed(&hello()).await?;
    Ok((FrameReader::new(r), writer))
}

pub(crate) fn hello() -> Request {
    Request::Hello {
        version: PROTOCOL_VERSION,
        agent: format!("tether-client/{}", env!("CARGO_PKG_VERSION")),
        client: None,
    }
}

/// After a failed write: the daemon may have refused the connection (too many open, wrong
/// user) and closed it before reading our request. Its one-line reason is then already waiting
/// to be read, and is the error worth reporting rather than "broken pipe".
pub(crate) async fn refusal(reader: &mut Reader, failed: TransportError) -> ClientError {
    let read = tokio::time::timeout(Duration::from_millis(200), reader.read::<Response>());
    match read.await {
        Ok(Ok(Some(Response::Error(e)))) => e.into(),
        _ => failed.into(),
    }
}

/// Reads the answer to our `Hello`: the newest protocol the peer speaks.
async fn read_hello(reader: &mut Reader) -> Result<u32, ClientError> {
    match reader.read::<Response>().await? {
        Some(Response::Hello { version, .. }) => Ok(version),
        Some(Response::Error(e)) => Err(e.into()),
        Some(other) => Err(ClientError::Protocol(format!("{other:?}"))),
        None => Err(ClientError::Lost("the daemon closed the connection".into())),
    }
}

impl Client {
    /// Connects to a running daemon.
    pub async fn connect(paths: &Paths) -> Result<Client, ClientError> {
        let (reader, writer) = open(paths).await?;
        Ok(Client {
            paths: paths.clone(),
            reader,
            writer,
            hello_pending: true,
            upgrades: false,
            pool: Default::default(),
        })
    }

    /// Connects, starting the daemon first if none is running. The daemon is started by running
    /// `tether daemon start` (the program in `TETHER_EXE`, else the current executable if it is
    /// tether, else `tether` on PATH), which detaches it from this process.
    ///
    /// A daemon of an earlier release that refuses this client (its protocol is older) is
    /// retired and replaced by this release's, which adopts its sessions ([`upgrade`]); the
    /// request that met it is sent again, once. A newer daemon's refusal is a clear error.
    ///
    /// The system daemon ([`Paths::system`]) is never started here: only root starts it.
    pub async fn connect_or_start(paths: &Paths) -> Result<Client, ClientError> {
        let upgrades = !paths.shared;
        match Client::connect(paths).await {
            Ok(c) => return Ok(Client { upgrades, ..c }),
            Err(ClientError::Connect { path, err }) if paths.shared => {
                return Err(ClientError::Start(format!(
                    "the system daemon is not running at {} ({err}); root starts it with \
                     'tether daemon start --system'",
                    path.display()
                )));
            }
            Err(ClientError::Connect { .. }) => {}
            Err(e) => return Err(e),
        }
        upgrade::start(paths).await?;
        // Another starter may have won the race; its daemon is coming up.
        let c = upgrade::connect_started(paths).await?;
        Ok(Client { upgrades, ..c })
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// Sends a request and reads its reply. The first reply on a connection may be an older
    /// daemon's refusal: see [`Client::connect_or_start`].
    async fn call(&mut self, req: Request) -> Result<Response, ClientError> {
        let first = self.hello_pending;
        match self.call_once(&req).await {
            Err(e) if first && self.upgrades => {
                let (reader, writer) = upgrade::reconnect_after(&self.paths, e).await?;
                (self.reader, self.writer, self.hello_pending) = (reader, writer, true);
                self.call_once(&req).await
            }
            Err(e) if first => Err(upgrade::explain(e)),
            other => other,
        }
    }

    async fn call_once(&mut self, req: &Request) -> Result<Response, ClientError> {
        if let Err(e) = self.writer.send(req).await {
            return Err(refusal(&mut self.reader, e).await);
        }
        if std::mem::take(&mut self.hello_pending) {
            read_hello(&mut self.reader).await?;
        }
        match self.reader.read::<Response>().await? {
            Some(Response::Error(e)) => Err(e.into()),
            Some(r) => Ok(r),
            None => Err(ClientError::Lost("the daemon closed the connection".into())),
        }
    }

    async fn sessions(&mut self, req: Request) -> Result<Vec<SessionInfo>, ClientError> {
        match self.call(req).await? {
            Response::Sessions(v) => Ok(v),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Creates a session (`tether new`).
    pub async fn new_session(&mut self, spec: NewSession) -> Result<Vec<SessionInfo>, ClientError> {
        self.sessions(Request::New(spec)).await
    }

    /// Lists sessions (`tether get`).
    pub async fn get(&mut self, filter: SessionFilter) -> Result<Vec<SessionInfo>, ClientError> {
        self.sessions(Request::Get(filter)).await
    }

    /// Closes sessions and forgets their handles (`tether remove`).
    pub async fn remove(&mut self, spec: RemoveSpec) -> Result<Vec<SessionInfo>, ClientError> {
        self.sessions(Request::Remove(spec)).await
    }

    pub async fn status(&mut self) -> Result<DaemonStatus, ClientError> {
        match self.call(Request::DaemonStatus).await? {
            Response::Status(s) => Ok(s),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Asks the daemon to exit (idle sessions close; busy ones go on).
    pub async fn stop(mut self) -> Result<(), ClientError> {
        self.call(Request::DaemonStop).await.map(|_| ())
    }

    /// Detaches sessions from this client; running commands go on (`tether disconnect`).
    pub async fn disconnect(&mut self, list: SessionList) -> Result<Vec<SessionInfo>, ClientError> {
        self.sessions(Request::Disconnect(list)).await
    }

    /// Reattaches sessions, or adopts ones found on another computer (`tether connect`).
    pub async fn connect_sessions(
        &mut self,
        list: SessionList,
    ) -> Result<Vec<SessionInfo>, ClientError> {
        self.sessions(Request::Connect(list)).await
    }

    /// Streams what a disconnected command wrote, then the rest live, then its exit status
    /// (`tether receive`); the client is used up. With `keep` (`receive --keep`) nothing is
    /// consumed and the session stays Disconnected: the next receive gets it all again.
    pub async fn into_receive(self, session: &str, keep: bool) -> Result<Invocation, ClientError> {
        let list = SessionList {
            sessions: vec![session.to_string()],
            remote: None,
            keep,
        };
        self.stream_on_own(Request::Receive(list)).await
    }

    /// Starts `req`, whose answer is a stream, on this client's own connection (the client is
    /// used up), replacing an older daemon first if that is what answers.
    async fn stream_on_own(self, req: Request) -> Result<Invocation, ClientError> {
        let Client {
            paths,
            reader,
            writer,
            hello_pending,
            upgrades,
            ..
        } = self;
        let conn = (reader, writer, hello_pending);
        Invocation::start_retrying(&paths, upgrades, conn, req).await
    }

    /// Starts an invocation on its own connection. The stream of events ends with
    /// [`Event::Exit`]; errors such as "not found" or "busy" come back as `Err`.
    pub async fn invoke(&self, spec: InvokeSpec) -> Result<Invocation, ClientError> {
        Invocation::start(&self.paths, self.upgrades, spec).await
    }

    /// Starts an invocation in a local session straight at its host, without a daemon
    /// connection: the daemon links each running local session's name to its instance id
    /// ([`Paths::name_link`]), and a host answers a `Hello` as the daemon would. The host's
    /// answer is final (busy, disconnected, held by another client…), but `None` means "ask
    /// the daemon": no link (an id, a remote session's handle, no such name), or no host
    /// answering behind it (the session ended; the daemon knows how).
    pub async fn invoke_direct(
        paths: &Paths,
        spec: &InvokeSpec,
    ) -> Option<Result<Invocation, ClientError>> {
        if spec.remote.is_some() || spec.tty.is_some() {
            return None;
        }
        let link = paths.name_link(&spec.session)?;
        // Only a small regular file of ours (O_NOFOLLOW: never a link planted in its place).
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(link)
            .ok()?;
        let mut id = [0u8; 64];
        let n = std::io::Read::read(&mut file, &mut id).ok()?;
        let iid = std::str::from_utf8(&id[..n]).ok()?;
        if iid.is_empty() || !iid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return None;
        }
        let stream = UnixStream::connect(paths.host_socket(iid)).await.ok()?;
        let (r, w) = stream.into_split();
        let mut writer = FrameWriter::new(w);
        // A host speaks the host protocol, versioned on its own (`tether_proto::host`): greet
        // it with the oldest we speak, so that a host of an older release still answers.
        let hello = Request::Hello {
            version: tether_proto::host::OLDEST_HOST_PROTOCOL,
            agent: format!("tether-client/{}", env!("CARGO_PKG_VERSION")),
            client: None,
        };
        writer.feed(&hello).await.ok()?;
        match Invocation::start_on(FrameReader::new(r), writer, true, spec.clone()).await {
            Err(ClientError::Remote(e)) => Some(Err(e.into())),
            Err(_) => None,
            Ok(mut inv) => {
                // Straight at the host: it may lend its stdout FIFO (`Invocation::splice_stdout`).
                if let Some((path, _)) = &mut inv.host {
                    *path = paths.host_socket(iid);
                }
                Some(Ok(inv))
            }
        }
    }

    /// Like [`Client::invoke`], but runs the invocation on this client's own connection, saving
    /// a connection set-up; the client is used up. The CLI uses this for one target.
    pub async fn into_invocation(self, spec: InvokeSpec) -> Result<Invocation, ClientError> {
        self.stream_on_own(Request::Invoke(spec)).await
    }

    /// Runs a command to completion and collects its output (no stdin).
    ///
    /// The connection is kept afterwards, attached to the session's host, and reused by the
    /// next `run` on the same session; if that host is gone (the session was removed or broke),
    /// the call falls back to the daemon, which reports the session's state.
    pub async fn run(&self, spec: InvokeSpec) -> Result<Output, ClientError> {
        if spec.session.is_empty() || spec.stdin {
            return self.invoke(spec).await?.collect().await;
        }
        let key = spec.session.clone();
        let pooled = self.pool_lock().remove(&key);
        if let Some(conn) = pooled {
            match invocation::run_on(conn, false, &spec).await {
                Ok((out, conn)) => {
                    self.pool_lock().insert(key, conn);
                    return Ok(out);
                }
                Err(invocation::RunError::BeforeStart(_)) => {}
                Err(invocation::RunError::Started(e)) => return Err(e),
            }
        }
        let conn = open(&self.paths).await?;
        let ran = match invocation::run_on(conn, true, &spec).await {
            Err(invocation::RunError::BeforeStart(e)) if self.upgrades => {
                let conn = upgrade::reconnect_after(&self.paths, e).await?;
                invocation::run_on(conn, true, &spec).await
            }
            other => other,
        };
        match ran {
            Ok((out, conn)) => {
                self.pool_lock().insert(key, conn);
                Ok(out)
            }
            Err(invocation::RunError::BeforeStart(e) | invocation::RunError::Started(e)) => Err(e),
        }
    }

    fn pool_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (Reader, Writer)>> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The tether program used to start a daemon.
pub fn tether_exe() -> PathBuf {
    if let Some(p) = &tether_settings::get().exe {
        return p.clone();
    }
    // `tether-<sha256>` is the copy a client put on this computer (bootstrap).
    let is_tether = |n: &std::ffi::OsStr| {
        n.to_str()
            .is_some_and(|n| n == "tether" || n.starts_with("tether-"))
    };
    match std::env::current_exe() {
        Ok(p) if p.file_name().is_some_and(is_tether) => p,
        _ => PathBuf::from("tether"),
    }
}
