//! Reading the prompt's text without a shell: the word under the cursor and what completes it,
//! and what a shell's syntax check said (the shells themselves are asked, in
//! [`super::shell`]).

/// What the word under the cursor names.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(super) enum Kind {
    Command,
    Path,
    /// `$NAME`, or `${NAME` with `brace`.
    Variable {
        brace: bool,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct Word {
    /// Byte offset where the replacement starts.
    pub start: usize,
    pub kind: Kind,
    /// What was typed of it, unquoted (for a variable: the name so far).
    pub prefix: String,
}

/// Characters that end a word unless escaped with `\`.
fn separates(c: char) -> bool {
    c.is_whitespace() || ";&|()<>`'\"=".contains(c)
}

/// The word that ends at byte `pos` of `line`.
pub(super) fn word_at(line: &str, pos: usize) -> Word {
    let before = &line[..pos];
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in before.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if separates(c) {
            start = i + c.len_utf8();
        }
    }
    let raw = &before[start..];
    if let Some(d) = raw.rfind('$')
        && raw[..d].chars().rev().take_while(|&c| c == '\\').count() % 2 == 0
    {
        let rest = &raw[d + 1..];
        let (brace, name) = match rest.strip_prefix('{') {
            Some(n) => (true, n),
            None => (false, rest),
        };
        let ident = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if ident {
            return Word {
                start: start + d,
                kind: Kind::Variable { brace },
                prefix: name.to_string(),
            };
        }
    }
    let kind = if raw.contains('/') || raw.starts_with('~') || !command_position(&before[..start]) {
        Kind::Path
    } else {
        Kind::Command
    };
    Word {
        start,
        kind,
        prefix: unescape(raw),
    }
}

