//! What the native transport takes from the user's ssh configuration: `ssh -G` prints the
//! options ssh itself would use for a computer (its config files, `-F`, `-o`, `Match` blocks),
//! so tether reads them there instead of parsing ssh_config itself. What the native client
//! cannot honour (a proxy) is refused with one line naming the computer.

use crate::farside::err;
use crate::ssh::{SshSettings, Target};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tether_proto::{ErrorInfo, ErrorKind, RemoteTarget};
use tokio::io::AsyncReadExt;

/// Most bytes of `ssh -G` output read (it prints a few KiB).
const MAX_OUTPUT: u64 = 1 << 20;

/// What to do with a host key that known_hosts does not have (`StrictHostKeyChecking`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strict {
    /// Refuse (`yes`, and `ask`: the daemon cannot ask).
    Yes,
    /// Add it to the first user known_hosts file and go on (`accept-new`).
    AcceptNew,
    /// Go on (`no`); a changed key is still refused.
    No,
}

/// The options of one computer, as `ssh -G` resolved them.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub hostname: String,
    pub port: u16,
    pub user: String,
    /// Private key files to try, in order (`~` expanded).
    pub identity_files: Vec<PathBuf>,
    /// Only the keys of `identity_files`, even from the agent.
    pub identities_only: bool,
    /// `None`: no agent (`IdentityAgent none`); `Some(None)`: the caller's `SSH_AUTH_SOCK`.
    pub identity_agent: Option<Option<PathBuf>>,
    pub known_hosts: Vec<PathBuf>,
    pub global_known_hosts: Vec<PathBuf>,
    pub strict: Strict,
    /// The name known_hosts lists the key under (`HostKeyAlias`), else the host name.
    pub host_key_alias: Option<String>,
    pub connect_timeout: Option<Duration>,
    /// `ServerAliveInterval` and `ServerAliveCountMax`.
    pub keepalive: Option<(Duration, usize)>,
    pub forward_agent: bool,
    /// Write a learned host's name hashed (`HashKnownHosts`), as ssh would.
    pub hash_known_hosts: bool,
    /// `Ciphers`, `KexAlgorithms` and `MACs` as ssh would offer them, in its order, less what
    /// this client does not speak; empty: russh's defaults.
    pub ciphers: Vec<String>,
    pub kex: Vec<String>,
    pub macs: Vec<String>,
}

impl Resolved {
    /// The algorithms to offer: the user's, so that a configuration that rules a cipher out
    /// (a policy, a compliance rule) rules it out here too, as it does for ssh.
    pub fn preferred(&self) -> russh::Preferred {
        use russh::{cipher, kex, mac};
        use std::borrow::Cow;
        let mut p = russh::Preferred::default();
        if !self.ciphers.is_empty() {
            let v = self.ciphers.iter();
            p.cipher = Cow::Owned(
                v.filter_map(|n| cipher::Name::try_from(n.as_str()).ok())
                    .collect(),
            );
        }
        if !self.kex.is_empty() {
            let mut v: Vec<kex::Name> = self
                .kex
                .iter()
                .filter_map(|n| kex::Name::try_from(n.as_str()).ok())
                .collect();
            // Not algorithms but signals ssh adds itself: extension negotiation and strict key
            // exchange (the defence against prefix truncation, "Terrapin").
            v.extend([
                kex::EXTENSION_SUPPORT_AS_CLIENT,
                kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT,
            ]);
            p.kex = Cow::Owned(v);
        }
        if !self.macs.is_empty() {
            let v = self.macs.iter();
            p.mac = Cow::Owned(
                v.filter_map(|n| mac::Name::try_from(n.as_str()).ok())
                    .collect(),
            );
        }
        p
    }
}

/// The names of a comma-separated list that this client speaks (never `none`), or a refusal
/// naming the option when it allows none of them.
fn speakable(
    c: &str,
    option: &str,
    value: &str,
    known: impl Fn(&str) -> bool,
) -> Result<Vec<String>, ErrorInfo> {
    let v: Vec<String> = value
        .split(',')
        .filter(|n| *n != "none" && known(n))
        .map(str::to_string)
        .collect();
    if v.is_empty() {
        return Err(err(
            ErrorKind::Usage,
            c,
            format!(
                "its ssh configuration allows only {option} {value}, none of which the native \
                 transport speaks; use --transport ssh for it"
            ),
        ));
    }
    Ok(v)
}

