//! The restricted engine (SPEC §3.19, PowerShell's JEA in Unix terms): no shell runs. Each
//! invocation is one command line, split into words with shell-like quoting but no expansion
//! and no operators, and it runs only if an allow rule of the configuration matches the
//! program and every argument. The program is then executed directly.
//!
//! Everything a shell would interpret is refused rather than passed on: `;`, `|`, `&`,
//! redirections, `$`, backticks, parentheses, braces, `#`, a leading `~`, environment
//! assignments, unquoted glob characters (unless the argument's pattern is a glob or regex that
//! accepts them), several lines, and program paths that are not exactly an allowed one.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A configuration's rules, as the daemon passes them to a restricted session's host.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Rules {
    /// The configuration's name, for messages.
    pub name: String,
    /// Where bare command names are resolved.
    pub path: Vec<String>,
    pub allow: Vec<Rule>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A bare name (resolved against `path`) or an absolute path.
    pub command: String,
    /// One pattern per argument position: a literal, `glob:…` or `re:…` (anchored).
    #[serde(default)]
    pub args: Vec<String>,
    /// Pattern for any further arguments; absent: no more are allowed.
    #[serde(default)]
    pub rest: Option<String>,
}

/// One word and whether any of it was unquoted glob syntax.
#[derive(Debug, Clone, PartialEq)]
struct Word {
    text: String,
    glob: bool,
}

/// Why a line is refused (without the "command not allowed in configuration NAME: " prefix).
pub type Refusal = String;

/// Splits one command line into words: whitespace separates; `'…'` is literal; `"…"` is
/// literal except `\"` and `\\` (and refuses `$` and backticks, which a shell would expand);
/// a backslash outside quotes escapes the next character.
fn split(line: &str) -> Result<Vec<Word>, Refusal> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    if line.contains('\n') || line.contains('\r') {
        return Err("one command per invocation (no newlines)".into());
    }
    if line.contains('\0') {
        return Err("NUL bytes".into());
    }
    let mut words = Vec::new();
    let mut cur: Option<Word> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if let Some(w) = cur.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = cur.get_or_insert(Word {
                    text: String::new(),
                    glob: false,
                });
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => w.text.push(ch),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                let w = cur.get_or_insert(Word {
                    text: String::new(),
                    glob: false,
                });
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch @ ('"' | '\\')) => w.text.push(ch),
                            Some(ch) => {
                                w.text.push('\\');
                                w.text.push(ch);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some('$') | Some('`') => {
                            return Err("'$' and '`' are not expanded (quote them with '…')".into());
                        }
                        Some(ch) => w.text.push(ch),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(ch) => cur
                    .get_or_insert(Word {
                        text: String::new(),
                        glob: false,
                    })
                    .text
                    .push(ch),
                None => return Err("a trailing backslash".into()),
            },
            ';' | '|' | '&' | '<' | '>' | '(' | ')' | '$' | '`' | '{' | '}' | '#' | '!' => {
                return Err(format!(
                    "'{c}' (no shell runs: no operators, expansions or redirections)"
                ));
            }
            '~' if cur.is_none() => return Err("'~' (no expansion)".into()),
            '*' | '?' | '[' | ']' => {
                let w = cur.get_or_insert(Word {
                    text: String::new(),
                    glob: false,
                });
                w.text.push(c);
                w.glob = true;
            }
            _ => cur
                .get_or_insert(Word {
                    text: String::new(),
                    glob: false,
                })
                .text
                .push(c),
        }
    }
    if let Some(w) = cur.take() {
        words.push(w);
    }
    Ok(words)
}

/// A pattern of an allow rule.
enum Pattern {
    Literal(String),
    Glob(String),
    Regex(regex_lite::Regex),
}

impl Pattern {
    fn parse(p: &str) -> Result<Pattern, String> {
        if let Some(g) = p.strip_prefix("glob:") {
            Ok(Pattern::Glob(g.to_string()))
        } else if let Some(r) = p.strip_prefix("re:") {
            regex_lite::Regex::new(&format!("^(?:{r})$"))
                .map(Pattern::Regex)
                .map_err(|e| format!("bad pattern {p:?}: {e}"))
        } else {
            Ok(Pattern::Literal(p.to_string()))
        }
    }

    /// Whether the word matches; unquoted glob syntax only ever matches a glob or regex
    /// pattern (a literal pattern says exactly which word is meant).
    ///
    /// A `..` path component only ever matches a literal pattern: `glob:/srv/*` must not
    /// reach `/srv/../etc`.
    fn matches(&self, w: &Word) -> bool {
        match self {
            Pattern::Literal(l) => !w.glob && *l == w.text,
            Pattern::Glob(g) => !dot_dot(&w.text) && glob_match(g, &w.text),
            Pattern::Regex(r) => !dot_dot(&w.text) && r.is_match(&w.text),
        }
    }
}

fn dot_dot(word: &str) -> bool {
    word.split(['/', '=']).any(|part| part == "..")
}

