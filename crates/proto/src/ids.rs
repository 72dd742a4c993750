//! What a client may use to name a session: a name, an Id or an instance id, and nothing else.
//!
//! Every word a client sends ends up, somewhere, in a path (`hosts/<instance id>.sock`,
//! `names/<name>`). A daemon serving several users (system mode) must never let one of them
//! steer such a path out of their own area, so the words are checked where they enter, by one
//! rule: a name has a fixed alphabet and cannot be `.` or `..`, an Id is a number, an instance
//! id is a canonical UUID. Nothing that could be a path ever passes.

use crate::{ErrorInfo, ErrorKind};

/// Longest session name.
const MAX_NAME: usize = 64;

/// Session names: what a user can type on a command line without quoting, never all digits
/// (an all-digit word on the command line means an Id), and never starting with `.` or `-`
/// (so never `.`/`..`, never a hidden file, never an option).
pub fn validate_name(name: &str) -> Result<(), ErrorInfo> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if name.is_empty()
        || name.len() > MAX_NAME
        || !ok_chars
        || name.starts_with('-')
        || name.starts_with('.')
    {
        return Err(ErrorInfo::new(
            ErrorKind::Usage,
            format!(
                "invalid session name '{}': use 1-64 letters, digits, '.', '_' or '-', not starting with '-' or '.'",
                shown(name)
            ),
        ));
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ErrorInfo::new(
            ErrorKind::Usage,
            format!("invalid session name '{name}': a name cannot be all digits (that is an Id)"),
        ));
    }
    Ok(())
}

/// Whether `s` is an instance id as tether makes them: a UUID in its canonical lower-case
/// hyphenated form (36 characters). Only such a word is ever joined to a path.
pub fn is_instance_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
}

/// Checks a word that names a session in a request (`-s WORD`, `remove WORD`, `Resume`): a
/// name, an Id (all digits, fits in 32 bits) or an instance id.
pub fn validate_word(word: &str) -> Result<(), ErrorInfo> {
    let id = !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit());
    if (id && word.parse::<u32>().is_ok()) || is_instance_id(word) {
        return Ok(());
    }
    if !id && validate_name(word).is_ok() {
        return Ok(());
    }
    Err(ErrorInfo::new(
        ErrorKind::Usage,
        format!(
            "'{}' is not a valid session name, id or instance id",
            shown(word)
        ),
    ))
}

/// Checks how a client daemon of another computer names itself in its `Hello`: the id is
/// kept in session records and compared, the label is shown to other users in one-line
/// messages ("held by …"), so both are short and printable.
pub fn validate_client(c: &crate::ClientId) -> Result<(), ErrorInfo> {
    let id_ok = !c.id.is_empty()
        && c.id.len() <= 64
        && c.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let label_ok = c.label.len() <= 256 && !c.label.chars().any(char::is_control);
    if id_ok && label_ok {
        return Ok(());
    }
    Err(ErrorInfo::new(
        ErrorKind::Usage,
        format!("'{}' is not a valid client identity", shown(&c.id)),
    ))
}

/// A word as it may be quoted in a one-line error: control characters escaped, and cut short.
fn shown(word: &str) -> String {
    let mut out: String = word
        .chars()
        .take(80)
        .flat_map(char::escape_default)
        .collect();
    if word.chars().count() > 80 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_that_could_be_paths_never_pass() {
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "../x",
            "a/b",
            "/etc/passwd",
            "../../0/hosts/00000000-0000-0000-0000-000000000000",
            "00000000-0000-0000-0000-000000000000/jobs/x",
            "a\0b",
            "a\nb",
            "99999999999",
            "-o",
        ] {
            assert!(validate_word(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_word(&"x".repeat(10_000)).is_err());
    }

    #[test]
    fn names_ids_and_instance_ids_pass() {
        for good in [
            "web",
            "Session1",
            "a.b_c-d",
            "1",
            "4294967295",
            "3f2b8a1c-0d4e-4f6a-9b7c-1e2d3c4b5a69",
        ] {
            assert!(validate_word(good).is_ok(), "{good:?} refused");
        }
        assert!(is_instance_id(&uuid_like()));
        // Shaped like a UUID but not one: only ever a name, never an instance id.
        assert!(!is_instance_id("00000000-0000-0000-0000-00000000000A"));
        assert!(!is_instance_id("00000000-0000-0000-0000-00000000000G"));
    }

    fn uuid_like() -> String {
        "0123abcd-4567-89ef-0123-456789abcdef".to_string()
    }

    #[test]
    fn errors_are_one_line() {
        let e = validate_word("a\nb\0").unwrap_err();
        assert!(!e.message.contains('\n') && !e.message.contains('\0'));
    }
}