/// Runs `ssh -G` for `rt` as the ssh transport would run ssh, and reads its answer.
pub async fn resolve(rt: &RemoteTarget) -> Result<Resolved, ErrorInfo> {
    let c = rt.computer.as_str();
    let (target, ssh): (Target, SshSettings) = crate::link::settings(rt)?;
    let (program, mut args) = ssh.command_line(&target, &[]);
    args.insert(0, "-G".into());
    let mut child = tokio::process::Command::new(&program)
        .args(&args)
        .env_remove("SSH_AUTH_SOCK")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            err(
                ErrorKind::Connection,
                c,
                format!("cannot run {} -G: {e}", program.display()),
            )
        })?;
    let (Some(out), Some(errs)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(err(ErrorKind::Connection, c, "ssh -G has no stdio"));
    };
    let read = async {
        let (mut text, mut why) = (Vec::new(), Vec::new());
        let (mut out, mut errs) = (out.take(MAX_OUTPUT), errs.take(64 * 1024));
        let (a, b) = tokio::join!(out.read_to_end(&mut text), errs.read_to_end(&mut why));
        let status = child.wait().await;
        (a.and(b).and(status), text, why)
    };
    let (status, text, why) = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .map_err(|_| {
            err(
                ErrorKind::Connection,
                c,
                "ssh -G did not answer within 10 s",
            )
        })?;
    let ok = status.as_ref().is_ok_and(|s| s.success());
    if !ok {
        let why = String::from_utf8_lossy(&why);
        let last = why
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(err(
            ErrorKind::Usage,
            c,
            format!(
                "ssh -G could not read the ssh configuration: {}",
                last.trim()
            ),
        ));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    parse(c, &String::from_utf8_lossy(&text), home.as_deref())
}

/// Expands a leading `~` (what `ssh -G` leaves in identity files).
fn expand(word: &str, home: Option<&Path>) -> PathBuf {
    match (word.strip_prefix("~/"), home) {
        (Some(rest), Some(h)) => h.join(rest),
        _ if word == "~" => home.map_or_else(|| PathBuf::from(word), Path::to_path_buf),
        _ => PathBuf::from(word),
    }
}

fn yes(v: &str) -> bool {
    matches!(v, "yes" | "true")
}

