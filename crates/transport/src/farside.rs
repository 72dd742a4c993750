//! What runs on the far side before tether does: the bootstrap script (`sh -c SCRIPT`), the
//! probes it shares with `tether doctor --computer`, and their one-line account of what stops
//! tether from starting there ([`Failure`]).

use tether_proto::{ErrorInfo, ErrorKind};

/// Shell functions shared by the bootstrap script and `tether doctor --computer` (no single
/// quotes and no `!`: see [`SCRIPT`]). Each problem is one stdout line, `TETHER-FAIL KIND<tab>
/// PATH<tab>REASON` ([`Failure`]), so the client can name the computer, the path and the fix.
///
/// - `tf KIND PATH REASON` prints such a line.
/// - `tw TEXT DEFAULT`: the reason a tool printed (what follows its last `: `).
/// - `tk`: picks a SHA-256 tool into `$k` (`sha256sum`, `shasum -a 256`, `sha256 -r`,
///   `openssl dgst -sha256 -r`), or fails `hash` naming `PATH`.
/// - `tp DIR BYTES make|look exec|-`: can files be written (and, with `exec`, run) in DIR, and
///   does its file system have BYTES free? `make` creates DIR; `look` (doctor) tries the
///   nearest directory that exists and creates nothing but a probe file it removes.
macro_rules! far_side_probes {
    () => {
        r#"tf() { printf "TETHER-FAIL %s\t%s\t%s\n" "$1" "$2" "$3"; }
tw() { r=${1##*: }; printf %s "${r:-$2}"; }
tk() {
  for k in sha256sum "shasum -a 256" "sha256 -r" "openssl dgst -sha256 -r"; do
    if command -v ${k%% *} >/dev/null 2>&1; then return 0; fi
  done
  tf hash "$PATH" "no sha256sum, shasum, sha256 or openssl"; return 1
}
tp() {
  t=$1 need=$2 p=$1
  if [ "$3" = make ]; then
    m=$(mkdir -p "$p" 2>&1) || { tf write "$t" "$(tw "$m" "cannot create it")"; return 1; }
  else
    until [ -z "$p" ] || [ -d "$p" ]; do case $p in */*) p=${p%/*} ;; *) p=. ;; esac; done
    p=${p:-/}
  fi
  f=$p/.tether-probe.$$
  m=$( { : >"$f"; } 2>&1) || { tf write "$t" "$(tw "$m" "permission denied")"; return 1; }
  if [ "$4" = exec ]; then
    chmod 700 "$f"
    m=$("$f" </dev/null 2>&1) || { rm -f "$f"; tf exec "$t" "$(tw "$m" "permission denied")"; return 1; }
  fi
  rm -f "$f"
  set -f
  set -- $(LC_ALL=C df -Pk "$p" 2>/dev/null)
  set +f
  if [ $# -ge 11 ]; then
    shift 7
    if [ "$4" -eq "$4" ] 2>/dev/null && [ "$4" -lt $(( (need + 1023) / 1024 )) ]; then
      tf space "$t" "$4 KiB free, $(( (need + 1023) / 1024 )) KiB needed"; return 1
    fi
  fi
  return 0
}
"#
    };
}

/// The shell functions of the bootstrap script, for other scripts run over there (`tether
/// doctor --computer`).
pub const PROBES: &str = far_side_probes!();

/// Run by the remote login shell as `sh -c SCRIPT tether EXE HASH SIZE HOME`. No single quotes
/// and no `!` in here: it travels inside single quotes through whatever shell the user has
/// (csh expands `!` even there). Before asking for a copy it checks, in this order, that a
/// SHA-256 tool exists, that the directory can be made and written, that a file there can be
/// run (not `noexec`) and that there is room for SIZE bytes: every failure is one
/// `TETHER-FAIL` line and the script ends, so nothing is sent that cannot be kept.
pub(crate) const SCRIPT: &str = concat!(
    r#"e=$1 h=$2 n=$3
if [ -n "$4" ]; then TETHER_HOME=$4; export TETHER_HOME; fi
if command -v "$e" >/dev/null 2>&1; then exec "$e" bridge; fi
d=${TETHER_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/tether}/bin
b=$d/tether-$h
if [ -x "$b" ]; then exec "$b" bridge; fi
"#,
    far_side_probes!(),
    r#"umask 077
tk || exit 1
tp "$d" "$n" make exec || exit 1
echo "TETHER-NEED-BINARY $(uname -s) $(uname -m)"
t=$b.$$.part
m=$(head -c "$n" 2>&1 >"$t") || { rm -f "$t"; tf write "$d" "$(tw "$m" "cannot write it")"; exit 1; }
s=$($k "$t" 2>/dev/null)
if [ "${s%% *}" = "$h" ]; then chmod 700 "$t" && mv -f "$t" "$b" && exec "$b" bridge; fi
rm -f "$t"
tf corrupt "$b" "its SHA-256 differs from the one sent"
exit 1"#
);

/// The bridge's or the bootstrap script's account of why tether cannot start over there:
/// `TETHER-FAIL KIND<tab>PATH<tab>REASON`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `write`, `exec`, `space`, `hash`, `corrupt`, `daemon`, or another word.
    pub kind: String,
    /// The directory (or, for `hash`, the `PATH`) concerned.
    pub path: String,
    pub reason: String,
}

/// Starts a [`Failure`] line.
pub const FAIL: &str = "TETHER-FAIL";
/// Longest path or reason shown from a failure line.
pub(crate) const FAIL_FIELD: usize = 300;

fn clean_field(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(FAIL_FIELD)
        .collect();
    if s.chars().count() > FAIL_FIELD {
        out.push('…');
    }
    out.trim().to_string()
}

impl Failure {
    /// Parses a `TETHER-FAIL` line (fields cleaned of control characters and cut short).
    pub fn parse(line: &str) -> Option<Failure> {
        let rest = line.strip_prefix(FAIL)?.strip_prefix(' ')?;
        let mut f = rest.splitn(3, '\t');
        let kind = clean_field(f.next()?);
        let path = clean_field(f.next().unwrap_or(""));
        let reason = clean_field(f.next().unwrap_or(""));
        Some(Failure { kind, path, reason })
    }

    /// The line the bridge prints when it cannot start its daemon.
    pub fn line(kind: &str, path: &str, reason: &str) -> String {
        let field = |s: &str| s.replace(['\t', '\n', '\r'], " ");
        format!(
            "{FAIL} {}\t{}\t{}\n",
            field(kind),
            field(path),
            field(reason)
        )
    }

    /// What went wrong and what to do, for computer `c`.
    pub fn explain(&self, c: &str) -> (String, String) {
        let (path, reason) = (&self.path, lower_first(&self.reason));
        let home = format!(
            "set TETHER_REMOTE_HOME=DIR to a writable, executable directory on {c} (or install tether there)"
        );
        match self.kind.as_str() {
            "write" => (format!("cannot write {path} ({reason})"), home),
            "exec" => (
                format!("cannot run programs from {path} ({reason}; is it mounted noexec?)"),
                home,
            ),
            "space" => (
                format!("not enough space in {path} ({reason})"),
                format!("free some space there, or {home}"),
            ),
            "hash" => (
                format!(
                    "cannot check the copy of tether it would receive: {reason} in PATH ({path})"
                ),
                format!("install sha256sum (coreutils) on {c}, or install tether there"),
            ),
            "corrupt" => (
                format!("the copy of tether sent to {path} did not arrive intact ({reason})"),
                "try again; if it keeps failing, install tether there".to_string(),
            ),
            "daemon" => (
                format!("tether cannot start its daemon in {path} ({reason})"),
                format!(
                    "{}set TETHER_REMOTE_HOME=DIR to a writable directory on {c}",
                    if reason.contains("space") {
                        "free some space there, or "
                    } else {
                        ""
                    }
                ),
            ),
            other => (
                format!("{other} {path}: {reason}"),
                "see its daemon.log".into(),
            ),
        }
    }

    /// One line for a failed connection: `computer C: what; fix`.
    pub fn error(&self, c: &str) -> ErrorInfo {
        let (what, fix) = self.explain(c);
        err(ErrorKind::Connection, c, format!("{what}; {fix}"))
    }
}

/// "Read-only file system" reads better as "read-only file system" inside parentheses.
fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) if c.clone().next().is_some_and(|n| n.is_lowercase()) => {
            f.to_lowercase().chain(c).collect()
        }
        Some(f) => std::iter::once(f).chain(c).collect(),
        None => "unknown reason".into(),
    }
}

/// An error naming the computer it is about.
pub(crate) fn err(kind: ErrorKind, computer: &str, why: impl std::fmt::Display) -> ErrorInfo {
    ErrorInfo::new(kind, format!("computer {computer}: {why}"))
}