/// Whether `p` is an absolute path written exactly as the file it names: a leading `/`, then
/// parts none of which is empty (`//`, a trailing `/`), `.` or `..`. The parts of the string
/// are checked, not `Path::components()`, which would quietly drop `.` parts and trailing
/// slashes. `/` alone (the root) is exact.
pub fn exact_absolute(p: &str) -> bool {
    match p.strip_prefix('/') {
        Some("") => true,
        Some(rest) => rest.split('/').all(|part| !matches!(part, "" | "." | "..")),
        None => false,
    }
}

/// Whether `p` can name a program as an absolute path: exact, and not the root itself.
fn exact_program(p: &str) -> bool {
    p != "/" && exact_absolute(p)
}

/// Checks the rules' own patterns and paths (the daemon does this when it loads the
/// configuration).
pub fn validate(rules: &Rules) -> Result<(), String> {
    if let Some(p) = rules.path.iter().find(|p| !exact_absolute(p)) {
        return Err(path_refusal(p));
    }
    rules.allow.iter().try_for_each(validate_rule)
}

/// Why a `path` entry is refused (see [`exact_absolute`]).
pub fn path_refusal(p: &str) -> String {
    if p.starts_with('/') {
        format!("'{p}' has '.', '..' or empty ('//', trailing '/') parts; write it exactly")
    } else {
        format!("'{p}' is not an absolute directory")
    }
}

/// Checks one `[[allow]]` rule (so that a configuration error can name the rule's line).
pub fn validate_rule(r: &Rule) -> Result<(), String> {
    let c = r.command.as_str();
    if c.is_empty() || c == "." || c == ".." || (c.contains('/') && !c.starts_with('/')) {
        return Err(format!(
            "allow: command {c:?} is neither a bare name nor an absolute path"
        ));
    }
    if c.starts_with('/') && !exact_program(c) {
        return Err(format!(
            "allow: command {c:?} has '.', '..' or empty ('//', trailing '/') parts; \
             write the program's path exactly"
        ));
    }
    for p in r.args.iter().chain(r.rest.iter()) {
        Pattern::parse(p)?;
    }
    Ok(())
}

/// Where a program named `name` is: an absolute path exactly as given (see
/// [`exact_absolute`]), or a bare name looked up in the rules' path (whose entries must be
/// exact too).
fn resolve(rules: &Rules, name: &str) -> Option<PathBuf> {
    if name.starts_with('/') {
        return exact_program(name).then(|| PathBuf::from(name));
    }
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return None;
    }
    rules
        .path
        .iter()
        .filter(|d| exact_absolute(d))
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The program and arguments to run for `line`, or why not.
pub fn check(rules: &Rules, line: &str) -> Result<(PathBuf, Vec<String>), Refusal> {
    let words = split(line)?;
    let Some((first, args)) = words.split_first() else {
        return Err("an empty command".into());
    };
    if first.glob {
        return Err(format!(
            "the program name {:?} has glob characters",
            first.text
        ));
    }
    if first.text.contains('=') {
        return Err(format!("{:?} (no environment assignments)", first.text));
    }
    let program = resolve(rules, &first.text)
        .ok_or_else(|| format!("{:?} is not an allowed program", first.text))?;
    let mut reasons = Vec::new();
    for rule in &rules.allow {
        if resolve(rules, &rule.command).as_deref() != Some(program.as_path()) {
            continue;
        }
        match rule_accepts(rule, args) {
            Ok(()) => {
                let argv = args.iter().map(|w| w.text.clone()).collect();
                return Ok((program, argv));
            }
            Err(why) => reasons.push(why),
        }
    }
    Err(reasons
        .into_iter()
        .next()
        .unwrap_or_else(|| format!("{:?} is not an allowed program", first.text)))
}

fn rule_accepts(rule: &Rule, args: &[Word]) -> Result<(), String> {
    let patterns: Vec<Pattern> = rule
        .args
        .iter()
        .map(|p| Pattern::parse(p))
        .collect::<Result<_, _>>()?;
    let rest = rule.rest.as_deref().map(Pattern::parse).transpose()?;
    if args.len() < patterns.len() {
        return Err(format!(
            "{} needs {} arguments here",
            rule.command,
            patterns.len()
        ));
    }
    for (i, w) in args.iter().enumerate() {
        let ok = match patterns.get(i) {
            Some(p) => p.matches(w),
            None => rest.as_ref().is_some_and(|r| r.matches(w)),
        };
        if !ok {
            return Err(format!("argument {} {:?} does not match", i + 1, w.text));
        }
    }
    Ok(())
}

/// `*`, `?` and `[…]` (with `!` or `^` negation and ranges) on whole words.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    glob_at(&p, &t)
}

