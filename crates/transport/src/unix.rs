//! Private unix sockets: bind with mode 0600 inside a 0700 directory, and accept only peers
//! running as our own uid (SO_PEERCRED / getpeereid via tokio's `peer_cred`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tokio::net::{UnixListener, UnixStream};

/// Binds a listening socket at `path`, replacing a stale socket file left by a dead process.
/// The caller must hold the instance lock, so a live listener is never replaced.
pub fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    bind_with_mode(path, 0o600)
}

/// As [`bind_private`], with the socket file's mode given: a system daemon's socket is 0666,
/// because every user may connect and the daemon tells them apart by their uid.
pub fn bind_with_mode(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(crate::at(path)(e)),
    }
    let listener = UnixListener::bind(path).map_err(crate::at(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(crate::at(path))?;
    Ok(listener)
}

/// Accepts only connections from processes of the same user.
pub fn peer_is_us(stream: &UnixStream) -> std::io::Result<bool> {
    Ok(peer_uid(stream)? == nix::unistd::getuid().as_raw())
}

/// The uid of the process at the other end, from the kernel (SO_PEERCRED on Linux,
/// getpeereid on macOS and the BSDs): it cannot be forged by the peer.
pub fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    Ok(stream.peer_cred()?.uid())
}

/// Sets a socket's options for low latency. Unix sockets have no Nagle, so this is a no-op today;
/// it exists so the ssh transport can set TCP_NODELAY in one place.
pub async fn connect(path: &Path) -> std::io::Result<UnixStream> {
    UnixStream::connect(path).await
}

/// Sends `bytes` with a file descriptor attached (SCM_RIGHTS). The daemon uses this to hand a
/// client's connection to a session host, which then talks to the client directly; the daemon
/// leaves the data path.
pub async fn send_with_fd(
    stream: &UnixStream,
    bytes: &[u8],
    fd: std::os::fd::RawFd,
) -> std::io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    use std::os::fd::AsRawFd;
    let sent = loop {
        stream.writable().await?;
        let res = stream.try_io(tokio::io::Interest::WRITABLE, || {
            let iov = [std::io::IoSlice::new(bytes)];
            let fds = [fd];
            sendmsg::<()>(
                stream.as_raw_fd(),
                &iov,
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            )
            .map_err(std::io::Error::from)
        });
        match res {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    };
    // The descriptor travelled with the first byte; the rest is ordinary data.
    let mut rest = &bytes[sent..];
    while !rest.is_empty() {
        stream.writable().await?;
        match stream.try_write(rest) {
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// First read on a connection, through recvmsg so that a descriptor sent with it (see
/// [`send_with_fd`]) is received rather than silently dropped. Returns the bytes read (empty at
/// end of stream) and at most one descriptor; extra descriptors are closed.
pub async fn recv_with_fd(
    stream: &UnixStream,
) -> std::io::Result<(Vec<u8>, Option<std::os::fd::OwnedFd>)> {
    recv_fd(stream, 8 * 1024, nix::sys::socket::MsgFlags::empty()).await
}

/// The descriptor sent with a connection's first bytes, if any, without reading them
/// (`MSG_PEEK`: the kernel gives us a copy, and the bytes stay for the reader that follows,
/// which drops the original). Linux only; elsewhere always `None`, and a client that sends
/// one is refused for want of it.
pub async fn peek_fd(stream: &UnixStream) -> std::io::Result<Option<std::os::fd::OwnedFd>> {
    #[cfg(target_os = "linux")]
    {
        let peek = nix::sys::socket::MsgFlags::MSG_PEEK;
        Ok(recv_fd(stream, 1, peek).await?.1)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = stream;
        Ok(None)
    }
}

/// One recvmsg of up to `len` bytes, with `flags`: the bytes, and the first descriptor that
/// came with them (extra ones are closed as they drop).
async fn recv_fd(
    stream: &UnixStream,
    len: usize,
    flags: nix::sys::socket::MsgFlags,
) -> std::io::Result<(Vec<u8>, Option<std::os::fd::OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    loop {
        stream.readable().await?;
        let res = stream.try_io(tokio::io::Interest::READABLE, || {
            let mut buf = vec![0u8; len];
            let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let msg = recvmsg::<()>(
                stream.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                flags | MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(std::io::Error::from)?;
            let n = msg.bytes;
            let mut fds = Vec::new();
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::ScmRights(v) = c {
                        // SAFETY: the kernel just created these descriptors for us.
                        fds.extend(v.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                    }
                }
            }
            buf.truncate(n);
            Ok((buf, fds))
        });
        match res {
            Ok((buf, mut fds)) => {
                let first = (!fds.is_empty()).then(|| fds.swap_remove(0));
                return Ok((buf, first));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Turns a received descriptor into a tokio stream.
pub fn stream_from_fd(fd: std::os::fd::OwnedFd) -> std::io::Result<UnixStream> {
    let std_stream = std::os::unix::net::UnixStream::from(fd);
    std_stream.set_nonblocking(true)?;
    UnixStream::from_std(std_stream)
}

/// Resolves once the socket file at `path` no longer is the one we bound (deleted with its
/// `TETHER_HOME`, or replaced by another process): a listener nobody can reach should end.
/// Checks every few seconds; costs one `stat`.
pub async fn until_socket_gone(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    let ours = ino(path);
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        if ours.is_none() || ino(path) != ours {
            return;
        }
    }
}
