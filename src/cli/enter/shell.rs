//! What the prompt asks the session's own shell, on its own computer: whether a line is
//! complete (its `-n` syntax check, in the C locale) and what completes the word under the
//! cursor (its commands, functions, aliases, files and variables). Each question is a probe
//! invocation (`InvokeSpec::probe`): a subshell of the session that sees its state and changes
//! none of it, its `$?` and idle clock included; the text asked about travels as `$1`.
//!
//! Nothing is cached: every question goes to the session, so a function defined on the last
//! line completes on the next one. A session with no shell (restricted) is asked nothing:
//! every line is complete and nothing completes.

use super::words;
use rustyline::completion::{Completer, Pair};
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Helper, Highlighter, Hinter};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tether_client::{Client, ErrorKind, InvokeSpec};
use tokio::sync::mpsc::UnboundedSender;

/// What the prompt's validator reports while rustyline runs (see [`super::keys::Keys::read_line`]).
#[derive(Debug)]
pub(super) enum Validation {
    /// Enter was pressed: rustyline is asking whether the text is complete.
    Asking,
    /// The answer: complete (rustyline returns the line) or not (it goes on).
    Answered { complete: bool },
}

/// A busy session (another client's command) is waited for this long…
const PROBE_WAIT: Duration = Duration::from_secs(5);
/// …and an answer this long in all; without one the line counts as complete.
const PROBE_LIMIT: Duration = Duration::from_secs(10);

/// The session's shell checks the text (`$1`) without running it. `LC_ALL=C`: its messages
/// are read for "the text goes on", whatever the session's language. Prints the status, a
/// newline, then the messages.
const SYNTAX: &str = r#"set +e
__t_m=$(printf '%s\n' "$1" | LC_ALL=C BASH_ENV= ENV= "$__tether_sh" -n 2>&1)
printf '%s\n%s' "$?" "$__t_m""#;

/// Completions of `$1`, one per line: `$2` is `c` (commands: with functions, aliases,
/// builtins and keywords), `f` (paths; directories end in `/`) or `v` (variables). bash has
/// `compgen`, zsh its tables (in `eval`, which other shells never parse; its table of commands
/// holds every file on `$PATH`, so only executable ones are kept), other shells a walk
/// over `$PATH` and `set`. dash cannot list its functions.
const COMPLETE: &str = r#"set +efu
case $__tether_flavour in bash) shopt -u failglob ;; zsh) setopt NULL_GLOB 2>/dev/null ;; esac
__t_files() {
  __t_p=$1 __t_h=
  case $__t_p in "~/"*) __t_h=1 __t_p=$HOME/${__t_p#"~/"} ;; esac
  for __t_f in "$__t_p"*; do
    case ${__t_f##*/} in .|..) continue ;; esac
    [ -e "$__t_f" ] || [ -L "$__t_f" ] || continue
    __t_s=; [ -d "$__t_f" ] && __t_s=/
    [ -n "$__t_h" ] && __t_f="~/${__t_f#"$HOME"/}"
    printf '%s%s\n' "$__t_f" "$__t_s"
  done
}
case $2 in
f) __t_files "$1" ;;
*) case $__tether_flavour in
  bash) case $2 in c) compgen -c -- "$1" ;; v) compgen -v -- "$1" ;; esac ;;
  zsh) eval 'emulate zsh; case $2 in
    c) for c in ${(k)commands[(I)${(b)1}*]}; do [[ -x $commands[$c] ]] && print -r -- $c; done
       print -rl -- ${(k)functions[(I)${(b)1}*]} ${(k)aliases[(I)${(b)1}*]} ${(k)builtins[(I)${(b)1}*]} ${(M)reswords:#${(b)1}*} ;;
    v) print -rl -- ${(k)parameters[(I)${(b)1}*]} ;;
    esac' ;;
  *) case $2 in
    c) __t_o=$IFS; IFS=:
       for __t_d in $PATH; do IFS=$__t_o
         for __t_f in "${__t_d:-.}/$1"*; do [ -f "$__t_f" ] && [ -x "$__t_f" ] && printf '%s\n' "${__t_f##*/}"; done
       done
       for __t_f in alias bg break cd command continue echo eval exec exit export false fg getopts hash jobs kill local printf pwd read readonly return set shift test times trap true type ulimit umask unalias unset wait if then else elif fi case esac for while until do done; do
         case $__t_f in "$1"*) printf '%s\n' "$__t_f" ;; esac
       done
       alias | while IFS= read -r __t_l; do __t_l=${__t_l#alias }; __t_l=${__t_l%%=*}; case $__t_l in "$1"*) printf '%s\n' "$__t_l" ;; esac; done ;;
    v) set | while IFS= read -r __t_l; do
         case $__t_l in "$1"*=*) __t_l=${__t_l%%=*}; case $__t_l in *[!A-Za-z0-9_]*) ;; *) printf '%s\n' "$__t_l" ;; esac ;; esac
       done ;;
    esac ;;
  esac ;;
