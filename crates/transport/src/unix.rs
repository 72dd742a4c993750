//! Private unix sockets: bind with mode 0600 inside a 0700 directory, and accept only peers
//! running as our own uid (SO_PEERCRED / getpeereid via tokio's `peer_cred`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tokio::net::{UnixListener, UnixStream};

/// Binds a listening socket at `path`, replacing a stale socket file left by a dead process.
/// The caller must hold the instance lock, so a live listener is never replaced.
pub fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Accepts only connections from processes of the same user.
pub fn peer_is_us(stream: &UnixStream) -> std::io::Result<bool> {
    let cred = stream.peer_cred()?;
    Ok(cred.uid() == nix::unistd::getuid().as_raw())
}

/// Sets a socket's options for low latency. Unix sockets have no Nagle, so this is a no-op today;
/// it exists so the ssh transport can set TCP_NODELAY in one place.
pub async fn connect(path: &Path) -> std::io::Result<UnixStream> {
    UnixStream::connect(path).await
}
