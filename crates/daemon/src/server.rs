//! The daemon's listener and request handlers.

use crate::hosts;
use crate::links::Links;
use crate::registry::{Found, Registry, seen_by, selected};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use tether_proto::{
    ClientId, DaemonStatus, ErrorInfo, ErrorKind, InvokeSpec, NewSession, Request, Response,
    SessionFilter, SessionInfo, State,
};
use tether_transport::paths::Paths;
use tether_transport::{FrameReader, FrameWriter};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Mutex, watch};

/// Default IdleTimeout (SPEC §3.6): 2 hours.
pub const DEFAULT_IDLE_TIMEOUT_S: u64 = 7200;
/// Smallest IdleTimeout a user may ask for, unless `TETHER_MIN_IDLE_TIMEOUT` (seconds) lowers it
/// for tests.
pub const MIN_IDLE_TIMEOUT_S: u64 = 60;

pub struct Daemon {
    pub paths: Paths,
    pub registry: Mutex<Registry>,
    pub shutdown: watch::Sender<bool>,
    /// Warm connections to other computers (the client role).
    pub links: Arc<Links>,
    pub(crate) min_idle: u64,
    pub(crate) owner: String,
    /// This daemon's client identity (its `TETHER_HOME`'s), for its own CLI's requests and
    /// when it speaks to other computers.
    pub me: ClientId,
    /// Jobs started by this client ([`crate::jobs`]).
    pub jobs: crate::jobs::Jobs,
    /// Clients of other computers whose links are up, by client id ([`crate::presence`]).
    pub present: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// Set when this is one user's view of the system daemon ([`crate::system`]).
    pub(crate) system: Option<crate::system::Role>,
    /// Spare hosts for temporary invocations from other computers ([`crate::pool`]).
    pub(crate) pool: crate::pool::Pool,
}

impl Daemon {
    pub fn new(paths: Paths) -> Arc<Daemon> {
        Daemon::make(paths, None)
    }

    /// One user's view of the system daemon, over that user's area of its tree.
    pub(crate) fn for_user(paths: Paths, role: crate::system::Role) -> Arc<Daemon> {
        Daemon::make(paths, Some(role))
    }

    fn make(paths: Paths, system: Option<crate::system::Role>) -> Arc<Daemon> {
        let _ = hosts::host_program();
        let registry = Registry::load(paths.clone());
        let min_idle = std::env::var("TETHER_MIN_IDLE_TIMEOUT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(MIN_IDLE_TIMEOUT_S);
        let owner = match &system {
            Some(role) => role.account.name.clone(),
            None => nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| nix::unistd::getuid().to_string()),
        };
        let me = tether_transport::identity::client_identity(&paths);
        let links = Links::new(crate::remote::hello_from(&me));
        // Jobs are written down in the same home, so they outlive this daemon (a system
        // daemon's view holds less of a job's unreceived output in root's memory).
        let jobs = crate::jobs::Jobs::at(Some(paths.clone()));
        Arc::new(Daemon {
            me,
            present: Default::default(),
            jobs,
            paths,
            registry: Mutex::new(registry),
            shutdown: watch::channel(false).0,
            links,
            min_idle,
            owner,
            system,
            pool: Default::default(),
        })
    }

    /// Where this daemon's configurations are: the system's, or `$TETHER_HOME/configurations`.
    pub(crate) fn config_dir(&self) -> std::path::PathBuf {
        match &self.system {
            Some(role) => role.configs.clone(),
            None => crate::configs::dir(&self.paths),
        }
    }
}

