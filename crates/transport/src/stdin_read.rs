//! Reading a command's stdin from a pipe or a file into frames, shared by the CLI (which
//! reads its own stdin) and the client daemon (which reads a stdin the CLI gave it,
//! `Request::GiveStdin`). Both read on a thread of their own, blocking, and stop without
//! reading further once told the invocation is over, so nothing is swallowed that a later
//! reader of the same stdin should get.

use std::os::fd::{AsRawFd, OwnedFd};

/// Most bytes of stdin one frame carries. Larger frames (240 KiB, sized by `FIONREAD`) were
/// tried for a copy's 1 MiB pipe: no gain beyond the noise (docs/PROFILES.md §6).
pub const STDIN_CHUNK: usize = 64 * 1024;

/// Waits until `input` has bytes (or its end) to read; false once `stop`'s write end is
/// closed (the invocation is over): then nothing more is read, so nothing is swallowed.
pub fn input_ready(input: &impl AsRawFd, stop: &OwnedFd) -> bool {
    let mut fds = [
        libc::pollfd {
            fd: input.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: two valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r > 0 {
            return fds[1].revents == 0;
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return false;
        }
    }
}

/// How long a reader that found its pipe empty lets bytes gather once woken. Commands write
/// in small pieces (`head`, `cat`: 4–8 KiB), and a pipe wakes its reader on every write into
/// an empty pipe: read at once, each piece would become a frame of its own that every process
/// on the path wakes for. A tenth of a millisecond lets a widened pipe fill (as the CLI's
/// splicing does, `client/src/lend.rs`).
const GATHER: std::time::Duration = std::time::Duration::from_micros(100);

/// As [`input_ready`], but when `input` was empty, waits a tenth of a millisecond once it is
/// not, so that the next read takes more than one small write.
pub fn input_gathered(input: &impl AsRawFd, stop: &OwnedFd) -> bool {
    let mut now = [libc::pollfd {
        fd: input.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: one valid pollfd for the duration of the call; a timeout of 0 does not block.
    if unsafe { libc::poll(now.as_mut_ptr(), 1, 0) } > 0 {
        return true;
    }
    let ready = input_ready(input, stop);
    if ready {
        std::thread::sleep(GATHER);
    }
    ready
}

/// One read of up to `cap` bytes into a new buffer, which then travels as the frame's payload
/// (no copy, and no zeroing before the read). A short read gives its spare memory back, so
/// the stdin the daemon keeps for a replay holds little more than its bytes.
pub fn read_fresh(fd: &impl AsRawFd, cap: usize) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::<u8>::with_capacity(cap);
    // SAFETY: the kernel writes at most `cap` bytes into the vector's spare capacity, and the
    // length covers only what it wrote.
    let n = unsafe { libc::read(fd.as_raw_fd(), v.as_mut_ptr().cast(), cap) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `n` (≤ `cap`) bytes were just written.
    unsafe { v.set_len(n as usize) };
    if v.len() < cap / 2 {
        v.shrink_to_fit();
    }
    Ok(v)
}

/// Whether `stop`'s write end is closed (the invocation is over), without waiting: a file is
/// always ready to read, so [`input_gathered`] returns at once and never looks at `stop`.
pub fn stopped(stop: &OwnedFd) -> bool {
    let mut fds = [libc::pollfd {
        fd: stop.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: one valid pollfd for the duration of the call; a timeout of 0 does not block.
    unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) != 0 }
}

/// Whether a CLI may hand `fd` (its stdin) to another process that reads it for the command
/// (its daemon's relay, or a local host's FIFO through it): anything open but a terminal,
/// which stays the user's.
pub fn givable(fd: &impl std::os::fd::AsFd) -> bool {
    nix::sys::stat::fstat(fd.as_fd()).is_ok() && !nix::unistd::isatty(fd).unwrap_or(true)
}

/// Whether `fd` is a pipe (or FIFO).
pub fn is_fifo(fd: &impl std::os::fd::AsFd) -> bool {
    use nix::sys::stat::SFlag;
    nix::sys::stat::fstat(fd.as_fd()).is_ok_and(|st| {
        SFlag::from_bits_truncate(st.st_mode as _) & SFlag::S_IFMT == SFlag::S_IFIFO
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_what_is_there_and_stops_when_told() {
        let (r, mut w) = std::io::pipe().unwrap();
        let (stop, stop_w) = nix::unistd::pipe().unwrap();
        assert!(givable(&r) && is_fifo(&r));
        assert!(!stopped(&stop));
        w.write_all(b"abc").unwrap();
        assert!(input_ready(&r, &stop));
        assert!(input_gathered(&r, &stop));
        assert_eq!(read_fresh(&r, STDIN_CHUNK).unwrap(), b"abc");
        drop(stop_w);
        assert!(stopped(&stop));
        w.write_all(b"d").unwrap();
        assert!(
            !input_ready(&r, &stop),
            "told to stop: nothing more is read"
        );
        assert_eq!(
            read_fresh(&r, 8).unwrap(),
            b"d",
            "and the byte is still there"
        );
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(givable(&f), "a device may be given");
        let f = std::fs::File::open("Cargo.toml").unwrap();
        assert!(givable(&f), "a file may be given");
        // SAFETY: plain libc call; the descriptor is owned right after.
        let pty = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY) };
        assert!(pty >= 0, "a pseudo-terminal");
        // SAFETY: `pty` was just opened and is ours alone.
        let pty = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(pty) };
        assert!(!givable(&pty), "a terminal stays the user's");
    }
}
