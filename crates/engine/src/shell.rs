//! Building the text the host writes to the shell's stdin.
//!
//! The shell reads its command stream from a pipe only the host writes to. Each invocation is one
//! small wrapper: the user's script travels inside a single-quoted word (so no byte of it can be
//! parsed as part of the wrapper), runs through `eval` inside a brace group whose redirections
//! point at that invocation's own FIFOs, and the status is written by the shell's `printf`
//! builtin to a status FIFO opened by path each time (so user code that closes fds or redefines
//! `printf`/`echo`/`read` as functions cannot break it). Completion is that status record, never
//! text in the output.

use std::path::Path;

/// Which shell family drives the session: decides how to call a builtin past user functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// bash and zsh have `builtin`, which bypasses functions of the same name.
    Bash,
    Zsh,
    /// Other POSIX shells: `command` bypasses functions.
    Posix,
}

impl Flavour {
    pub fn of(shell: &str) -> Flavour {
        let base = shell.rsplit('/').next().unwrap_or(shell);
        if base.contains("bash") {
            Flavour::Bash
        } else if base.contains("zsh") {
            Flavour::Zsh
        } else {
            Flavour::Posix
        }
    }

    /// Arguments that start the shell reading commands from stdin without any rc files.
    pub fn args(self) -> &'static [&'static str] {
        match self {
            Flavour::Bash => &["--noprofile", "--norc", "-s"],
            Flavour::Zsh => &["-f", "-s"],
            Flavour::Posix => &["-s"],
        }
    }

    /// Prefix for the special builtins we call (`set`, `eval`): bash and zsh let a user
    /// function shadow them, so call them through `builtin`; POSIX shells find special builtins
    /// before functions.
    fn special(self) -> &'static str {
        match self {
            Flavour::Bash | Flavour::Zsh => "\\builtin ",
            Flavour::Posix => "",
        }
    }

    fn builtin(self) -> &'static str {
        match self {
            Flavour::Bash | Flavour::Zsh => "\\builtin",
            Flavour::Posix => "\\command",
        }
    }

    /// Written once when the shell starts.
    ///
    /// `set -m` gives every command its own process group, so stopping a command never signals
    /// the shell. Trapping INT keeps a non-interactive shell alive when a command it waits for
    /// dies of SIGINT (bash would otherwise kill itself), and `break` gets a builtin-only loop
    /// out of its loop.
    ///
    /// The two read-only variables name the per-invocation script files (see [`wrapper`]).
    /// `shell`: the shell's own path, which prompts ask about syntax (`$__tether_sh -n`).
    /// `$__tether_x` is tether's own program, which `tether copy` runs in the session.
    pub fn prelude(self, dir: &Path, shell: &str) -> String {
        // zsh refuses monitor mode without a terminal; its commands stay in the shell's group
        // and are signalled one by one instead (see `procs`).
        let mut s = String::from(if self == Flavour::Zsh { "" } else { "set -m\n" });
        // Inside an invocation's script (`__tether_in`, set by [`wrapper`], cleared by the status
        // script) `return` leaves the sourced script: the rest of the line or script is
        // abandoned, as an interactive shell abandons it on Ctrl-C, in every shell (not only
        // where job control makes bash do so). A function of the script that was running is
        // left alone with it (`return` leaves the innermost function or sourced file).
        s.push_str(
            "trap 'case ${__tether_in-} in 1) return 130 2>/dev/null;; esac; break 1000 2>/dev/null' INT\n",
        );
        // Sets `$?` for the next command (see `wrapper`).
        // (`\\builtin`: a user function named `return` must not change what it does.)
        s.push_str(match self {
            Flavour::Posix => "__tether_ret() { return \"$1\"; }\n",
            _ => "__tether_ret() { \\builtin return \"$1\"; }\n",
        });
        s.push_str(&format!(
            "readonly __tether_w={} __tether_s={} __tether_sh={} __tether_x={} __tether_flavour={}\n",
            quote(&dir.join("w").to_string_lossy()),
            quote(&dir.join("s").to_string_lossy()),
            quote(shell),
            quote(&crate::foreground::own_program().to_string_lossy()),
            match self {
                Flavour::Bash => "bash",
                Flavour::Zsh => "zsh",
                Flavour::Posix => "posix",
            }
        ));
        match self {
            Flavour::Bash => s.push_str("shopt -s expand_aliases\n"),
            Flavour::Zsh => s.push_str("setopt NO_NOTIFY NO_HUP 2>/dev/null\n"),
            Flavour::Posix => {}
        }
        s
    }
}