fn glob_at(p: &[char], t: &[char]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some('*') => (0..=t.len()).any(|i| glob_at(&p[1..], &t[i..])),
        Some('?') => !t.is_empty() && glob_at(&p[1..], &t[1..]),
        Some('[') => {
            let Some(end) = p.iter().skip(1).position(|c| *c == ']').map(|i| i + 1) else {
                return !t.is_empty() && t[0] == '[' && glob_at(&p[1..], &t[1..]);
            };
            let Some(&c) = t.first() else { return false };
            let mut set = &p[1..end];
            let negate = matches!(set.first(), Some('!' | '^'));
            if negate {
                set = &set[1..];
            }
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == '-' {
                    hit |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit != negate && glob_at(&p[end + 1..], &t[1..])
        }
        Some(&c) => t.first() == Some(&c) && glob_at(&p[1..], &t[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            name: "ops".into(),
            path: vec!["/usr/bin".into(), "/bin".into()],
            allow: vec![
                Rule {
                    command: "echo".into(),
                    args: vec![],
                    rest: Some("re:[a-z0-9 ]*".into()),
                },
                Rule {
                    command: "ls".into(),
                    args: vec!["glob:/tmp/*".into()],
                    rest: None,
                },
            ],
        }
    }

    #[test]
    fn quoting_splits_like_a_shell_without_expansion() {
        let w = split(r#"a 'b c' "d e" f\ g"#).unwrap();
        let t: Vec<&str> = w.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(t, ["a", "b c", "d e", "f g"]);
        assert!(split("echo $HOME").is_err());
        assert!(split("echo \"$HOME\"").is_err());
        assert_eq!(split("echo '$HOME'").unwrap()[1].text, "$HOME");
    }

    #[test]
    fn allowed_lines_run_and_others_do_not() {
        let r = rules();
        let (p, a) = check(&r, "echo hello world").unwrap();
        assert!(p.ends_with("echo"));
        assert_eq!(a, ["hello", "world"]);
        assert!(check(&r, "echo Hello").is_err());
        assert!(check(&r, "ls /tmp/x").is_ok());
        assert!(
            check(&r, "ls /tmp/*").is_ok(),
            "a glob pattern may accept glob syntax"
        );
        assert!(check(&r, "ls /etc/x").is_err());
        assert!(check(&r, "ls").is_err());
        assert!(check(&r, "ls /tmp/a /tmp/b").is_err());
        assert!(check(&r, "cat /etc/passwd").is_err());
        assert!(check(&r, "/bin/../bin/echo hi").is_err());
        assert!(check(&r, "./echo hi").is_err());
    }

    #[test]
    fn program_paths_are_taken_only_as_written_exactly() {
        let mut r = rules();
        r.allow.push(Rule {
            command: "/bin/echo".into(),
            args: vec![],
            rest: Some("re:[a-z]*".into()),
        });
        assert_eq!(check(&r, "/bin/echo hi").unwrap().0, Path::new("/bin/echo"));
        for line in [
            "/bin/./echo hi",
            "/bin//echo hi",
            "//bin/echo hi",
            "/bin/echo/ hi",
            "/bin/echo/. hi",
            "/usr/bin/../bin/echo hi",
            "/./bin/echo hi",
            "/ hi",
            "bin/echo hi",
        ] {
            let e = check(&r, line).unwrap_err();
            assert!(e.contains("is not an allowed program"), "{line}: {e}");
        }
        assert!(exact_absolute("/"));
        assert!(exact_absolute("/usr/local/bin"));
        for p in [
            "",
            "usr/bin",
            "/usr/bin/",
            "/usr//bin",
            "/usr/./bin",
            "/usr/bin/..",
            "/.",
        ] {
            assert!(!exact_absolute(p), "{p:?}");
        }
    }

    #[test]
    fn rules_and_path_entries_must_be_exact_too() {
        let rule = |c: &str| Rule {
            command: c.into(),
            ..Default::default()
        };
        assert!(validate_rule(&rule("echo")).is_ok());
        assert!(validate_rule(&rule("/bin/echo")).is_ok());
        for c in [
            "/bin/./echo",
            "/bin//echo",
            "/bin/echo/",
            "/usr/bin/../bin/echo",
            "/",
            ".",
            "..",
            "",
            "bin/echo",
        ] {
            assert!(validate_rule(&rule(c)).is_err(), "{c:?}");
        }
        let mut r = rules();
        assert!(validate(&r).is_ok());
        for p in [
            "/usr/bin/",
            "/usr//bin",
            "/usr/./bin",
            "/usr/lib/../bin",
            "usr/bin",
        ] {
            r.path = vec!["/bin".into(), p.into()];
            assert!(validate(&r).is_err(), "{p:?}");
        }
        // Rules made elsewhere are not trusted: an inexact path entry never finds a program.
        r.path = vec!["/bin/".into(), "/usr/./bin".into()];
        assert!(check(&r, "echo hi").is_err());
        // A rule written inexactly matches nothing, not even the exact line.
        r = rules();
        r.allow = vec![rule("/bin/./echo")];
        assert!(check(&r, "/bin/echo").is_err());
        assert!(check(&r, "/bin/./echo").is_err());
    }

    #[test]
    fn globs_match_whole_words() {
        assert!(glob_match("a*c", "abbc"));
        assert!(glob_match("[a-c]?", "bz"));
        assert!(!glob_match("[!a-c]?", "bz"));
        assert!(!glob_match("a*", "ba"));
    }
}