/// Reads `ssh -G` output (one `key value` a line). Refuses proxies, which this client cannot
/// run, with a line that names the computer and the way out (`--transport ssh`).
pub fn parse(c: &str, text: &str, home: Option<&Path>) -> Result<Resolved, ErrorInfo> {
    let mut r = Resolved {
        hostname: String::new(),
        port: 22,
        user: String::new(),
        identity_files: Vec::new(),
        identities_only: false,
        identity_agent: Some(None),
        known_hosts: Vec::new(),
        global_known_hosts: Vec::new(),
        strict: Strict::Yes,
        host_key_alias: None,
        connect_timeout: None,
        keepalive: None,
        forward_agent: false,
        hash_known_hosts: false,
        ciphers: Vec::new(),
        kex: Vec::new(),
        macs: Vec::new(),
    };
    let (mut alive, mut alive_max) = (0u64, 3usize);
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once(' ') else {
            continue;
        };
        let value = value.trim();
        let refuse = |what: &str| {
            err(
                ErrorKind::Usage,
                c,
                format!(
                    "its ssh configuration uses {what}, which the native transport cannot \
                     follow; use --transport ssh for it"
                ),
            )
        };
        match key.to_ascii_lowercase().as_str() {
            "hostname" => r.hostname = value.to_string(),
            "port" => {
                r.port = value
                    .parse()
                    .map_err(|_| err(ErrorKind::Usage, c, format!("ssh -G gave port {value}")))?
            }
            "user" => r.user = value.to_string(),
            "identityfile" => r.identity_files.push(expand(value, home)),
            "identitiesonly" => r.identities_only = yes(value),
            "identityagent" => {
                r.identity_agent = match value {
                    "none" => None,
                    "SSH_AUTH_SOCK" => Some(None),
                    path => Some(Some(expand(path, home))),
                }
            }
            "userknownhostsfile" => {
                r.known_hosts = value.split_whitespace().map(|w| expand(w, home)).collect()
            }
            "globalknownhostsfile" => {
                r.global_known_hosts = value.split_whitespace().map(|w| expand(w, home)).collect()
            }
            "stricthostkeychecking" => {
                r.strict = match value {
                    "accept-new" => Strict::AcceptNew,
                    "no" | "false" | "off" => Strict::No,
                    _ => Strict::Yes,
                }
            }
            "hostkeyalias" if value != "none" => r.host_key_alias = Some(value.to_string()),
            "connecttimeout" => r.connect_timeout = value.parse().ok().map(Duration::from_secs),
            "serveraliveinterval" => alive = value.parse().unwrap_or(0),
            "serveralivecountmax" => alive_max = value.parse().unwrap_or(3),
            "forwardagent" => r.forward_agent = value != "no" && value != "false",
            "hashknownhosts" => r.hash_known_hosts = yes(value),
            "ciphers" => {
                r.ciphers = speakable(c, "Ciphers", value, |n| {
                    russh::cipher::Name::try_from(n).is_ok()
                })?
            }
            "kexalgorithms" => {
                r.kex = speakable(c, "KexAlgorithms", value, |n| {
                    russh::kex::Name::try_from(n).is_ok()
                })?
            }
            "macs" => {
                r.macs = speakable(c, "MACs", value, |n| russh::mac::Name::try_from(n).is_ok())?
            }
            "proxyjump" if value != "none" => return Err(refuse("ProxyJump")),
            "proxycommand" if value != "none" => return Err(refuse("ProxyCommand")),
            _ => {}
        }
    }
    if r.hostname.is_empty() || r.user.is_empty() {
        return Err(err(
            ErrorKind::Connection,
            c,
            "ssh -G named no host name or user",
        ));
    }
    if alive > 0 {
        r.keepalive = Some((Duration::from_secs(alive), alive_max));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: &str = "user alice\nhostname 10.0.0.5\nport 2222\nidentityfile ~/.ssh/id_ed25519\n\
        identityfile /k/two\nidentitiesonly yes\nuserknownhostsfile ~/.ssh/known_hosts /dev/null\n\
        globalknownhostsfile /etc/ssh/ssh_known_hosts\nstricthostkeychecking accept-new\n\
        connecttimeout 7\nserveraliveinterval 5\nserveralivecountmax 2\nforwardagent yes\n\
        hostkeyalias web\n";

    #[test]
    fn the_options_that_matter_are_read() {
        let r = parse("web", G, Some(Path::new("/home/a"))).unwrap();
        assert_eq!(
            (r.hostname.as_str(), r.port, r.user.as_str()),
            ("10.0.0.5", 2222, "alice")
        );
        assert_eq!(
            r.identity_files,
            [
                PathBuf::from("/home/a/.ssh/id_ed25519"),
                PathBuf::from("/k/two")
            ]
        );
        assert!(r.identities_only && r.forward_agent);
        assert_eq!(r.known_hosts[0], PathBuf::from("/home/a/.ssh/known_hosts"));
        assert_eq!(r.strict, Strict::AcceptNew);
        assert_eq!(r.host_key_alias.as_deref(), Some("web"));
        assert_eq!(r.connect_timeout, Some(Duration::from_secs(7)));
        assert_eq!(r.keepalive, Some((Duration::from_secs(5), 2)));
        assert_eq!(r.identity_agent, Some(None));
    }

    #[test]
    fn ask_is_refusal_and_no_agent_is_none() {
        let text = format!("{G}stricthostkeychecking ask\nidentityagent none\n");
        let r = parse("web", &text, None).unwrap();
        assert_eq!(r.strict, Strict::Yes);
        assert_eq!(r.identity_agent, None);
    }

    #[test]
    fn proxies_are_refused_naming_the_computer_and_the_way_out() {
        for (line, what) in [
            ("proxyjump bastion", "ProxyJump"),
            ("proxycommand nc %h %p", "ProxyCommand"),
        ] {
            let e = parse("db7", &format!("{G}{line}\n"), None).unwrap_err();
            assert!(e.message.contains("db7"), "{}", e.message);
            assert!(e.message.contains(what), "{}", e.message);
            assert!(e.message.contains("--transport ssh"), "{}", e.message);
            assert!(!e.message.contains('\n'));
        }
        assert!(parse("db7", &format!("{G}proxycommand none\n"), None).is_ok());
    }

    /// The user's algorithm lists are followed, in their order, less what russh lacks; a list
    /// with nothing russh speaks is refused in one line, naming the option.
    #[test]
    fn algorithm_lists_are_followed_and_an_impossible_one_refused() {
        let text = format!(
            "{G}ciphers 3des-cbc,aes128-gcm@openssh.com,aes256-ctr\n\
             kexalgorithms sntrup761x25519-sha512@openssh.com,curve25519-sha256\n\
             macs umac-64-etm@openssh.com,hmac-sha2-256-etm@openssh.com\n"
        );
        let r = parse("web", &text, None).unwrap();
        assert_eq!(r.ciphers, ["aes128-gcm@openssh.com", "aes256-ctr"]);
        assert_eq!(r.kex, ["curve25519-sha256"]);
        assert_eq!(r.macs, ["hmac-sha2-256-etm@openssh.com"]);
        let p = r.preferred();
        assert_eq!(
            p.cipher.as_ref(),
            [russh::cipher::AES_128_GCM, russh::cipher::AES_256_CTR]
        );
        assert_eq!(p.kex[0], russh::kex::CURVE25519);
        assert!(
            p.kex
                .contains(&russh::kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT)
        );
        assert_eq!(p.mac.as_ref(), [russh::mac::HMAC_SHA256_ETM]);
        // Without the lists (not from ssh -G): russh's own choice.
        let d = parse("web", G, None).unwrap().preferred();
        assert_eq!(d.cipher, russh::Preferred::default().cipher);
        for (line, option) in [
            ("ciphers 3des-cbc", "Ciphers"),
            (
                "kexalgorithms sntrup761x25519-sha512@openssh.com",
                "KexAlgorithms",
            ),
            ("macs umac-128-etm@openssh.com,none", "MACs"),
        ] {
            let e = parse("db7", &format!("{G}{line}\n"), None).unwrap_err();
            assert!(e.message.contains("db7"), "{}", e.message);
            assert!(e.message.contains(option), "{}", e.message);
            assert!(e.message.contains("--transport ssh"), "{}", e.message);
            assert!(!e.message.contains('\n'));
        }
    }
}
