//! Session configurations (SPEC §3.19): named TOML files in `$TETHER_HOME/configurations/`
//! that set how a session starts (engine, environment, directory, start-up script) and what it
//! may use (idle timeout, output quota and buffering, sessions per user).
//!
//! A file is read each time it is used, so an edit applies to the next session without a
//! restart. A bad file is reported with its path, line and reason, and only that configuration
//! is unusable: the daemon and the other configurations go on. `default` always exists; a
//! `default.toml` changes it.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use tether_proto::{ErrorInfo, ErrorKind};

mod listing;
pub use listing::list;

/// One configuration file, as written. Unknown keys are errors (a typo must not be ignored).
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
struct File {
    engine: Option<String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    working_directory: Option<String>,
    startup_script: Option<String>,
    idle_timeout: Option<Amount>,
    output_quota: Option<Amount>,
    output_buffering: Option<String>,
    max_sessions_per_user: Option<u32>,
    run_as: Option<String>,
    #[serde(default)]
    allowed_users: Vec<String>,
    #[serde(default)]
    allowed_groups: Vec<String>,
    #[serde(default)]
    path: Vec<String>,
    #[serde(default)]
    allow: Vec<tether_engine::restricted::Rule>,
}

/// A number, or a string such as `90s` / `100M`.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
enum Amount {
    Number(u64),
    Text(String),
}

/// A configuration ready to apply to a new session.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub name: String,
    /// The shell program (`None`: the daemon's default).
    pub shell: Option<String>,
    pub environment: Vec<(String, String)>,
    pub working_directory: Option<String>,
    /// A script sourced by the session's shell when it starts.
    pub startup_script: Option<String>,
    pub idle_timeout_s: Option<u64>,
    pub output_quota: Option<u64>,
    pub drop_oldest: bool,
    pub max_sessions_per_user: Option<u32>,
    /// The restricted engine's rules (no shell at all).
    pub restricted: Option<tether_engine::restricted::Rules>,
    /// The account sessions run as (system daemon only); `None`: their owner.
    pub run_as: Option<String>,
    /// Who may use the configuration; both empty: everyone.
    pub allowed_users: Vec<String>,
    pub allowed_groups: Vec<String>,
}

