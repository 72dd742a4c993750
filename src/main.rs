//! `tether`: PowerShell-style persistent sessions for Unix. This file only dispatches; each
//! subcommand lives in `cli/`.
//!
//! On Linux with glibc the process starts at a C `main` of ours rather than Rust's `fn main`
//! (see [`main`] for why); unit tests keep the test harness's own `main`.
#![cfg_attr(all(target_os = "linux", target_env = "gnu", not(test)), no_main)]

mod cli;

/// The process's entry, in place of Rust's start-up (`lang_start`). That start-up asks glibc
/// for the main thread's stack bounds to guard against overflow, and glibc finds them by
/// reading and parsing `/proc/self/maps`: about 0.3 ms of the ~2 ms that a whole
/// `tether invoke -s S true` costs (docs/PROFILES.md §2). What of it tether needs is done in
/// [`start`]; the arguments still reach `std::env::args` (glibc hands them to Rust's own
/// initialiser, not only to `main`). What is lost is the message for an overflowed main
/// stack: such a process dies of SIGSEGV instead of saying so.
#[cfg(all(target_os = "linux", target_env = "gnu", not(test)))]
#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    start();
    // A panic may not unwind out of a C function: it ends the process as Rust's `main` would.
    let code = std::panic::catch_unwind(cli::main).unwrap_or(101);
    // Flushes stdout, as returning from Rust's `main` would.
    std::process::exit(code);
}

#[cfg(not(all(target_os = "linux", target_env = "gnu", not(test))))]
fn main() {
    std::process::exit(cli::main());
}

/// What Rust's start-up does that tether relies on: SIGPIPE ignored (writing into a closed pipe
/// or socket is an `EPIPE` error to handle, never a silent death; children get the default back
/// when spawned, as before), and descriptors 0-2 open (on /dev/null if they were closed), so a
/// file or socket opened later never becomes someone's stdin, stdout or stderr.
#[cfg(all(target_os = "linux", target_env = "gnu", not(test)))]
fn start() {
    // SAFETY: setting a signal's disposition to "ignore" touches no memory of ours.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: poll reads and writes only the array, whose length is passed.
    let polled = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
    for p in fds {
        let closed = match polled {
            // SAFETY: F_GETFD only asks whether the descriptor is open.
            -1 => (unsafe { libc::fcntl(p.fd, libc::F_GETFD) }) == -1,
            _ => p.revents & libc::POLLNVAL != 0,
        };
        if closed {
            // The lowest free descriptor: this one, as the lower ones are open by now.
            // SAFETY: a constant C string; the descriptor is kept open for the process.
            unsafe {
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
        }
    }
}