esac"#;

/// The session's shell, asked from rustyline's thread (which blocks meanwhile).
pub(super) struct Shell {
    session: String,
    client: Client,
    handle: tokio::runtime::Handle,
    /// Cleared once the session proves to run no shell.
    usable: Arc<AtomicBool>,
}

impl Shell {
    pub fn new(session: String, client: Client, usable: Arc<AtomicBool>) -> Shell {
        Shell {
            session,
            client,
            handle: tokio::runtime::Handle::current(),
            usable,
        }
    }

    /// Runs a probe; `None` when it could not (no shell, busy, lost).
    fn ask(&self, script: &str, args: Vec<String>) -> Option<String> {
        if !self.usable.load(Ordering::Relaxed) {
            return None;
        }
        let spec = InvokeSpec {
            session: self.session.clone(),
            script: script.to_string(),
            args,
            probe: true,
            wait_timeout_ms: Some(PROBE_WAIT.as_millis() as u64),
            ..Default::default()
        };
        let run = tokio::time::timeout(PROBE_LIMIT, self.client.run(spec));
        match self.handle.block_on(run) {
            Ok(Ok(out)) => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
            Ok(Err(e)) => {
                if e.kind() == ErrorKind::Permission {
                    self.usable.store(false, Ordering::Relaxed);
                }
                None
            }
            Err(_) => None,
        }
    }

    /// Whether the session's shell finds `text` incomplete (it goes on on the next line). A
    /// syntax error is not: the line runs and the shell says what is wrong.
    pub fn incomplete(&self, text: &str) -> bool {
        let Some(out) = self.ask(SYNTAX, vec![text.to_string()]) else {
            return false;
        };
        let (status, messages) = out.split_once('\n').unwrap_or((out.as_str(), ""));
        words::incomplete(status.trim().parse().unwrap_or(0), messages)
    }

    /// The session's completions of `word`, one per line.
    fn completions(&self, word: &words::Word) -> Option<String> {
        let kind = match word.kind {
            words::Kind::Command => "c",
            words::Kind::Path => "f",
            words::Kind::Variable { .. } => "v",
        };
        self.ask(COMPLETE, vec![word.prefix.clone(), kind.to_string()])
    }
}

/// rustyline's helper: validation and completion by the session's shell.
#[derive(Helper, Highlighter, Hinter)]
pub(super) struct Lines {
    pub shell: Shell,
    /// Tells [`super::keys::Keys::read_line`] when rustyline asks, and what it was told.
    pub events: UnboundedSender<Validation>,
}

impl Validator for Lines {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        let text = ctx.input();
        let _ = self.events.send(Validation::Asking);
        let complete = text.trim().is_empty() || !self.shell.incomplete(text);
        let _ = self.events.send(Validation::Answered { complete });
        Ok(if complete {
            ValidationResult::Valid(None)
        } else {
            ValidationResult::Incomplete
        })
    }
}

impl Completer for Lines {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let word = words::word_at(line, pos);
        let Some(answers) = self.shell.completions(&word) else {
            return Ok((pos, Vec::new()));
        };
        let found = words::candidates(&word, &answers)
            .into_iter()
            .map(|c| Pair {
                display: c.display,
                replacement: c.replacement,
            })
            .collect();
        Ok((word.start, found))
    }
}