/// Quoting lives in the transport crate, which also builds remote command lines.
pub use tether_transport::shell_quote as quote;

/// Where one invocation's streams are.
pub struct InvocationPaths<'a> {
    pub stdin: Option<&'a Path>,
    pub stdout: &'a Path,
    pub stderr: &'a Path,
    /// Made by the host when it stops the invocation ([`begin`]).
    pub cancelled: &'a Path,
}

/// The lines written to the shell's stdin for every invocation.
///
/// A shell reads a pipe one byte at a time (so as not to steal input from its children), so the
/// invocation itself goes into two small files that the shell sources, and the pipe carries only
/// these fixed lines. The status is reported by a second file, on a line of its own, so that a
/// `return` in user code (which leaves the first file early) and a Ctrl-C (which makes bash
/// abandon the rest of the current line) both still reach it, with the status in `$?`.
pub const TRIGGER: &str = ". \"$__tether_w\"\n. \"$__tether_s\"\n";

/// The first lines of every invocation script. From here on a Ctrl-C abandons the script (the
/// prelude's INT trap `return`s from it while `__tether_in` is set). One that came before the
/// shell got here (while it was still reading the trigger, when the trap only breaks a loop)
/// left the invocation's own `cancelled` file, made by the host before it signals: the script
/// then ends at once, as if stopped. No function of the user's can stand in for the check:
/// bash and zsh call `test` through `builtin`; a POSIX shell opens the file with a redirection
/// and no command at all (zsh would run `$READNULLCMD` for that).
pub fn begin(flavour: Flavour, cancelled: &Path) -> String {
    let f = quote(&cancelled.to_string_lossy());
    let exists = match flavour {
        Flavour::Bash | Flavour::Zsh => format!("\\builtin test -e {f}"),
        Flavour::Posix => format!("{{ <{f}; }} 2>/dev/null"),
    };
    format!("__tether_in=1\nif {exists}; then return 130 2>/dev/null; fi\n")
}

/// The invocation script (`w`): positional parameters, then the user's script through `eval`
/// inside a brace group redirected to this invocation's own FIFOs (the redirections are undone
/// when the group ends, whatever the script did to its descriptors).
///
/// The script is preceded by a space inside the quoted word so that one starting with `-` is
/// never taken for an option of `eval`.
///
/// `last` is the previous invocation's status: the script sees it as `$?` (so `echo $?` on the
/// next line of `tether enter` says how the last one ended). It is set in an `if` condition, the
/// one place where a failing status cannot trigger a `set -e` the user left on.
///
/// With `subshell` (a pooled host's temporary invocation, or `invoke --isolated`) the group is a
/// subshell instead, positional parameters included: it sees the session's state, and whatever
/// the script changes (`cd`, variables, `set -e`, `exit`) ends with it, so the shell stays as it
/// was. A `set -e` already on in the session is turned off in the shell around the subshell
/// (and on again inside it), so that the subshell's failure cannot end the shell; the status
/// script turns it back on ([`status_script`]).
pub fn wrapper(
    flavour: Flavour,
    script: &str,
    args: &[String],
    p: &InvocationPaths<'_>,
    last: i32,
    subshell: bool,
) -> String {
    let b = flavour.special();
    let mut w = String::with_capacity(script.len() + 256);
    w.push_str(&begin(flavour, p.cancelled));
    if subshell {
        w.push_str(&format!(
            "case $- in *e*) __tether_e=e; {b}set +e;; esac\n( case ${{__tether_e-}} in e) {b}set -e;; esac; "
        ));
    }
    // What an isolated script turns on ends with its subshell.
    note_script_options(if subshell { "" } else { script });
    w.push_str(b);
    w.push_str("set --");
    for a in args {
        w.push(' ');
        w.push_str(&quote(a));
    }
    w.push_str(if subshell { "\n" } else { "\n{ " });
    let status = last != 0 && (1..=255).contains(&last);
    if status {
        w.push_str(&format!("if __tether_ret {last}; then :; else "));
    }
    // A POSIX shell exits on a syntax error in `eval` (a special builtin); through `command`
    // it is an ordinary error of this command, and the session lives on.
    w.push_str(match flavour {
        Flavour::Posix => "\\command ",
        _ => b,
    });
    w.push_str("eval ");
    w.push_str(&quote(&format!(" {script}")));
    if status {
        w.push_str("\nfi");
    }
    w.push_str(if subshell { "\n) <" } else { "\n} <" });
    match p.stdin {
        Some(i) => w.push_str(&quote(&i.to_string_lossy())),
        None => w.push_str("/dev/null"),
    }
    w.push_str(" >");
    w.push_str(&quote(&p.stdout.to_string_lossy()));
    w.push_str(" 2>");
    w.push_str(&quote(&p.stderr.to_string_lossy()));
    w.push('\n');
    w
}

