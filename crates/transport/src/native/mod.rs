//! The native transport (`--transport native`): an SSH client inside the client daemon
//! (russh), so a warm link costs a TCP connection and some buffers instead of an ssh process
//! (BENCHMARKS.md, "Links for big fleets").
//!
//! It behaves as `ssh` with `BatchMode` would, from the same configuration: `ssh -G` resolves
//! the user's options ([`config`]); the host key is checked against the known_hosts files that
//! names, as `StrictHostKeyChecking` says ([`known_hosts`]); the agent and unencrypted identity
//! files log in (`auth`). It then runs the same far-side command the ssh transport runs, on
//! one exec channel, and the mux runs over that channel's bytes (`stream`) exactly as over
//! an ssh child's stdin and stdout. What it cannot do (ProxyJump, ProxyCommand, host
//! certificates, passphrase prompts) it refuses in one line naming the computer.

mod auth;
pub mod config;
pub mod known_hosts;
mod stream;

use crate::farside::err;
use config::Strict;
use russh::keys::PublicKeyOrCertificate;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use tether_proto::{ErrorInfo, ErrorKind, RemoteTarget};

/// Buffer size of each direction of a native link's mux (the ssh transport's are 256 KiB):
/// 16 KiB frames are what a warm link mostly carries, and a fleet multiplies every byte here.
pub const BUFFER: usize = 16 * 1024;

/// Why the native client stopped: russh's own errors, or a refusal of ours (host key).
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error("{0}")]
    Ssh(#[from] russh::Error),
    #[error("{0}")]
    Refused(String),
}

/// The handler russh calls back: host key checks and agent forwarding.
pub struct Client {
    computer: String,
    /// `[host]:port` (or the `HostKeyAlias`) as known_hosts lists it.
    lookup: String,
    user_files: Vec<PathBuf>,
    global_files: Vec<PathBuf>,
    strict: Strict,
    /// Learned names are written hashed (`HashKnownHosts`).
    hash: bool,
    /// The agent that forwarded-agent channels reach, when `ForwardAgent` is on.
    forward_to: Option<PathBuf>,
}

impl Client {
    fn host_key(&self, key: &russh::keys::PublicKey) -> Result<bool, NativeError> {
        use known_hosts::Known;
        let files: Vec<PathBuf> = self
            .user_files
            .iter()
            .chain(&self.global_files)
            .cloned()
            .collect();
        let fp = key.fingerprint(russh::keys::HashAlg::Sha256);
        let name = &self.lookup;
        match known_hosts::check(&files, name, key) {
            Known::Match => Ok(true),
            Known::Revoked { file, line } => Err(NativeError::Refused(format!(
                "its host key {fp} is revoked in {}:{line}",
                file.display()
            ))),
            Known::Changed { file, line } => Err(NativeError::Refused(format!(
                "its host key {fp} is not the one known_hosts has for {name} ({}:{line}): the \
                 key changed or someone is in between; if the change is expected, remove the \
                 old one (ssh-keygen -R '{name}')",
                file.display()
            ))),
            Known::Unknown => match (self.strict, self.user_files.first()) {
                (Strict::No, _) => Ok(true),
                (Strict::AcceptNew, Some(file)) => {
                    known_hosts::learn(file, name, key, self.hash).map_err(|e| {
                        NativeError::Refused(format!(
                            "cannot add its host key to {}: {e}",
                            file.display()
                        ))
                    })?;
                    tracing::info!(
                        "{}: added host key {fp} to {}",
                        self.computer,
                        file.display()
                    );
                    Ok(true)
                }
                _ => Err(NativeError::Refused(format!(
                    "its host key {fp} is not in known_hosts ({}): log in once with ssh to check \
                     and add it, or set StrictHostKeyChecking accept-new for it",
                    files
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            },
        }
    }
}

impl russh::client::Handler for Client {
    type Error = NativeError;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => self.host_key(key),
            PublicKeyOrCertificate::Certificate(_) => Err(NativeError::Refused(
                "it offers a host certificate, which the native transport does not check; use \
                 --transport ssh for it"
                    .into(),
            )),
        }
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        channel: russh::Channel<russh::client::Msg>,
        reply: russh::client::ChannelOpenHandle,
        _session: &mut russh::client::Session,
    ) -> Result<(), Self::Error> {
        // Dropping `reply` refuses the channel.
        let Some(path) = self.forward_to.clone() else {
            return Ok(());
        };
        let Ok(agent) = tokio::net::UnixStream::connect(&path).await else {
            return Ok(());
        };
        reply.accept().await;
        tokio::spawn(async move {
            let mut ch = channel.into_stream();
            let mut agent = agent;
            let _ = tokio::io::copy_bidirectional(&mut ch, &mut agent).await;
        });
        Ok(())
    }
}

/// A native link's SSH connection: closed (with a disconnect message) when dropped.
pub struct Connection {
    handle: Option<russh::client::Handle<Client>>,
    ending: stream::Ending,
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let bye = h.disconnect(russh::Disconnect::ByApplication, "", "en");
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), bye).await;
            });
        }
    }
}

