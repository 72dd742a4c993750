//! Reaching another computer: parsing `[user@]host[:port]` and building the `ssh` command line.
//!
//! Every part of a computer name becomes its own argument after an explicit option (`-l`, `-p`)
//! or after `--`, and each is validated first, so no computer name, user or port can add ssh
//! options (`-oProxyCommand=…`) or smuggle extra words. `-o` options come only from the user's
//! own `--ssh-option` flags, and are checked to be one `Key=Value` each.

use std::ffi::OsString;
use std::path::PathBuf;

/// Why a computer name or ssh option was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("computer '{0}': {1}")]
    Invalid(String, &'static str),
    #[error("ssh option '{0}': expected one Key=Value with a letters-only key")]
    Option(String),
}

/// A computer as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// The name as typed, for messages and output prefixes.
    pub label: String,
}

fn word_ok(w: &str) -> bool {
    !w.is_empty()
        && w.len() <= 255
        && !w.starts_with('-')
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Target {
    /// Parses `[user@]host[:port]`, an ssh alias, or `[user@][v6addr][:port]`.
    pub fn parse(s: &str) -> Result<Target, TargetError> {
        let bad = |why| TargetError::Invalid(s.to_string(), why);
        let (user, rest) = match s.rsplit_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, s),
        };
        if let Some(u) = user
            && !word_ok(u)
        {
            return Err(bad(
                "the user may hold only letters, digits, '.', '_' and '-', not first",
            ));
        }
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (addr, after) = inner.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            if addr.is_empty()
                || !addr
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                return Err(bad("not an IPv6 address inside [ ]"));
            }
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("expected ':port' after ']'"))?,
                ),
            };
            (addr.to_string(), port)
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        if !host.contains(':') && !word_ok(&host) {
            return Err(bad(
                "the host may hold only letters, digits, '.', '_' and '-', not first",
            ));
        }
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
                _ => return Err(bad("the port must be a number from 1 to 65535")),
            },
        };
        Ok(Target {
            user: user.map(String::from),
            host,
            port,
            label: s.to_string(),
        })
    }
}

/// The user's ssh settings: `--ssh-config`, `--ssh-option`, `TETHER_SSH`.
#[derive(Debug, Clone, Default)]
pub struct SshSettings {
    pub program: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub options: Vec<String>,
    /// How long reaching a computer may take (ssh's ConnectTimeout, and the caller's own limit
    /// on the whole handshake); `None` = 30 s.
    pub connect_timeout: Option<std::time::Duration>,
}

/// Default for [`SshSettings::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl SshSettings {
    /// Checks each `-o` value: `Key=Value`, a letters-only key, no line breaks.
    pub fn validate(&self) -> Result<(), TargetError> {
        for o in &self.options {
            let ok = o.split_once('=').is_some_and(|(k, v)| {
                !k.is_empty()
                    && k.bytes().all(|b| b.is_ascii_alphabetic())
                    && !v.contains(['\n', '\r', '\0'])
            });
            if !ok {
                return Err(TargetError::Option(o.clone()));
            }
        }
        Ok(())
    }

    /// `ssh [-F cfg] [-o K=V]… -T [-p port] [-l user] -- host REMOTE…`. Options that avoid
    /// needless waits come first, so the user's config and `-o` flags (read later) still win.
    pub fn command_line(&self, t: &Target, remote: &[String]) -> (PathBuf, Vec<OsString>) {
        let program = self.program.clone().unwrap_or_else(|| PathBuf::from("ssh"));
        let mut args: Vec<OsString> = Vec::new();
        if let Some(cfg) = &self.config {
            args.push("-F".into());
            args.push(cfg.into());
        }
        for o in &self.options {
            args.push("-o".into());
            args.push(o.into());
        }
        let limit = self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        args.push("-o".into());
        args.push(format!("ConnectTimeout={}", limit.as_secs().max(1)).into());
        for o in [
            "BatchMode=yes",
            "ServerAliveInterval=5",
            "ServerAliveCountMax=3",
        ] {
            args.push("-o".into());
            args.push(o.into());
        }
        args.push("-T".into());
        if let Some(p) = t.port {
            args.push("-p".into());
            args.push(p.to_string().into());
        }
        if let Some(u) = &t.user {
            args.push("-l".into());
            args.push(u.into());
        }
        args.push("--".into());
        args.push(t.host.clone().into());
        args.extend(remote.iter().map(OsString::from));
        (program, args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_forms_parse() {
        let t = Target::parse("alice@web1.example.com:2222").unwrap();
        assert_eq!(
            (t.user.as_deref(), t.host.as_str(), t.port),
            (Some("alice"), "web1.example.com", Some(2222))
        );
        let t = Target::parse("db-alias").unwrap();
        assert_eq!((t.user, t.host.as_str(), t.port), (None, "db-alias", None));
        let t = Target::parse("[::1]:22").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", Some(22)));
    }

    /// The injection attempts issue 3 names, and more: each is refused.
    #[test]
    fn injection_attempts_are_refused() {
        for bad in [
            "-oProxyCommand=touch /tmp/x",
            "-oProxyCommand=sh",
            "host -o X=Y",
            "user -o PasswordAuthentication=no@host",
            "host:22 -o X=Y",
            "host:-22",
            "host:0",
            "host:65536",
            "host:22x",
            "-host",
            "-l@host",
            "@host",
            "us er@host",
            "host;id",
            "host$(id)",
            "host`id`",
            "ho\nst",
            "ho\0st",
            "",
            "[::1",
            "[::1]x",
            "[-o]:22",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn every_computer_part_is_its_own_argument_after_its_option() {
        let t = Target::parse("bob@h.example:2200").unwrap();
        let s = SshSettings::default();
        let (_, args) = s.command_line(&t, &["tether".into(), "bridge".into()]);
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let dd = args.iter().position(|a| a == "--").unwrap();
        assert_eq!(&args[dd + 1..], ["h.example", "tether", "bridge"]);
        let p = args.iter().position(|a| a == "-p").unwrap();
        assert_eq!(args[p + 1], "2200");
        let l = args.iter().position(|a| a == "-l").unwrap();
        assert_eq!(args[l + 1], "bob");
    }

    #[test]
    fn ssh_options_must_be_one_key_value() {
        let ok = SshSettings {
            options: vec!["ConnectTimeout=5".into()],
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
        for bad in [
            "ConnectTimeout",
            "=5",
            "Proxy Command=x",
            "A=b\nProxyCommand=x",
            "-oX=y",
        ] {
            let s = SshSettings {
                options: vec![bad.into()],
                ..Default::default()
            };
            assert!(s.validate().is_err(), "{bad:?} was accepted");
        }
    }
}