/// The invocation script of a line run on the session's terminal (`tether enter`): as
/// [`wrapper`], with all three streams on the terminal's slave `tty`.
///
/// It starts as every invocation script does ([`begin`]), before the lines that set up the
/// terminal (one of which runs a program): a Ctrl-C that comes while they run abandons the line.
///
/// Opening the slave makes it the shell's controlling terminal the first time (the shell is a
/// session leader without one). Monitor mode is off for the line, so the program stays in the
/// terminal's foreground process group: the terminal's Ctrl-C reaches it (the shell survives
/// thanks to its INT trap), and it may read the terminal. SIGTSTP is ignored meanwhile: a
/// Ctrl-Z would otherwise stop the shell with it and freeze the session. [`tty_restore`] undoes
/// both after the status is reported.
///
/// `exe` is tether's own program, whose `__tty fg` gives the terminal's foreground back to the
/// shell's process group where [`tty_restore`] parked it (see [`crate::foreground`]).
pub fn tty_wrapper(
    flavour: Flavour,
    script: &str,
    args: &[String],
    (tty, cancelled): (&Path, &Path),
    term: &str,
    last: i32,
    exe: &Path,
) -> String {
    let t = quote(&tty.to_string_lossy());
    let mut w = begin(flavour, cancelled);
    w.push_str("trap '' TSTP\n");
    w.push_str(&format!("{{ exec 9<>{t}; exec 9>&-; }} 2>/dev/null\n"));
    if flavour != Flavour::Bash {
        w.push_str(&crate::foreground::line(crate::foreground::Move::Fg, exe));
    }
    if flavour != Flavour::Zsh {
        // Job control on the terminal, as in an interactive shell: each command its own
        // group, in the terminal's foreground while it runs, so its Ctrl-C abandons the rest
        // of the line (as `Cancel` does) and the shell is never signalled.
        w.push_str(&format!("set +m; {{ set -m; }} 2>{t}\n"));
    }
    if !term.is_empty() && term.bytes().all(|b| b.is_ascii_graphic()) {
        w.push_str(&format!("export TERM={}\n", quote(term)));
    }
    let paths = InvocationPaths {
        stdin: Some(tty),
        stdout: tty,
        stderr: tty,
        cancelled,
    };
    w.push_str(&wrapper(flavour, script, args, &paths, last, false));
    w
}

/// What follows a terminal line's status report: monitor mode and SIGTSTP as they were, and
/// the terminal's foreground handed to nobody, so that later commands never get it: a
/// `/dev/tty` reader fails at once (SIGTTIN is ignored) instead of waiting for keys nobody
/// types.
pub fn tty_restore(flavour: Flavour, exe: &Path) -> String {
    let park = crate::foreground::line(crate::foreground::Move::Park, exe);
    match flavour {
        // zsh runs its commands in its own group, which would have the foreground.
        Flavour::Zsh => format!("trap - TSTP\n{park}"),
        // Job control again without the terminal: every later command is a group of its own
        // that never gets the terminal's foreground.
        Flavour::Bash => "trap - TSTP\nset +m; { set -m; } 2>/dev/null\n".to_string(),
        // dash has no job control without a terminal it can open (its prelude's `set -m`
        // turned itself off); it goes back to that, and `set +m` gave its own group the
        // foreground.
        Flavour::Posix => format!("trap - TSTP\nset +m\n{park}"),
    }
}

/// The status script (`s`): reports `<id> <status> <options>` through the status FIFO, by path,
/// with the printf builtin (never a user function of that name). First it turns back on a
/// `set -e` that an isolated invocation had turned off around its subshell ([`wrapper`]); the
/// options are then `$-` as the session keeps them, so that a shell that exits later can be
/// explained ([`exit_hint`]). The report stays the file's last command: once it is out, the
/// host may rewrite the file for the next invocation.
pub fn status_script(flavour: Flavour, id: u64, status_fifo: &Path) -> String {
    format!(
        "__tether_st=$? __tether_in=; case ${{__tether_e-}} in e) __tether_e=; {}set -e;; esac\n\
         {} printf '{id} %d %s\\n' \"$__tether_st\" \"$-\" >|{}\n",
        flavour.special(),
        flavour.builtin(),
        quote(&status_fifo.to_string_lossy()),
    )
}