/// Configuration names are file names: letters, digits, `-`, `_`, `.`, not starting with `.`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Loads configuration `name` (what `new --configuration` names) from directory `dir`.
pub fn load(dir: &Path, name: &str) -> Result<Config, ErrorInfo> {
    let not_found = || {
        ErrorInfo::new(
            ErrorKind::NotFound,
            format!(
                "configuration {name} not found; 'tether config list' shows the configurations"
            ),
        )
    };
    if !valid_name(name) {
        return Err(not_found());
    }
    let file = dir.join(format!("{name}.toml"));
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && name == "default" => {
            return Ok(Config {
                name: name.into(),
                ..Default::default()
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) => {
            return Err(ErrorInfo::new(
                ErrorKind::Usage,
                format!("configuration {name}: {}: {e}", file.display()),
            ));
        }
    };
    parse(name, &file, &text).map_err(|e| ErrorInfo::new(ErrorKind::Usage, e))
}

/// Parses and checks one file; the error names the file, the line and the reason.
fn parse(name: &str, file: &Path, text: &str) -> Result<Config, String> {
    let at = |line: Option<usize>, why: &str| match line {
        Some(l) => format!("configuration {name}: {} line {l}: {why}", file.display()),
        None => format!("configuration {name}: {}: {why}", file.display()),
    };
    let raw: File = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_at(text, s.start));
        at(line, e.message())
    })?;
    let key_err = |key: &str, why: String| at(line_of(text, key), &format!("{key}: {why}"));
    let restricted = raw.engine.as_deref() == Some("restricted");
    let shell = match raw.engine.as_deref() {
        None | Some("bash") | Some("restricted") => None,
        Some(p) if Path::new(p).is_absolute() => {
            if !Path::new(p).is_file() {
                return Err(key_err("engine", format!("{p} does not exist")));
            }
            Some(p.to_string())
        }
        Some(other) => {
            return Err(key_err(
                "engine",
                format!("'{other}' is not bash, restricted or an absolute path to a shell"),
            ));
        }
    };
    // Account names are checked when a session starts: accounts come and go.
    let account_name = |n: &String| {
        !n.is_empty()
            && n.len() <= 64
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.$".contains(&b))
    };
    if let Some(n) = raw.run_as.as_ref().filter(|n| !account_name(n)) {
        return Err(key_err("run_as", format!("'{n}' is not an account name")));
    }
    if let Some(n) = raw.allowed_users.iter().find(|n| !account_name(n)) {
        return Err(key_err(
            "allowed_users",
            format!("'{n}' is not a user name"),
        ));
    }
    if let Some(n) = raw.allowed_groups.iter().find(|n| !account_name(n)) {
        return Err(key_err(
            "allowed_groups",
            format!("'{n}' is not a group name"),
        ));
    }
    if !restricted && !raw.path.is_empty() {
        return Err(key_err(
            "path",
            "only the restricted engine takes path and allow rules".into(),
        ));
    }
    if !restricted && !raw.allow.is_empty() {
        return Err(at(
            table_line(text, "[[allow]]", 0),
            "[[allow]]: only the restricted engine takes path and allow rules",
        ));
    }
    let rules = restricted.then(|| tether_engine::restricted::Rules {
        name: name.into(),
        path: if raw.path.is_empty() {
            vec!["/usr/bin".into(), "/bin".into()]
        } else {
            raw.path.clone()
        },
        allow: raw.allow.clone(),
    });
    if let Some(r) = &rules {
        for (i, rule) in r.allow.iter().enumerate() {
            tether_engine::restricted::validate_rule(rule)
                .map_err(|e| at(table_line(text, "[[allow]]", i), &e))?;
        }
        if let Some(p) = raw
            .path
            .iter()
            .find(|p| !tether_engine::restricted::exact_absolute(p))
        {
            return Err(at(
                entry_line(text, "path", p),
                &format!("path: {}", tether_engine::restricted::path_refusal(p)),
            ));
        }
    }
    let idle_timeout_s = match raw.idle_timeout {
        None => None,
        Some(Amount::Number(n)) => Some(n),
        Some(Amount::Text(t)) => Some(
            humantime::parse_duration(&t)
                .map_err(|e| key_err("idle_timeout", format!("'{t}': {e}")))?
                .as_secs(),
        ),
    };
    let output_quota = match raw.output_quota {
        None => None,
        Some(Amount::Number(n)) if n > 0 => Some(n),
        Some(Amount::Number(_)) => return Err(key_err("output_quota", "must be positive".into())),
        Some(Amount::Text(t)) => {
            Some(tether_proto::parse_size(&t).map_err(|e| key_err("output_quota", e))?)
        }
    };
    let drop_oldest = match raw.output_buffering.as_deref() {
        None | Some("block") => false,
        Some("drop") => true,
        Some(other) => {
            return Err(key_err(
                "output_buffering",
                format!("'{other}' is not block or drop"),
            ));
        }
    };
    if let Some(dir) = &raw.working_directory
        && !Path::new(dir).is_absolute()
    {
        return Err(key_err(
            "working_directory",
            format!("'{dir}' is not an absolute path"),
        ));
    }
    let startup_script = match raw.startup_script {
        None => None,
        Some(_) if restricted => {
            return Err(key_err(
                "startup_script",
                "the restricted engine runs no shell, so it sources no start-up script".into(),
            ));
        }
        Some(s) => {
            let p = file.parent().unwrap_or(Path::new("/")).join(&s);
            if !p.is_file() {
                return Err(key_err(
                    "startup_script",
                    format!("{} does not exist", p.display()),
                ));
            }
            Some(p.to_string_lossy().into_owned())
        }
    };
    Ok(Config {
        name: name.into(),
        shell,
        environment: raw.environment.into_iter().collect(),
        working_directory: raw.working_directory,
        startup_script,
        idle_timeout_s,
        output_quota,
        drop_oldest,
        max_sessions_per_user: raw.max_sessions_per_user,
        restricted: rules,
        run_as: raw.run_as,
        allowed_users: raw.allowed_users,
        allowed_groups: raw.allowed_groups,
    })
}

fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line where `key` is set (`key =` at the start of a line), for errors about its value.
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

/// The line of entry `value` of array `key` (the first line from `key =` on that has it
/// quoted as written), else the line of `key =`.
fn entry_line(text: &str, key: &str, value: &str) -> Option<usize> {
    let start = line_of(text, key)?;
    let quoted = [format!("\"{value}\""), format!("'{value}'")];
    text.lines()
        .enumerate()
        .skip(start - 1)
        .find(|(_, l)| quoted.iter().any(|q| l.contains(q.as_str())))
        .map(|(i, _)| i + 1)
        .or(Some(start))
}

