//! tether's integration tests: one test binary (`cargo test --test it`), one module per
//! subject, sharing the helpers in [`common`]. Test names carry their module
//! (`enter_keys::…`), so `cargo test --test it enter_keys::` runs one subject.
//!
//! The tests run as threads of this one process (as many at once as libtest runs, which is
//! the number of CPUs unless `RUST_TEST_THREADS` says otherwise), so a test must not change
//! process-wide state: no `std::env::set_var`, no `chdir`, no umask, no signal handlers, and
//! names of system-wide things (network namespaces, accounts) unique per test, not per process.

mod common;

mod adopt;
mod agent;
mod awkward;
mod bridge;
mod cleanup;
mod cli_ux;
mod configs;
mod copy;
mod daemon;
mod direct;
mod disconnect;
mod driver;
mod engines;
mod enter;
mod enter_keys;
mod enter_shells;
mod entered;
mod fanout;
mod given;
mod holders;
mod hostile;
mod interrupt;
mod invoke;
mod jobs;
mod jobs_restart;
mod lend;
mod lend_hostile;
mod library;
mod native;
mod ops;
mod output_mode;
mod ownership;
mod pinned;
mod real_use;
mod reconnect;
mod remote;
mod remote_sessions;
mod restarts;
mod restricted;
mod scale;
mod sessions;
mod spares;
mod stdin_kinds;
mod system;
mod trust;
mod trust_frames;
mod usage;
