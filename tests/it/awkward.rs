//! Awkward far sides (issue 17, point 5), through a real sshd on 127.0.0.1 and real mounts: a
//! tether home that is read-only, on a `noexec` file system, on a full one, and a far side
//! without `sha256sum` (or any other SHA-256 tool) on its PATH. Each fails with one line naming
//! the computer, the path and the fix, exit status 5 (connection), and `tether doctor
//! --computer` reports it as a problem. Creating a session on a full disk says so and leaves no
//! process behind on either side.
//!
//! The mounts are tmpfs file systems on temporary directories (the tests run as root); each is
//! unmounted when its test ends, failed or not.

use crate::common::sshd::Sshd;
use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted for one test; unmounted on drop (lazily if something still holds it).
struct Mount {
    path: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Mount {
    fn tmpfs(options: &str) -> Mount {
        let tmp = temp_dir();
        let path = tmp.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tether-test"])
            .arg(&path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "these tests mount file systems and must run as root: mount -o {options}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mount { path, _tmp: tmp }
    }

    /// Fills the file system until writing fails for want of space.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path.join("filler")).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling {}: {e}", self.path.display()),
            }
        }
        // A file system this full cannot take one more byte.
        assert!(
            std::fs::write(self.path.join("one-more"), b"x").is_err(),
            "{} is not full",
            self.path.display()
        );
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let done = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !done {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// A client that reaches the sshd's computers with the far tether home `remote_home` and a
/// far `tether` that is (`Some`) or is not (`None`: it must be copied there) installed.
fn client(sshd: &Sshd, remote_home: &Path, installed: Option<&Path>) -> Home {
    let exe = installed.map_or("tether-not-installed-here".into(), |p| {
        p.to_string_lossy().into_owned()
    });
    Home::new()
        .env("TETHER_SSH_CONFIG", sshd.config().to_str().unwrap())
        .env("TETHER_REMOTE_EXE", &exe)
        .env("TETHER_REMOTE_HOME", remote_home.to_str().unwrap())
}

/// Live processes whose command line mentions `needle`, or whose environment has exactly
/// `TETHER_HOME=needle`: the far side's shells, bridges, daemons and hosts for that home.
fn far_processes(needle: &Path) -> Vec<u32> {
    let needle = needle.to_string_lossy().into_owned();
    let home = format!("TETHER_HOME={needle}");
    let me = std::process::id();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || !pid_alive(pid) {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let in_env = environ.split(|b| *b == 0).any(|v| v == home.as_bytes());
        if in_env || cmdline(pid).contains(&needle) {
            found.push(pid);
        }
    }
    found.sort_unstable();
    found
}

/// The ssh processes this client's daemon runs (their command line names the ssh config).
fn ssh_processes(sshd: &Sshd) -> Vec<u32> {
    let cfg = sshd.config().to_string_lossy().into_owned();
    let mut v: Vec<u32> = far_processes(&sshd.config())
        .into_iter()
        .filter(|p| {
            let c = cmdline(*p);
            c.starts_with("ssh ") && c.contains(&cfg)
        })
        .collect();
    v.sort_unstable();
    v
}

/// `invoke --computer C true` fails with one line naming the computer, `path` and every one of
/// `words`, with status 5; no ssh is left running here, nor anything for `far_home` there.
#[track_caller]
fn fails_clearly(
    sshd: &Sshd,
    client: &Home,
    c: &str,
    (far_home, path): (&Path, &Path),
    words: &[&str],
) -> Out {
    let out = client
        .run(&["invoke", "--computer", c, "true"])
        .code_is(5)
        .clear_error(&format!("computer {c}: "), 1);
    let text = out.err();
    assert!(
        text.contains(path.to_str().unwrap()),
        "the error should name {path:?}:\n{out}"
    );
    for w in words {
        assert!(text.contains(w), "the error should say {w:?}:\n{out}");
    }
    wait_until(WAIT, "no ssh or far-side process is left", || {
        ssh_processes(sshd).is_empty() && far_processes(far_home).is_empty()
    });
    out
}

/// `tether doctor --computer C`: exit 1, and a FAIL line for check `check` of computer C that
/// says each of `words`.
#[track_caller]
fn doctor_fails(client: &Home, c: &str, check: &str, words: &[&str]) -> Out {
    let out = client.run(&["doctor", "--computer", c]).code_is(1);
    let prefix = format!("FAIL  {c}: {check}: ");
    let line = out
        .out()
        .lines()
        .find(|l| l.starts_with(&prefix))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("doctor should fail {c}: {check}:\n{out}"));
    for w in words {
        assert!(line.contains(w), "doctor's line should say {w:?}: {line}");
    }
    out
}

#[test]
fn a_read_only_tether_home_is_named_with_the_fix() {
    let sshd = Sshd::start();
    let mnt = Mount::tmpfs("ro,size=1m");
    let far = mnt.path.join("home");
    // tether has to be copied there: its directory cannot be made.
    let copying = client(&sshd, &far, None);
    let out = fails_clearly(
        &sshd,
        &copying,
        "tether-test",
        (&far, &far.join("bin")),
        &[
            "cannot write",
            "read-only file system",
            "TETHER_REMOTE_HOME=",
        ],
    );
    assert!(
        out.err().contains("writable, executable directory"),
        "{out}"
    );
    doctor_fails(&copying, "tether-test", "home", &["read-only file system"]);
    doctor_fails(
        &copying,
        "tether-test",
        "copy",
        &[
            "cannot write",
            "read-only file system",
            "TETHER_REMOTE_HOME=",
        ],
    );
    // tether is installed there, but its daemon cannot keep its files.
    let installed = client(&sshd, &far, Some(&tether_bin()));
    fails_clearly(
        &sshd,
        &installed,
        "tether-1",
        (&far, &far),
        &["cannot start its daemon", "read-only file system"],
    );
    doctor_fails(&installed, "tether-1", "home", &["read-only file system"]);
}

#[test]
fn a_noexec_tether_home_is_named_before_anything_is_copied() {
    let sshd = Sshd::start();
    let mnt = Mount::tmpfs("noexec,size=64m");
    let far = mnt.path.join("home");
    let copying = client(&sshd, &far, None);
    fails_clearly(
        &sshd,
        &copying,
        "tether-test",
        (&far, &far.join("bin")),
        &["cannot run programs from", "noexec", "TETHER_REMOTE_HOME="],
    );
    // Found out with a probe, before any byte of tether was sent: nothing was kept.
    let left: Vec<_> = std::fs::read_dir(far.join("bin"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
    let out = doctor_fails(&copying, "tether-test", "copy", &["noexec"]);
    assert!(
        out.out().contains("ok    tether-test: home: "),
        "the home itself is writable:\n{out}"
    );
}

#[test]
fn a_full_file_system_is_named_and_nothing_is_sent() {
    let sshd = Sshd::start();
    let mnt = Mount::tmpfs("size=2m");
    let far = mnt.path.join("home");
    std::fs::create_dir(&far).unwrap();
    mnt.fill();
    let copying = client(&sshd, &far, None);
    fails_clearly(
        &sshd,
        &copying,
        "tether-test",
        (&far, &far.join("bin")),
        &["not enough space", "0 KiB free", "TETHER_REMOTE_HOME="],
    );
    doctor_fails(&copying, "tether-test", "home", &["not enough space"]);
    doctor_fails(&copying, "tether-test", "copy", &["not enough space"]);
    // Installed, but its daemon has no room to start.
    let installed = client(&sshd, &far, Some(&tether_bin()));
    fails_clearly(
        &sshd,
        &installed,
        "tether-1",
        (&far, &far),
        &["cannot start its daemon", "no space left on device"],
    );
}

#[test]
fn a_session_on_a_full_disk_says_so_and_leaks_nothing() {
    let sshd = Sshd::start();
    let mnt = Mount::tmpfs("size=8m");
    let far_path = mnt.path.join("home");
    // Declared after the mount: its daemon is stopped before the mount goes.
    let far = Home::at(far_path.clone());
    let client = client(&sshd, &far_path, Some(&tether_bin()));
    client
        .run(&["new", "tether-test", "--name", "first"])
        .success();
    client
        .invoke("first", "echo fine")
        .success()
        .stdout_is("fine\n");
    far.running_daemon_pid();
    let far_before = far_processes(&far_path);
    let ssh_before = ssh_processes(&sshd);
    assert_eq!(ssh_before.len(), 1, "one warm link: {ssh_before:?}");
    mnt.fill();
    let out = client
        .run(&["new", "tether-test", "--name", "second"])
        .clear_error("tether-test", 1);
    assert_ne!(out.code(), Some(0), "{out}");
    assert!(
        out.err().to_lowercase().contains("no space left on device"),
        "the error should say the disk is full:\n{out}"
    );
    // No host or shell of the failed session is left there, and no extra ssh here.
    wait_until(WAIT, "the failed session leaves no process", || {
        far_processes(&far_path)
            .iter()
            .all(|p| far_before.contains(p))
    });
    assert_eq!(ssh_processes(&sshd), ssh_before);
    assert!(
        !client.sessions().iter().any(|s| s["name"] == "second"),
        "{:?}",
        client.sessions()
    );
    // Room again: the same link serves a new session.
    std::fs::remove_file(mnt.path.join("filler")).unwrap();
    client
        .run(&["new", "tether-test", "--name", "second"])
        .success();
    client
        .invoke("second", "echo ok")
        .success()
        .stdout_is("ok\n");
    client.run(&["remove", "--all"]).success();
}

#[test]
fn a_far_side_without_sha256sum_is_named_with_its_path() {
    let sshd = Sshd::start();
    // The far side's PATH holds the tools the bootstrap needs, but no SHA-256 tool.
    let tools = temp_dir();
    let bin = tools.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for t in ["sh", "uname", "mkdir", "chmod", "rm", "head", "mv", "df"] {
        let found = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
            .iter()
            .map(|d| Path::new(d).join(t))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{t} not found"));
        std::os::unix::fs::symlink(found, bin.join(t)).unwrap();
    }
    let wrapper = tools.path().join("restricted-path");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nPATH={}\nexport PATH\nexec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n",
            bin.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let c = sshd.forced_alias("tether-nohash", wrapper.to_str().unwrap());
    let far = temp_dir();
    let far_home = far.path().join("home");
    let copying = client(&sshd, &far_home, None);
    let out = fails_clearly(
        &sshd,
        &copying,
        &c,
        (&far_home, &bin),
        &["sha256sum", "install sha256sum"],
    );
    assert!(out.err().contains("PATH"), "{out}");
    assert!(
        !far_home.join("bin").exists(),
        "nothing should be made there"
    );
    doctor_fails(&copying, &c, "copy", &["sha256sum", bin.to_str().unwrap()]);
}