/// Accepts clients until shutdown. Each connection is its own task: a panic in one is caught by
/// the runtime and ends only that connection.
pub async fn serve(daemon: Arc<Daemon>, listener: UnixListener) {
    cleanup_temporaries(&daemon).await;
    crate::pool::spawn_expiry(&daemon);
    let permits = Arc::new(tokio::sync::Semaphore::new(crate::limits::max_connections()));
    let d = daemon.clone();
    let ended = crate::accept::until_stopped(
        &listener,
        &daemon.paths.daemon_socket(),
        daemon.shutdown.subscribe(),
        move |stream| match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let d = d.clone();
                tokio::spawn(async move {
                    handle(d, stream).await;
                    drop(permit)
                });
            }
            Err(_) => {
                tokio::spawn(crate::limits::refuse(stream));
            }
        },
    )
    .await;
    // Logout (or any SIGTERM) closes the client as `daemon stop` does (SPEC §3.14).
    if ended == crate::accept::Ended::Terminated {
        crate::closing::stop(&daemon).await;
    }
}

/// Temporary sessions left by a daemon that died mid-invocation are closed on adoption.
pub(crate) async fn cleanup_temporaries(daemon: &Daemon) {
    let temps: Vec<String> = {
        let reg = daemon.registry.lock().await;
        reg.sessions
            .values()
            .filter(|m| m.temporary)
            .map(|m| m.info.instance_id.clone())
            .collect()
    };
    for iid in temps {
        let _ = hosts::close(&daemon.paths, &iid).await;
        daemon.registry.lock().await.forget(&iid);
    }
}

pub(crate) type Reader = FrameReader<tokio::net::unix::OwnedReadHalf>;
pub(crate) type Writer = FrameWriter<tokio::net::unix::OwnedWriteHalf>;

