//! `config list` and `config show`: what a user is shown of the configurations. A system
//! daemon shows each user only what they may use, and a file's text only if they could read
//! it themselves.

use super::{Config, load, valid_name};
use crate::account::Account;
use std::path::Path;
use tether_proto::{ConfigInfo, ErrorInfo, ErrorKind};

/// What a user is told about a configuration they may use but whose file they could not read
/// themselves: nothing taken from the file (a TOML error would quote it).
const NOT_READABLE: &str = "not readable by you; ask the administrator";

/// `config list` (every configuration, bad ones with their error) or `config show NAME`.
///
/// `who` is the connecting user of the system daemon (`None`: a per-user daemon, whose user
/// owns the directory and sees everything). A system daemon shows a user only the
/// configurations they may use (the `allowed_users`/`allowed_groups` rule of session
/// creation), and a file's text only when they could read the file themselves; a file that
/// does not parse has no allowed lists, so only root sees it. Anything hidden is "not found",
/// exactly like a name that does not exist.
pub fn list(
    dir: &Path,
    name: Option<&str>,
    who: Option<&Account>,
) -> Result<Vec<ConfigInfo>, ErrorInfo> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let n = e.file_name().into_string().ok()?;
                    let stem = n.strip_suffix(".toml")?;
                    valid_name(stem).then(|| stem.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    if !names.iter().any(|n| n == "default") {
        names.push("default".into());
    }
    names.sort();
    if let Some(want) = name {
        names.retain(|n| n == want);
    }
    let shown: Vec<ConfigInfo> = names
        .into_iter()
        .filter_map(|n| {
            let file = dir.join(format!("{n}.toml"));
            let loaded = load(dir, &n);
            if let Some(user) = who
                && !may_see(user, &loaded)
            {
                return None;
            }
            let exists = file.exists();
            let readable = who.is_none_or(|user| !exists || may_read(user, &file));
            let text = if readable {
                std::fs::read_to_string(&file).unwrap_or_default()
            } else {
                String::new()
            };
            Some(ConfigInfo {
                engine: match &loaded {
                    Ok(c) if c.restricted.is_some() => "restricted".into(),
                    Ok(c) => c.shell.clone().unwrap_or_else(|| "bash".into()),
                    Err(_) => "?".into(),
                },
                error: if readable {
                    loaded.err().map(|e| e.message)
                } else {
                    Some(NOT_READABLE.into())
                },
                file: if exists {
                    file.display().to_string()
                } else {
                    "(built in)".into()
                },
                name: n,
                text,
            })
        })
        .collect();
    match name {
        Some(want) if shown.is_empty() => Err(ErrorInfo::new(
            ErrorKind::NotFound,
            format!(
                "configuration {want} not found; 'tether config list' shows the configurations"
            ),
        )),
        _ => Ok(shown),
    }
}

/// Whether the system daemon's user `user` may see a configuration at all: one they may use
/// (the rule `create` applies), or, for root, any (a file that does not parse, too).
fn may_see(user: &Account, loaded: &Result<Config, ErrorInfo>) -> bool {
    if user.uid == 0 {
        return true;
    }
    match loaded {
        Ok(c) => {
            (c.allowed_users.is_empty() && c.allowed_groups.is_empty())
                || c.allowed_users.contains(&user.name)
                || c.allowed_groups.iter().any(|g| user.in_group(g))
        }
        Err(_) => false,
    }
}

/// Whether `user` could read `file` themselves, as the kernel would decide from mode bits
/// (ACLs aside): search permission on every directory on the way to it (its real path, links
/// resolved), then read permission on the file. Root reads everything.
fn may_read(user: &Account, file: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if user.uid == 0 {
        return true;
    }
    let Ok(real) = std::fs::canonicalize(file) else {
        return false;
    };
    let allows = |path: &Path, bits: u32| {
        std::fs::metadata(path).is_ok_and(|m| mode_allows(user, (m.mode(), m.uid(), m.gid()), bits))
    };
    real.ancestors().skip(1).all(|d| allows(d, 0o1)) && allows(&real, 0o4)
}