/// The line of the `nth` (from 0) table header `header` (such as `[[allow]]`).
fn table_line(text: &str, header: &str, nth: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with(header))
        .nth(nth)
        .map(|(i, _)| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Config, String> {
        parse("t", Path::new("/etc/t.toml"), text)
    }

    #[test]
    fn a_good_file_sets_everything() {
        let c = parse_text(
            "engine = \"/bin/sh\"\nenvironment = { A = \"1\" }\nworking_directory = \"/tmp\"\n\
             idle_timeout = \"15m\"\noutput_quota = \"64K\"\noutput_buffering = \"drop\"\n\
             max_sessions_per_user = 3\n",
        )
        .unwrap();
        assert_eq!(c.shell.as_deref(), Some("/bin/sh"));
        assert_eq!(c.environment, vec![("A".into(), "1".into())]);
        assert_eq!(c.idle_timeout_s, Some(900));
        assert_eq!(c.output_quota, Some(65536));
        assert!(c.drop_oldest);
        assert_eq!(c.max_sessions_per_user, Some(3));
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let e = parse_text("engine = \"bash\"\n\nidle_timout = 5\n").unwrap_err();
        assert!(e.contains("/etc/t.toml line 3"), "{e}");
        assert!(e.contains("idle_timout"), "{e}");
        let e = parse_text("engine = \"bash\"\noutput_buffering = \"maybe\"\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("maybe"), "{e}");
        let e = parse_text("engine = [\n").unwrap_err();
        assert!(e.contains("line 1") || e.contains("line 2"), "{e}");
        let e = parse_text("engine = \"zsh\"\n").unwrap_err();
        assert!(e.contains("absolute path"), "{e}");
        // Errors inside a rule name the rule's own line.
        let e = parse_text(
            "engine = \"restricted\"\n[[allow]]\ncommand = \"id\"\n\n[[allow]]\ncommand = \"x\"\nargs = [\"re:(\"]\n",
        )
        .unwrap_err();
        assert!(e.contains("line 5"), "{e}");
        let e = parse_text("engine = \"restricted\"\nstartup_script = \"x.sh\"\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("no shell"), "{e}");
        let e = parse_text("[[allow]]\ncommand = \"id\"\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("restricted"), "{e}");
    }

    #[test]
    fn inexact_program_paths_and_path_entries_are_errors_with_their_line() {
        for (command, line) in [
            ("/bin/./echo", 5),
            ("/bin//echo", 5),
            ("/bin/echo/", 5),
            ("/usr/bin/../bin/echo", 5),
        ] {
            let e = parse_text(&format!(
                "engine = \"restricted\"\n[[allow]]\ncommand = \"id\"\n\n[[allow]]\ncommand = \"{command}\"\n"
            ))
            .unwrap_err();
            assert!(
                e.contains(&format!("/etc/t.toml line {line}: ")) && e.contains(command),
                "{e}"
            );
        }
        for entry in [
            "/usr/bin/",
            "/usr//bin",
            "/usr/./bin",
            "/usr/lib/../bin",
            "bin",
        ] {
            let e = parse_text(&format!(
                "engine = \"restricted\"\npath = [\n  \"/bin\",\n  \"{entry}\",\n]\n[[allow]]\ncommand = \"id\"\n"
            ))
            .unwrap_err();
            assert!(
                e.contains("/etc/t.toml line 4: path: ") && e.contains(entry),
                "{entry}: {e}"
            );
        }
        let e = parse_text("engine = \"restricted\"\npath = [\"usr/bin\"]\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("not an absolute"), "{e}");
        let ok = parse_text(
            "engine = \"restricted\"\npath = [\"/usr/local/bin\", \"/bin\"]\n\
             [[allow]]\ncommand = \"/usr/bin/id\"\n",
        )
        .unwrap();
        assert_eq!(ok.restricted.unwrap().path, ["/usr/local/bin", "/bin"]);
    }

    /// A directory of configuration files for one test, removed on drop.
    #[test]
    fn names_are_file_names() {
        assert!(valid_name("ops-1.x_y"));
        assert!(!valid_name("../x"));
        assert!(!valid_name(".hidden"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(""));
    }
}