/// Whether a word after `before` is a command name: first on the line, after an operator, or
/// after a word that runs the next one.
fn command_position(before: &str) -> bool {
    let t = before.trim_end();
    if t.is_empty() || t.ends_with(['\n', ';', '&', '|', '(', '`', '{', '!']) {
        return true;
    }
    let last = t.rsplit(char::is_whitespace).next().unwrap_or("");
    matches!(
        last,
        "then"
            | "do"
            | "else"
            | "elif"
            | "if"
            | "while"
            | "until"
            | "time"
            | "sudo"
            | "exec"
            | "command"
            | "builtin"
            | "nohup"
            | "nice"
            | "env"
            | "xargs"
            | "watch"
    )
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `s` as one shell word: special characters get a backslash (a leading `~/` stays a tilde).
pub(super) fn escape(s: &str) -> String {
    let (head, rest) = match s.strip_prefix("~/") {
        Some(r) => ("~/", r),
        None => ("", s),
    };
    let mut out = String::from(head);
    for (i, c) in rest.chars().enumerate() {
        if " \t\n\\'\"$`;&|()<>*?[]{}!#".contains(c) || (i == 0 && head.is_empty() && c == '~') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One completion: shown as `display`, typed as `replacement`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Candidate {
    pub display: String,
    pub replacement: String,
}

/// The session's answers (one per line) as completions of `word`: sorted, each once; a sole
/// command or file is followed by a space, as a shell does (a directory is not: it ends in
/// `/`).
pub(super) fn candidates(word: &Word, answers: &str) -> Vec<Candidate> {
    let mut names: Vec<&str> = answers
        .lines()
        .filter(|n| !n.is_empty() && n.starts_with(word.prefix.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    let sole = names.len() == 1;
    names
        .into_iter()
        .map(|n| match word.kind {
            Kind::Variable { brace } => Candidate {
                display: n.to_string(),
                replacement: if brace {
                    format!("${{{n}}}")
                } else {
                    format!("${n}")
                },
            },
            Kind::Command => Candidate {
                display: n.to_string(),
                replacement: escape(n) + if sole { " " } else { "" },
            },
            Kind::Path => {
                let dir = n.ends_with('/');
                let base = n.trim_end_matches('/').rsplit('/').next().unwrap_or(n);
                Candidate {
                    display: format!("{base}{}", if dir { "/" } else { "" }),
                    replacement: escape(n) + if sole && !dir { " " } else { "" },
                }
            }
        })
        .collect()
}

/// Whether a shell's `-n` report (its status and messages, in the C locale) says the text
/// stops before its end (an open `if`, quote, `$(`, here-document…) rather than being whole or
/// wrong. Checked by experiment with bash 5, dash 0.5 and zsh 5.
pub(super) fn incomplete(status: i32, messages: &str) -> bool {
    // bash: a here-document without its end is only a warning.
    if messages.contains("delimited by end-of-file") {
        return true;
    }
    status != 0
        && [
            // bash
            "syntax error: unexpected end of file",
            "unexpected EOF while looking for",
            // dash
            "end of file unexpected",
            "Unterminated quoted string",
            "EOF in backquote substitution",
            // zsh (the text is given with a final newline: it wanted more after it)
            "parse error near `\\n'",
            "parse error near `$(",
            "zsh: unmatched ",
            "closing brace expected",
        ]
        .iter()
        .any(|p| messages.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(line: &str) -> Word {
        word_at(line, line.len())
    }

    #[test]
    fn the_word_under_the_cursor_and_its_kind() {
        assert_eq!(w("ec").kind, Kind::Command);
        assert_eq!(w("ls; ec").kind, Kind::Command);
        assert_eq!(w("ls | gr").start, 5);
        assert_eq!(w("sudo ap").kind, Kind::Command);
        assert_eq!(w("if true; then ec").kind, Kind::Command);
        assert_eq!(w("cat fi").kind, Kind::Path);
        assert_eq!(w("cat fi").prefix, "fi");
        assert_eq!(w("./scr").kind, Kind::Path);
        assert_eq!(w("cat ~/.ba").kind, Kind::Path);
        assert_eq!(w("cat my\\ fi").prefix, "my fi");
        assert_eq!(w("cat my\\ fi").start, 4);
        assert_eq!(w("x=/us").start, 2);
        assert_eq!(w("x=/us").kind, Kind::Path);
        assert_eq!(
            w("echo $HO"),
            Word {
                start: 5,
                kind: Kind::Variable { brace: false },
                prefix: "HO".into()
            }
        );
        assert_eq!(w("echo \"${HO").kind, Kind::Variable { brace: true });
        assert_eq!(w("echo \"${HO").start, 6);
        assert_eq!(w("echo a$H").start, 6);
        assert_eq!(w("echo \\$HO").kind, Kind::Path);
        assert_eq!(w("echo $").prefix, "");
        assert_eq!(word_at("cat fi rest", 6).prefix, "fi");
    }

    #[test]
    fn completions_are_escaped_and_a_sole_one_ends_the_word() {
        let word = w("cat my");
        let c = candidates(&word, "my file.txt\n");
        assert_eq!(c[0].replacement, "my\\ file.txt ");
        assert_eq!(c[0].display, "my file.txt");
        let c = candidates(&w("cat su"), "sub/\nsuffix\n");
        assert_eq!(c[0].replacement, "sub/");
        assert_eq!(c[1].replacement, "suffix");
        let c = candidates(&w("cat sub/"), "sub/dir/\n");
        assert_eq!(
            (c[0].display.as_str(), c[0].replacement.as_str()),
            ("dir/", "sub/dir/")
        );
        let c = candidates(&w("cat ~/.ba"), "~/.bashrc\n");
        assert_eq!(c[0].replacement, "~/.bashrc ");
        let c = candidates(&w("echo ${HO"), "HOME\nHOSTNAME\nHOME\n");
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].replacement, "${HOME}");
        let c = candidates(&w("ec"), "echo\n\necho\n");
        assert_eq!(c[0].replacement, "echo ");
        assert_eq!(escape("~x"), "\\~x");
        assert_eq!(escape("a(b)$c"), "a\\(b\\)\\$c");
    }

    #[test]
    fn shells_say_whether_text_goes_on() {
        let more = [
            (2, "bash: line 2: syntax error: unexpected end of file"),
            (
                2,
                "bash: line 1: unexpected EOF while looking for matching `''",
            ),
            (
                0,
                "bash: line 1: warning: here-document at line 1 delimited by end-of-file (wanted `EOF')",
            ),
            (
                2,
                "dash: 2: Syntax error: end of file unexpected (expecting \"fi\")",
            ),
            (2, "dash: 2: Syntax error: Unterminated quoted string"),
            (2, "dash: 2: Syntax error: EOF in backquote substitution"),
            (1, "zsh: parse error near `\\n'"),
            (1, "zsh: unmatched \""),
            (1, "zsh: parse error near `$(ls'"),
            (1, "zsh: closing brace expected"),
        ];
        for (st, m) in more {
            assert!(incomplete(st, m), "{m}");
        }
        let whole_or_wrong = [
            (0, ""),
            (2, "bash: line 1: syntax error near unexpected token `fi'"),
            (2, "dash: 1: Syntax error: \"fi\" unexpected"),
            (2, "dash: 1: Syntax error: Missing '}'"),
            (1, "zsh: parse error near `fi'"),
            (127, "sh: 1: : Permission denied"),
        ];
        for (st, m) in whole_or_wrong {
            assert!(!incomplete(st, m), "{m}");
        }
    }
}