/// Parses one status record `"<id> <status>"`, with the shell's options (`$-`) after them
/// when a shell wrote it; those are remembered for [`exit_hint`].
pub fn parse_status(line: &str) -> Option<(u64, i32)> {
    let mut it = line.trim_end().split(' ');
    let id = it.next()?.parse().ok()?;
    let code = it.next()?.parse().ok()?;
    let options = it.next().unwrap_or("");
    if it.next().is_some() || !options.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    SESSION_OPTIONS.store(option_bits(options), Ordering::Relaxed);
    Some((id, code))
}

use std::sync::atomic::{AtomicU8, Ordering};

const ERREXIT: u8 = 1;
const NOUNSET: u8 = 2;

/// `set -e` / `set -u` as the session kept them after its last invocation (one session per
/// host process, so process-wide).
static SESSION_OPTIONS: AtomicU8 = AtomicU8::new(0);
/// Whether the running invocation's script turns `set -e` / `set -u` on itself.
static SCRIPT_OPTIONS: AtomicU8 = AtomicU8::new(0);

fn option_bits(dollar_dash: &str) -> u8 {
    let mut bits = 0;
    if dollar_dash.contains('e') {
        bits |= ERREXIT;
    }
    if dollar_dash.contains('u') {
        bits |= NOUNSET;
    }
    bits
}

/// Notes whether the running invocation's script turns errexit or nounset on itself.
fn note_script_options(script: &str) {
    SCRIPT_OPTIONS.store(script_option_bits(script), Ordering::Relaxed);
}

/// Whether a script turns errexit or nounset on (`set -e`, `set -euo pipefail`, `set -o
/// errexit`…): a cheap look at the text, only used to explain a shell that exits during it.
fn script_option_bits(script: &str) -> u8 {
    let mut bits = 0;
    for (i, _) in script.match_indices("set ") {
        let word_start = script[..i]
            .bytes()
            .next_back()
            .is_none_or(|b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
        let rest = script[i + 4..].trim_start_matches(' ');
        if let (true, Some(flags)) = (word_start, rest.strip_prefix('-')) {
            let word: String = flags
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            if word != "o" {
                bits |= option_bits(&word);
            }
        }
    }
    if script.contains("errexit") {
        bits |= ERREXIT;
    }
    if script.contains("nounset") {
        bits |= NOUNSET;
    }
    bits
}

/// Why a shell that exited by itself (not killed by a signal) during or after an invocation
/// probably did: `set -e` or `set -u` were on. Appended to the session's Broken reason.
pub fn exit_hint() -> Option<&'static str> {
    let bits = SESSION_OPTIONS.load(Ordering::Relaxed) | SCRIPT_OPTIONS.load(Ordering::Relaxed);
    match bits {
        0 => None,
        ERREXIT => Some("errexit was on: set +e, or use invoke --isolated"),
        NOUNSET => Some("nounset was on: set +u, or use invoke --isolated"),
        _ => Some("errexit and nounset were on: set +eu, or use invoke --isolated"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_every_quote_character() {
        assert_eq!(quote("a'b"), "'a'\\''b'");
        assert_eq!(quote(""), "''");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf %s {}",
                quote("$(x) `y` \"z\" 'w' \\ \n;|&")
            ))
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"$(x) `y` \"z\" 'w' \\ \n;|&");
    }

    #[test]
    fn status_records_parse_strictly() {
        assert_eq!(parse_status("7 130\n"), Some((7, 130)));
        assert_eq!(parse_status("7"), None);
        assert_eq!(parse_status("7 1 hBs"), Some((7, 1)));
        assert_eq!(parse_status("7 1 569X"), Some((7, 1)));
        assert_eq!(parse_status("7 1 2 3"), None);
        assert_eq!(parse_status("7 1 a-b"), None);
        assert_eq!(parse_status("x 1"), None);
    }

    #[test]
    fn flavour_from_path() {
        assert_eq!(Flavour::of("/bin/bash"), Flavour::Bash);
        assert_eq!(Flavour::of("/usr/bin/zsh"), Flavour::Zsh);
        assert_eq!(Flavour::of("/bin/dash"), Flavour::Posix);
    }
}
