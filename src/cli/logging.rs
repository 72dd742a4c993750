//! `-v`/`--verbose`: tracing output of this CLI call on stderr.
//!
//! The CLI logs nothing by default, so stderr carries only the command's own output and
//! tether's one-line errors (scripts and tests compare it byte for byte). `TETHER_LOG` is the
//! daemon's log level, read by a daemon when it starts; `-v` deliberately does not touch it, so
//! a daemon that this call happens to start still logs at its own level to its own file.
//!
//! Installed only for commands that do not fork a daemon (see `cli::run`): a forked daemon
//! would inherit a global subscriber writing at the CLI's level and ignore `TETHER_LOG`.

use std::io::IsTerminal;

/// The level for a count of `-v`: 1 info, 2 debug, 3 or more trace.
fn level(verbosity: u8) -> Option<&'static str> {
    match verbosity {
        0 => None,
        1 => Some("info"),
        2 => Some("debug"),
        _ => Some("trace"),
    }
}

/// Installs a stderr subscriber at the level `-v` asks for (nothing without `-v`).
pub fn init(verbosity: u8) {
    let Some(level) = level(verbosity) else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .with_ansi(super::output::colour_on(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(true)
        .try_init();
    tracing::debug!(
        pid = std::process::id(),
        tty = std::io::stderr().is_terminal(),
        "tether {} logging at {level}",
        env!("CARGO_PKG_VERSION")
    );
}

#[cfg(test)]
mod tests {
    use super::level;

    #[test]
    fn each_v_raises_the_level_and_more_than_three_stays_at_trace() {
        assert_eq!(level(0), None);
        assert_eq!(level(1), Some("info"));
        assert_eq!(level(2), Some("debug"));
        assert_eq!(level(3), Some("trace"));
        assert_eq!(level(9), Some("trace"));
    }
}