impl crate::link::Ended for Connection {
    fn why(&mut self) -> Pin<Box<dyn Future<Output = String> + Send + '_>> {
        Box::pin(self.ending.why())
    }
}

fn ssh_error(c: &str, e: NativeError) -> ErrorInfo {
    let why = match e {
        NativeError::Refused(why) => why,
        NativeError::Ssh(e) => format!("ssh: {e}"),
    };
    err(ErrorKind::Connection, c, why)
}

/// Connects to `rt`'s computer and starts `command` on an exec channel; returns the
/// connection, the command's stdout and its stdin.
pub async fn connect(
    rt: &RemoteTarget,
    command: &str,
) -> Result<
    (
        Connection,
        stream::Out,
        impl tokio::io::AsyncWrite + Unpin + Send + 'static,
    ),
    ErrorInfo,
> {
    let c = rt.computer.as_str();
    let cfg = config::resolve(rt).await?;
    let tcp = tokio::net::TcpStream::connect((cfg.hostname.as_str(), cfg.port))
        .await
        .map_err(|e| {
            err(
                ErrorKind::Connection,
                c,
                format!("cannot reach {} port {}: {e}", cfg.hostname, cfg.port),
            )
        })?;
    // The mux writes a burst and then waits for the answer: nothing for Nagle to gather.
    let _ = tcp.set_nodelay(true);
    let agent = auth::agent_path(&cfg, rt.ssh_auth_sock.as_deref());
    let handler = Client {
        computer: c.to_string(),
        lookup: known_hosts::lookup_name(
            cfg.host_key_alias.as_deref().unwrap_or(&cfg.hostname),
            if cfg.host_key_alias.is_some() {
                22
            } else {
                cfg.port
            },
        ),
        user_files: cfg.known_hosts.clone(),
        global_files: cfg.global_known_hosts.clone(),
        strict: cfg.strict,
        hash: cfg.hash_known_hosts,
        forward_to: agent.clone().filter(|_| cfg.forward_agent),
    };
    let config = russh::client::Config {
        keepalive_interval: cfg.keepalive.map(|k| k.0),
        keepalive_max: cfg.keepalive.map_or(3, |k| k.1),
        nodelay: true,
        preferred: cfg.preferred(),
        ..Default::default()
    };
    let mut handle = russh::client::connect_stream(Arc::new(config), tcp, handler)
        .await
        .map_err(|e| ssh_error(c, e))?;
    auth::login(&mut handle, c, &cfg, agent.as_deref()).await?;
    let channel = handle
        .channel_open_session()
        .await
        .map_err(|e| ssh_error(c, e.into()))?;
    if cfg.forward_agent && agent.is_some() {
        let _ = channel.agent_forward(false).await;
    }
    channel
        .exec(false, command)
        .await
        .map_err(|e| ssh_error(c, e.into()))?;
    let (read, write) = channel.split();
    let (out, ending) = stream::start(read, c.to_string());
    // russh's writer borrows its half of the channel: a task owns both and is fed through a
    // pipe (one more copy, on a path whose bound is the crypto).
    let (mut pipe, input) = tokio::io::simplex(BUFFER);
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut w = write.make_writer();
        let _ = tokio::io::copy(&mut pipe, &mut w).await;
        let _ = w.shutdown().await;
    });
    Ok((
        Connection {
            handle: Some(handle),
            ending,
        },
        out,
        input,
    ))
}