pub(crate) async fn handle(daemon: Arc<Daemon>, stream: UnixStream) {
    // A system daemon's view was chosen by the peer's uid already.
    match tether_transport::unix::peer_is_us(&stream) {
        Ok(true) => {}
        _ if daemon.system.is_some() => {}
        _ => {
            tracing::warn!("refused a connection from another user");
            let (_r, w) = stream.into_split();
            let msg = format!(
                "permission denied: this tether daemon belongs to uid {}",
                nix::unistd::getuid()
            );
            let err = Response::Error(ErrorInfo::new(ErrorKind::Permission, msg));
            let _ = FrameWriter::new(w).send(&err).await;
            return;
        }
    }
    let (r, w) = stream.into_split();
    let mut reader = FrameReader::new(r);
    let mut writer = FrameWriter::new(w);
    let mut first = crate::limits::first_frame(&mut reader).await;
    // A bridge says so before the client's first byte, and whether it is pinned to one
    // configuration.
    let mut pin = None;
    let mut bridged = false;
    let mut forwarded = None;
    match &first {
        Ok(Some(Request::Pin(name))) => {
            pin = Some(name.clone());
            bridged = true;
        }
        Ok(Some(Request::Bridged { agent })) => {
            bridged = true;
            forwarded = agent.clone();
        }
        _ => {}
    }
    if bridged {
        first = crate::limits::first_frame(&mut reader).await;
    }
    // Who this connection speaks for: a client daemon of another computer names itself; our
    // own CLI does not.
    let client = match &first {
        Ok(Some(Request::Hello {
            client: Some(c), ..
        })) if !c.id.is_empty() => {
            if let Err(e) = tether_proto::validate_client(c) {
                let _ = writer.send(&Response::Error(e)).await;
                return;
            }
            c.clone()
        }
        _ => daemon.me.clone(),
    };
    // The client's forwarded ssh agent, counted while this connection lasts.
    let _agent = forwarded
        .as_deref()
        .and_then(|a| crate::presence::agent_arrived(&daemon, &client, a));
    if !tether_transport::answer_hello(first, &mut writer, "tether daemon").await {
        return;
    }
    loop {
        if writer.flush().await.is_err() {
            return;
        }
        let req = match reader.read::<Request>().await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                let err = ErrorInfo::new(ErrorKind::Usage, format!("bad request: {e}"));
                let _ = writer.send(&Response::Error(err)).await;
                return;
            }
        };
        let mut req = req;
        if let Err(e) = crate::words::check(&req) {
            if writer.feed(&Response::Error(e)).await.is_err() {
                return;
            }
            continue;
        }
        if let Some(role) = &daemon.system
            && let Err(e) = crate::system::check(role, &req)
        {
            if writer.feed(&Response::Error(e)).await.is_err() {
                return;
            }
            continue;
        }
        if bridged {
            crate::pinning::from_afar(&daemon, pin.is_some(), &client, &mut req);
        }
        if let Some(p) = &pin
            && let Err(e) = crate::pinning::check(&daemon, p, &mut req).await
        {
            if writer.feed(&Response::Error(e)).await.is_err() {
                return;
            }
            continue;
        }
        tracing::debug!("request {}", crate::logfile::Variant(&req));
        let reply = match req {
            Request::New(spec) if spec.remote.is_some() => {
                crate::remote::new_session(&daemon, spec)
                    .await
                    .map(|i| Response::Sessions(vec![i]))
            }
            Request::New(spec) => crate::create::new_session(&daemon, spec, &client)
                .await
                .map(Response::Sessions),
            Request::Get(filter) if filter.remote.is_some() => crate::remote::get(&daemon, filter)
                .await
                .map(Response::Sessions),
            Request::Get(filter) => {
                let mut list = get(&daemon, &filter).await;
                seen_by(&mut list, &client);
                if let Some(p) = &pin {
                    crate::pinning::visible(p, &mut list);
                }
                Ok(Response::Sessions(list))
            }
            Request::Remove(spec) => crate::removing::remove(&daemon, spec, &client).await,
            Request::DaemonStatus => Ok(Response::Status(status(&daemon).await)),
            Request::DaemonStop => {
                let _ = writer.send(&Response::Ok).await;
                match &daemon.system {
                    // Root stops the system daemon; every user's sessions go on.
                    Some(role) => {
                        let _ = role.stop.send(true);
                    }
                    None => crate::closing::stop(&daemon).await,
                }
                return;
            }
            Request::Invoke(spec) => {
                invoke(&daemon, spec, &client, reader, writer).await;
                return;
            }
            Request::Receive(list) => {
                crate::attach::receive(&daemon, list, &client, reader, writer).await;
                return;
            }
            Request::Resume {
                session,
                from,
                keep_stdin,
                keep,
            } => {
                let how = crate::attach::Resuming {
                    session,
                    from,
                    keep_stdin,
                    keep,
                };
                crate::attach::resume(&daemon, how, &client, reader, writer).await;
                return;
            }
            Request::Presence => {
                crate::presence::serve(&daemon, client, reader, writer).await;
                return;
            }
            Request::Goodbye => Ok(Response::Ok),
            Request::Disconnect(list) => crate::attach::disconnect(&daemon, list, &client).await,
            Request::Connect(list) => {
                let reply = crate::attach::connect(&daemon, list, &client).await;
                if let Ok(Response::Sessions(v)) = &reply {
                    crate::jobs::reconnected(&daemon, v);
                }
                reply
            }
            Request::JobStart(req) => crate::jobs::start(&daemon, req)
                .await
                .map(|i| Response::Jobs(vec![i])),
            Request::JobList(q) => daemon.jobs.list(&q).map(Response::Jobs),
            Request::JobWait(q) => crate::jobs::wait(&daemon.jobs, &q)
                .await
                .map(Response::Jobs),
            Request::JobReceive(q) => crate::jobs::receive(&daemon.jobs, &q, &mut writer).await,
            Request::Configs(q) => match q.remote {
                Some(rt) => {
                    let far = tether_proto::ConfigQuery {
                        name: q.name,
                        remote: None,
                    };
                    crate::remote::call(&daemon, &rt, Request::Configs(far)).await
                }
                None => crate::configs::list(
                    &daemon.config_dir(),
                    q.name.as_deref(),
                    daemon.system.as_ref().map(|r| &r.account),
                )
                .map(Response::Configs),
            },
            Request::SessionJob(req) => crate::session_jobs::handle(&daemon, req, &client).await,
            Request::JobStop(q) => crate::jobs::stop(&daemon, &q).await.map(Response::Jobs),
            Request::JobRemove(q) => crate::jobs::remove(&daemon, &q)
                .await
                .map(|()| Response::Ok),
            _ => Err(ErrorInfo::new(
                ErrorKind::Usage,
                "request not valid outside an invocation",
            )),
        };
        let msg = reply.unwrap_or_else(Response::Error);
        if writer.feed(&msg).await.is_err() {
            return;
        }
    }
}

