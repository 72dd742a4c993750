//! Checking a computer's host key against known_hosts files, as ssh does with
//! `StrictHostKeyChecking`: hashed names (`|1|salt|hash`), patterns (`*`, `?`, `!negation`),
//! `[host]:port` for other ports, and `@revoked` lines. `@cert-authority` lines are skipped:
//! the native transport does not take host certificates. Files are read bounded, and a line
//! that does not parse is skipped, as ssh skips it.

use hmac::{Hmac, KeyInit, Mac};
use russh::keys::PublicKey;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest known_hosts file read (a fleet of 100,000 hosts is ~10 MiB).
const MAX_FILE: u64 = 64 << 20;

/// What the files say about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    /// Listed for this host.
    Match,
    /// Listed as revoked.
    Revoked { file: PathBuf, line: usize },
    /// The host is listed, with other keys only: the key changed (or is of a type not listed).
    Changed { file: PathBuf, line: usize },
    /// The host is not listed at all.
    Unknown,
}

/// The name a host's key is listed under: `host`, or `[host]:port` for another port than 22.
pub fn lookup_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// Checks `key` for `name` (from [`lookup_name`]) in `files`, in order.
pub fn check(files: &[PathBuf], name: &str, key: &PublicKey) -> Known {
    let mut changed = None;
    let mut matched = false;
    for file in files {
        let Some(text) = read_bounded(file) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            let Some(entry) = Entry::parse(line) else {
                continue;
            };
            if !entry.names_host(name) {
                continue;
            }
            let same = russh::keys::parse_public_key_base64(entry.key)
                .is_ok_and(|k| k.key_data() == key.key_data());
            match entry.marker {
                Some("@revoked") if same => {
                    return Known::Revoked {
                        file: file.clone(),
                        line: i + 1,
                    };
                }
                Some(_) => {}
                None if same => matched = true,
                None => {
                    changed.get_or_insert((file.clone(), i + 1));
                }
            }
        }
    }
    match (matched, changed) {
        (true, _) => Known::Match,
        (false, Some((file, line))) => Known::Changed { file, line },
        (false, None) => Known::Unknown,
    }
}

/// Adds `name key` to `file` (`accept-new`), creating it private if needed.
pub fn learn(file: &Path, name: &str, key: &PublicKey, hash: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if file == Path::new("/dev/null") {
        return Ok(());
    }
    let text = key.to_openssh().map_err(std::io::Error::other)?;
    let mut words = text.split_whitespace();
    let (Some(kind), Some(b64)) = (words.next(), words.next()) else {
        return Err(std::io::Error::other("cannot encode the host key"));
    };
    let host = match hash {
        true => hashed_name(name)?,
        false => name.to_string(),
    };
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(file)?;
    f.write_all(format!("{host} {kind} {b64}\n").as_bytes())
}

/// `|1|salt|hash`: the name under a fresh 20-byte salt, as ssh's `HashKnownHosts` writes it,
/// so that the file does not list the computers this user reaches.
fn hashed_name(name: &str) -> std::io::Result<String> {
    let mut salt = [0u8; 20];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut salt)?;
    let mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(&salt)
        .map_err(std::io::Error::other)?
        .chain_update(name.as_bytes())
        .finalize()
        .into_bytes();
    let b64 = data_encoding::BASE64;
    Ok(format!("|1|{}|{}", b64.encode(&salt), b64.encode(&mac)))
}

fn read_bounded(file: &Path) -> Option<String> {
    let f = std::fs::File::open(file).ok()?;
    let mut text = String::new();
    f.take(MAX_FILE).read_to_string(&mut text).ok()?;
    Some(text)
}

struct Entry<'a> {
    marker: Option<&'a str>,
    hosts: &'a str,
    key: &'a str,
}

impl<'a> Entry<'a> {
    fn parse(line: &'a str) -> Option<Entry<'a>> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let mut w = line.split_whitespace();
        let mut first = w.next()?;
        let mut marker = None;
        if first.starts_with('@') {
            marker = Some(first);
            first = w.next()?;
        }
        let _kind = w.next()?;
        let key = w.next()?;
        Some(Entry {
            marker,
            hosts: first,
            key,
        })
    }

    /// Whether the host field names `name`: some pattern matches and no negated one does.
    fn names_host(&self, name: &str) -> bool {
        let mut hit = false;
        for p in self.hosts.split(',') {
            if let Some(hashed) = p.strip_prefix("|1|") {
                hit |= hashed_matches(hashed, name);
            } else if let Some(neg) = p.strip_prefix('!') {
                if wildmatch(&neg.to_ascii_lowercase(), &name.to_ascii_lowercase()) {
                    return false;
                }
            } else {
                hit |= wildmatch(&p.to_ascii_lowercase(), &name.to_ascii_lowercase());
            }
        }
        hit
    }
}