/// The kernel's choice of one class of `mode`'s bits for `user` (owner, else group, else
/// others: an owner denied by the owner bits is denied, whatever the others' bits say), and
/// whether that class has all of `bits` (`0o4` read, `0o1` search).
fn mode_allows(user: &Account, (mode, uid, gid): (u32, u32, u32), bits: u32) -> bool {
    let class = if user.uid == uid {
        mode >> 6
    } else if user.gid == gid || user.groups.contains(&gid) {
        mode >> 3
    } else {
        mode
    };
    class & bits == bits
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            use std::os::unix::fs::PermissionsExt;
            let d = std::env::temp_dir().join(format!(
                "tether-configs-{tag}-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4()
            ));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
            Dir(d)
        }
        fn write(&self, name: &str, text: &str, mode: u32) {
            use std::os::unix::fs::PermissionsExt;
            let f = self.0.join(format!("{name}.toml"));
            let _ = std::fs::remove_file(&f);
            std::fs::write(&f, text).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn account(name: &str, uid: u32, gid: u32, groups: &[u32]) -> Account {
        Account {
            name: name.into(),
            uid,
            gid,
            groups: groups.to_vec(),
            home: "/nonexistent".into(),
            shell: "/bin/sh".into(),
        }
    }

    fn names(list: &[ConfigInfo]) -> Vec<&str> {
        list.iter().map(|c| c.name.as_str()).collect()
    }

    /// A user who owns nothing here and is in no group of these files (the test's files
    /// belong to whoever runs it).
    fn stranger() -> Account {
        account(
            "tether-test-nobody",
            4_000_000_001,
            4_000_000_001,
            &[4_000_000_001],
        )
    }

    #[test]
    fn the_system_daemon_lists_only_what_a_user_may_use() {
        let d = Dir::new("use");
        d.write("open", "engine = \"/bin/sh\"\n", 0o644);
        d.write("named", "allowed_users = [\"tether-test-nobody\"]\n", 0o644);
        d.write("others", "allowed_users = [\"someone-else\"]\n", 0o644);
        // Every account is in no group "tether-no-such-group"; group "root" has gid 0.
        d.write(
            "nogroup",
            "allowed_groups = [\"tether-no-such-group\"]\n",
            0o644,
        );
        d.write("rootgroup", "allowed_groups = [\"root\"]\n", 0o644);
        d.write(
            "broken",
            "idle_timout = 5\nallowed_users = [\"tether-test-nobody\"]\n",
            0o644,
        );
        let who = stranger();
        let l = list(&d.0, None, Some(&who)).unwrap();
        assert_eq!(names(&l), ["default", "named", "open"]);
        assert!(l.iter().all(|c| c.error.is_none()), "{l:?}");
        assert_eq!(l[2].text, "engine = \"/bin/sh\"\n");
        assert_eq!(l[2].engine, "/bin/sh");
        // In a group (supplementary) that a configuration allows.
        let member = account(
            "tether-test-member",
            4_000_000_002,
            4_000_000_002,
            &[4_000_000_002, 0],
        );
        let l = list(&d.0, None, Some(&member)).unwrap();
        assert_eq!(names(&l), ["default", "open", "rootgroup"]);
        // A configuration one may not use, or one that does not parse, is not found, in the
        // very words of a name that does not exist.
        let missing = list(&d.0, Some("no-such"), Some(&who)).unwrap_err();
        assert_eq!(missing.kind, ErrorKind::NotFound);
        for hidden in ["others", "nogroup", "rootgroup", "broken"] {
            let e = list(&d.0, Some(hidden), Some(&who)).unwrap_err();
            assert_eq!(e.kind, missing.kind, "{hidden}");
            assert_eq!(
                e.message,
                missing.message.replace("no-such", hidden),
                "{hidden}"
            );
        }
        assert_eq!(
            names(&list(&d.0, Some("named"), Some(&who)).unwrap()),
            ["named"]
        );
        // Root (in system mode) sees everything, the broken file with its error.
        let root = account("root", 0, 0, &[0]);
        let l = list(&d.0, None, Some(&root)).unwrap();
        assert_eq!(
            names(&l),
            [
                "broken",
                "default",
                "named",
                "nogroup",
                "open",
                "others",
                "rootgroup"
            ]
        );
        assert!(
            l[0].error.as_deref().unwrap().contains("idle_timout"),
            "{l:?}"
        );
        // A per-user daemon's user owns the directory: everything, as before.
        let l = list(&d.0, None, None).unwrap();
        assert_eq!(names(&l).len(), 7);
        assert!(l[0].text.contains("idle_timout"));
    }

    #[test]
    fn the_system_daemon_never_shows_a_file_the_user_could_not_read() {
        use std::os::unix::fs::PermissionsExt;
        let d = Dir::new("read");
        let secret = "engine = \"/bin/sh\"\nenvironment = { TOKEN = \"hunter2\" }\n";
        d.write("private", secret, 0o600);
        d.write("shared", secret, 0o644);
        let who = stranger();
        let l = list(&d.0, None, Some(&who)).unwrap();
        assert_eq!(names(&l), ["default", "private", "shared"]);
        let private = &l[1];
        assert_eq!(private.text, "");
        assert_eq!(private.error.as_deref(), Some(NOT_READABLE));
        assert!(private.file.ends_with("private.toml"), "{private:?}");
        assert_eq!(l[2].text, secret);
        assert_eq!(l[2].error, None);
        // The file's group may read it: a member (supplementary group) of the file's group.
        let meta = std::fs::metadata(d.0.join("private.toml")).unwrap();
        let gid = std::os::unix::fs::MetadataExt::gid(&meta);
        d.write("private", secret, 0o640);
        let member = account(
            "tether-test-member",
            4_000_000_002,
            4_000_000_002,
            &[4_000_000_002, gid],
        );
        let l = list(&d.0, Some("private"), Some(&member)).unwrap();
        assert_eq!(l[0].text, secret);
        // The owner class decides for the owner, whatever the others' bits say (root, who
        // may be running these tests, reads everything: that needs another owner).
        let uid = std::os::unix::fs::MetadataExt::uid(&meta);
        d.write("private", secret, 0o044);
        if uid != 0 {
            let owner = account("tether-test-owner", uid, 4_000_000_003, &[4_000_000_003]);
            assert_eq!(
                list(&d.0, Some("private"), Some(&owner)).unwrap()[0].text,
                ""
            );
        }
        assert_eq!(
            list(&d.0, Some("private"), Some(&who)).unwrap()[0].text,
            secret
        );
        // A directory the user cannot search hides every file's text, even a 0644 one.
        std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o750)).unwrap();
        let l = list(&d.0, Some("shared"), Some(&who)).unwrap();
        assert_eq!(l[0].text, "");
        assert_eq!(l[0].error.as_deref(), Some(NOT_READABLE));
        // Root reads everything (the test itself reads as whoever runs it).
        let root = account("root", 0, 0, &[0]);
        let mode = if nix::unistd::getuid().is_root() {
            0o000
        } else {
            0o600
        };
        d.write("private", secret, mode);
        let l = list(&d.0, Some("private"), Some(&root)).unwrap();
        assert_eq!(l[0].text, secret);
        assert_eq!(l[0].error, None);
    }

    #[test]
    fn an_unreadable_file_never_leaks_through_its_error() {
        // The file does not parse, and the TOML error would quote its line.
        let d = Dir::new("leak");
        d.write("bad", "password = \"hunter2\"\n", 0o600);
        let who = stranger();
        assert_eq!(names(&list(&d.0, None, Some(&who)).unwrap()), ["default"]);
        let e = list(&d.0, Some("bad"), Some(&who)).unwrap_err();
        assert!(
            !e.message.contains("hunter2") && !e.message.contains("password"),
            "{e:?}"
        );
        let root = account("root", 0, 0, &[0]);
        let l = list(&d.0, Some("bad"), Some(&root)).unwrap();
        assert!(l[0].error.as_deref().unwrap().contains("password"), "{l:?}");
    }

    #[test]
    fn mode_bits_are_read_as_the_kernel_does() {
        let u = account("u", 10, 20, &[20, 30]);
        assert!(mode_allows(&u, (0o400, 10, 99), 0o4));
        assert!(
            !mode_allows(&u, (0o044, 10, 20), 0o4),
            "owner class decides"
        );
        assert!(mode_allows(&u, (0o040, 11, 20), 0o4));
        assert!(
            mode_allows(&u, (0o040, 11, 30), 0o4),
            "a supplementary group"
        );
        assert!(
            !mode_allows(&u, (0o004 | 0o400, 11, 30), 0o4),
            "group class decides"
        );
        assert!(mode_allows(&u, (0o004, 11, 99), 0o4));
        assert!(!mode_allows(&u, (0o640, 11, 99), 0o4));
        assert!(mode_allows(&u, (0o711, 11, 99), 0o1));
        assert!(!mode_allows(&u, (0o750, 11, 99), 0o1));
    }
}