/// Lists sessions, asking each live host (and each computer holding one) for its current state.
pub(crate) async fn get(daemon: &Daemon, filter: &SessionFilter) -> Vec<SessionInfo> {
    let (candidates, remotes): (Vec<SessionInfo>, Vec<_>) = {
        let reg = daemon.registry.lock().await;
        let local = reg
            .sessions
            .values()
            .filter(|m| !m.temporary && selected(filter, &m.info))
            .map(|m| m.info.clone())
            .collect();
        let remote = reg
            .remotes
            .values()
            .filter(|h| selected(filter, &h.info))
            .cloned()
            .collect();
        (local, remote)
    };
    let mut tasks = Vec::new();
    for info in candidates {
        let paths = daemon.paths.clone();
        tasks.push(tokio::spawn(async move {
            if !matches!(info.state, State::Opened | State::Disconnected) {
                return (info, None, false);
            }
            let live = hosts::info(&paths, &info.instance_id).await;
            let gone = live.is_none();
            (info, live, gone)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        let Ok((info, live, gone)) = t.await else {
            continue;
        };
        let info = match (live, gone) {
            (Some(live), _) => live,
            (None, true) => {
                // The host did not answer: it recorded a final state and exited, or it was killed.
                match daemon.registry.lock().await.settle(&info.instance_id) {
                    Some(m) => m.info.clone(),
                    None => continue,
                }
            }
            (None, false) => info,
        };
        if filter.state.is_none_or(|s| s == info.state) {
            out.push(info);
        }
    }
    if !remotes.is_empty() {
        let live = crate::remote::refresh(daemon, remotes).await;
        out.extend(
            live.into_iter()
                .filter(|i| filter.state.is_none_or(|s| s == i.state)),
        );
        out.sort_by_key(|i| i.id);
    }
    out
}

async fn status(daemon: &Daemon) -> DaemonStatus {
    DaemonStatus {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        home: daemon.paths.home.display().to_string(),
        sessions: daemon.registry.lock().await.list().len() as u32,
        links: daemon.links.status(),
    }
}

/// `daemon stop`: idle sessions are closed; busy ones go on and the next daemon adopts them
/// (SPEC §3.14).
/// Runs an invocation: resolves the session (or creates a temporary one) and hands the client's
/// connection to its host, which serves the rest of the invocation directly.
async fn invoke(
    daemon: &Arc<Daemon>,
    mut spec: InvokeSpec,
    client: &ClientId,
    reader: Reader,
    mut writer: Writer,
) {
    if spec.session.is_empty()
        && let Some(rt) = spec.remote.clone()
    {
        return crate::remote::invoke(daemon, rt, spec, reader, writer).await;
    }
    if !spec.session.is_empty() {
        let remote = match daemon.registry.lock().await.resolve(&spec.session) {
            Ok(Found::Remote(h)) => Some((h.target.clone(), h.info.instance_id.clone())),
            _ => None,
        };
        if let Some((rt, iid)) = remote {
            spec.session = iid;
            return crate::remote::invoke(daemon, rt, spec, reader, writer).await;
        }
    }
    let temporary = spec.session.is_empty();
    let mut spare = false;
    let target = if temporary && crate::pool::eligible(&spec) {
        crate::pool::host_for(daemon, &spec, client)
            .await
            .map(|(info, pooled)| {
                spare = pooled;
                info
            })
    } else if temporary {
        let ns = NewSession {
            env: spec.env.clone(),
            cwd: spec.cwd.clone(),
            configuration: spec.configuration.clone(),
            temporary: true,
            ..Default::default()
        };
        crate::create::new_session(daemon, ns, client)
            .await
            .map(|mut v| v.remove(0))
    } else {
        resolve_open(daemon, &spec.session).await
    };
    let info = match target {
        Ok(info) => info,
        Err(e) => {
            let _ = writer.send(&Response::Error(e)).await;
            return;
        }
    };
    spec.client = Some(client.clone());
    let handed = match hand_off(daemon, &info, spec, reader, writer).await {
        Ok(handed) => handed,
        Err(e) => {
            tracing::debug!("invocation in {} could not start: {e}", info.name);
            false
        }
    };
    if spare {
        // It stays registered (hidden) while it is in the pool: the pool forgets it when it
        // goes.
        return;
    }
    if temporary {
        if !handed {
            let _ = hosts::close(&daemon.paths, &info.instance_id).await;
        }
        // The host closes itself after its one invocation; the handle was never listed.
        daemon
            .registry
            .lock()
            .await
            .forget_temporary(&info.instance_id);
    }
}

async fn resolve_open(daemon: &Daemon, word: &str) -> Result<SessionInfo, ErrorInfo> {
    let reg = daemon.registry.lock().await;
    let Found::Local(meta) = reg.resolve(word)? else {
        return Err(ErrorInfo::new(
            ErrorKind::Internal,
            format!("session {word} is on another computer"),
        ));
    };
    match meta.info.state {
        // A Disconnected session's host gives the precise answer.
        State::Opened | State::Disconnected => Ok(meta.info.clone()),
        state => Err(closed_error(
            &meta.info.name,
            state,
            meta.info.reason.as_deref(),
        )),
    }
}

pub(crate) fn closed_error(name: &str, state: State, reason: Option<&str>) -> ErrorInfo {
    let why = reason.map(|r| format!(": {r}")).unwrap_or_default();
    ErrorInfo::new(
        ErrorKind::NotFound,
        format!(
            "session {name} is {}{why}; 'tether remove {name}' clears it",
            state.as_str()
        ),
    )
}

/// Hands the client's connection to the session host (SCM_RIGHTS) together with the `Invoke`
/// and any bytes already read past it. From then on client and host talk directly: the daemon
/// adds no hop to the output, the exit status or Ctrl-C.
pub(crate) async fn hand_off(
    daemon: &Daemon,
    info: &SessionInfo,
    spec: InvokeSpec,
    reader: Reader,
    writer: Writer,
) -> std::io::Result<bool> {
    hand_off_with(
        daemon,
        info,
        |prefix| Request::Handoff { spec, prefix },
        reader,
        writer,
    )
    .await
}

/// Hands the client's connection to the session's host with the request `make` builds from
/// the bytes already read past the client's own request.
pub(crate) async fn hand_off_with(
    daemon: &Daemon,
    info: &SessionInfo,
    make: impl FnOnce(Vec<u8>) -> Request,
    reader: Reader,
    mut writer: Writer,
) -> std::io::Result<bool> {
    writer.flush().await.map_err(std::io::Error::other)?;
    let (client_r, prefix) = reader.into_parts();
    let client = client_r
        .reunite(writer.into_inner())
        .map_err(std::io::Error::other)?;
    let frame = tether_proto::encode(&make(prefix)).map_err(std::io::Error::other)?;
    let sent = async {
        let host = UnixStream::connect(daemon.paths.host_socket(&info.instance_id)).await?;
        tether_transport::unix::send_with_fd(&host, &frame, client.as_raw_fd()).await
    }
    .await;
    if sent.is_ok() {
        return Ok(true);
    }
    // The host is gone or going: it records why (Broken, Closed) before it exits.
    let err = {
        match daemon.registry.lock().await.settle(&info.instance_id) {
            Some(m) => closed_error(&m.info.name, m.info.state, m.info.reason.as_deref()),
            None => closed_error(&info.name, State::Closed, None),
        }
    };
    let (r, w) = client.into_split();
    drop(r);
    let mut writer = FrameWriter::new(w);
    writer
        .send(&Response::Error(err))
        .await
        .map_err(std::io::Error::other)?;
    Ok(false)
}