/// `salt|hash` (base64 each): HMAC-SHA1 of the name under the salt, as `HashKnownHosts` writes.
fn hashed_matches(hashed: &str, name: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let b64 = data_encoding::BASE64;
    let (Ok(salt), Ok(hash)) = (b64.decode(salt.as_bytes()), b64.decode(hash.as_bytes())) else {
        return false;
    };
    let Ok(mac) = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(&salt) else {
        return false;
    };
    mac.chain_update(name.as_bytes())
        .verify_slice(&hash)
        .is_ok()
}

/// ssh's pattern match: `*` any run, `?` any one character (iterative, so no pattern can make
/// it take more than pattern × name steps).
fn wildmatch(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && (p[i] == b'?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == b'*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ed25519 public key blob (any 32 bytes make one), base64 as known_hosts writes it.
    fn ed(n: u8) -> String {
        let mut blob = vec![0, 0, 0, 11];
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&[0, 0, 0, 32]);
        blob.extend_from_slice(&[n; 32]);
        data_encoding::BASE64.encode(&blob)
    }

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).unwrap()
    }

    fn file(text: &str) -> (tempdir::Dir, PathBuf) {
        let d = tempdir::Dir::new();
        let p = d.0.join("known_hosts");
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "tether-kh-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    #[allow(non_snake_case)]
    fn listed_changed_unknown_and_revoked() {
        let (ED, ED2) = (&ed(1), &ed(2));
        let (_d, p) = file(&format!(
            "# comment\nweb1,web2 ssh-ed25519 {ED}\n[db]:2222 ssh-ed25519 {ED2}\n\
             @revoked bad ssh-ed25519 {ED}\nbad ssh-ed25519 {ED}\n"
        ));
        let files = [PathBuf::from("/nonexistent/kh"), p.clone()];
        assert_eq!(check(&files, "web2", &key(ED)), Known::Match);
        assert_eq!(check(&files, "WEB1", &key(ED)), Known::Match);
        assert_eq!(
            check(&files, &lookup_name("db", 2222), &key(ED)),
            Known::Changed {
                file: p.clone(),
                line: 3
            }
        );
        assert_eq!(check(&files, "db", &key(ED)), Known::Unknown);
        assert_eq!(
            check(&files, "bad", &key(ED)),
            Known::Revoked { file: p, line: 4 }
        );
    }

    #[test]
    #[allow(non_snake_case)]
    fn patterns_negation_and_hashed_names() {
        let ED = &ed(3);
        // `|1|salt|hash` for "web7", made with HMAC-SHA1 as ssh-keygen -H does.
        let salt = b"0123456789abcdefghij";
        let mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(salt)
            .unwrap()
            .chain_update(b"web7")
            .finalize()
            .into_bytes();
        let b64 = data_encoding::BASE64;
        let hashed = format!("|1|{}|{}", b64.encode(salt), b64.encode(&mac));
        let (_d, p) = file(&format!(
            "{hashed} ssh-ed25519 {ED}\n*.lan,!evil.lan ssh-ed25519 {ED}\n"
        ));
        let files = [p];
        assert_eq!(check(&files, "web7", &key(ED)), Known::Match);
        assert_eq!(check(&files, "web8", &key(ED)), Known::Unknown);
        assert_eq!(check(&files, "a.lan", &key(ED)), Known::Match);
        assert_eq!(check(&files, "evil.lan", &key(ED)), Known::Unknown);
        assert!(wildmatch("a*b?c", "axxbyc") && !wildmatch("a*b?c", "axxbc"));
        assert!(wildmatch(&"*".repeat(100), "x"));
    }

    #[test]
    #[allow(non_snake_case)]
    fn learning_appends_a_line_that_checks() {
        let ED = &ed(4);
        let d = tempdir::Dir::new();
        let p = d.0.join("known_hosts");
        learn(&p, "[h]:2200", &key(ED), false).unwrap();
        assert_eq!(
            check(std::slice::from_ref(&p), "[h]:2200", &key(ED)),
            Known::Match
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// With `HashKnownHosts`, the line names no computer, still checks, and two learned names
    /// get different salts (the same name twice gives different lines).
    #[test]
    #[allow(non_snake_case)]
    fn learning_hashed_names_no_computer_and_checks() {
        let ED = &ed(4);
        let d = tempdir::Dir::new();
        let p = d.0.join("known_hosts");
        learn(&p, "[db1.example]:2200", &key(ED), true).unwrap();
        learn(&p, "[db1.example]:2200", &key(ED), true).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(!text.contains("db1"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines.iter().all(|l| l.starts_with("|1|")), "{text}");
        assert_ne!(lines[0], lines[1], "the salt must be fresh each time");
        assert_eq!(
            check(std::slice::from_ref(&p), "[db1.example]:2200", &key(ED)),
            Known::Match
        );
        assert_eq!(
            check(std::slice::from_ref(&p), "[db2.example]:2200", &key(ED)),
            Known::Unknown
        );
    }
}
