//! `tether bridge`: run by ssh on the target computer. Connects its stdin and stdout to this
//! user's daemon (starting it if needed), so a client elsewhere speaks the ordinary protocol
//! over the ssh channel. The daemon outlives the bridge and the ssh connection.
//!
//! Because the daemon hands an invocation's connection to the session host (SCM_RIGHTS), the
//! host then talks to the bridge directly: remote invocations cost one extra hop, not two.

use super::error::{CliError, CliResult};
use clap::Args;
use tether_client::{ErrorKind, Paths};

#[derive(Args, Debug)]
pub struct BridgeArgs {
    /// Pin this connection to one session configuration (for ssh forced commands).
    #[arg(long)]
    configuration: Option<String>,
}

pub async fn run(a: BridgeArgs) -> CliResult {
    if let Some(c) = a.configuration.filter(|c| c != "default") {
        return Err(CliError::new(
            ErrorKind::NotFound,
            format!("configuration {c} not found on this computer"),
        ));
    }
    let paths = Paths::from_env()?;
    // Make sure a daemon runs, then talk to its socket byte for byte.
    drop(tether_client::Client::connect_or_start(&paths).await?);
    let sock = tokio::net::UnixStream::connect(paths.daemon_socket())
        .await
        .map_err(|e| {
            CliError::new(
                ErrorKind::Connection,
                format!("cannot reach the daemon: {e}"),
            )
        })?;
    let (mut sr, mut sw) = sock.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut sw).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut sw).await;
    });
    // The daemon's side decides the end: once it closes, nothing more can come back.
    let mut stdout = tokio::io::stdout();
    let _ = tokio::io::copy(&mut sr, &mut stdout).await;
    let _ = tokio::io::AsyncWriteExt::flush(&mut stdout).await;
    Ok(0)
}
