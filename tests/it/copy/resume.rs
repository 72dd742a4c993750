//! `tether copy` goes on from where it stopped (issue 20): across links killed under it (the
//! relay resumes the invocation's stdin and output), and, run again, after the CLI was killed
//! or interrupted or the session side was killed (the receiver's partial file is offered, and
//! only the rest is sent). Never a partial or wrong file in place.

use crate::common::sshd::setup;
use crate::common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const MIB: u64 = 1 << 20;

/// A file of `mib` MiB whose every MiB differs (a resume from the wrong offset shows), and
/// differs with `seed`.
fn big_file(path: &Path, mib: u32, seed: u32) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for m in 0..mib {
        let chunk: Vec<u8> = (0..MIB as u32)
            .map(|i| {
                (i.wrapping_mul(2_654_435_761) ^ (m + seed).wrapping_mul(40_503)).to_be_bytes()[1]
            })
            .collect();
        f.write_all(&chunk).unwrap();
    }
    f.flush().unwrap();
}

/// Both files hold the same bytes (compared without printing 64 MiB when they differ).
#[track_caller]
fn same_bytes(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(x.len(), y.len(), "{} and {}", a.display(), b.display());
    let first = x.iter().zip(&y).position(|(p, q)| p != q);
    assert!(first.is_none(), "{} differs at byte {first:?}", b.display());
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Names in `dir` of temporary or partial files.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tether-"))
        .collect()
}

/// Processes running a side of a copy that writes to or reads from `path`.
fn copy_sides(path: &Path) -> Vec<u32> {
    let path = path.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let c = cmdline(*p);
            c.contains("__copy ") && c.contains(&path) && !c.contains("invoke")
        })
        .collect()
}

/// Waits until `part` has `at_least` bytes while `copy` still runs.
#[track_caller]
fn wait_for_partial(copy: &mut Background, part: &Path, at_least: u64) {
    wait_until(Duration::from_secs(120), "the partial file to grow", || {
        if let Ok(Some(st)) = copy.child.try_wait() {
            panic!("the copy ended ({st}) before {at_least} bytes were in its partial file");
        }
        size(part) >= at_least
    });
}

/// The pid of the client's warm link. Waited for: the status skips a link whose slot is busy
/// at that instant (a channel being opened, a reconnection under way).
fn link_pid(client: &Home) -> u32 {
    let mut pid = 0;
    wait_until(Duration::from_secs(60), "a warm link in the status", || {
        let st = client.run(&["daemon", "status", "--json"]).success().json();
        pid = st["links"][0]["pid"].as_u64().unwrap_or(0) as u32;
        pid != 0
    });
    pid
}

/// Kills the ssh of the client's link while `part` grows, at two points of a `len`-byte file.
fn kill_links_while(client: &Home, copy: &mut Background, part: &Path, len: u64) {
    for at in [len / 8, len / 2] {
        wait_for_partial(copy, part, at);
        let ssh = link_pid(client);
        assert!(cmdline(ssh).contains("ssh"), "{}", cmdline(ssh));
        assert!(send_signal(ssh, "KILL"));
        wait_gone(ssh, "the killed ssh");
    }
}

/// A copy to and from a session on another computer whose link is killed twice in the middle
/// of a 48 MiB file (three times the relay's stdin log) arrives whole, byte for byte, and is
/// sent once: the relay resumes the invocation's stdin and output where they stopped.
#[test]
fn a_copy_goes_on_across_killed_links_both_ways() {
    let (_sshd, remote, client) = setup();
    client
        .run(&["new", "tether-test", "--name", "rs"])
        .success();
    remote.note_session(&remote.session("rs"));
    let base = client.scratch().join("copy-links");
    let (far, back) = (base.join("far"), base.join("back"));
    std::fs::create_dir_all(&far).unwrap();
    std::fs::create_dir_all(&back).unwrap();
    let src = base.join("big");
    big_file(&src, 48, 0);
    let len = 48 * MIB;
    let to = format!("rs:{}", far.display());
    let mut push = client.spawn(
        &["copy", "--json", src.to_str().unwrap(), &to],
        "push-kills",
    );
    kill_links_while(&client, &mut push, &far.join(".big.tether-part"), len);
    let out = push.wait(Duration::from_secs(180)).success();
    assert!(out.err().contains("restored"), "{out}");
    let j = out.json();
    assert_eq!(
        (j["bytes"].as_u64(), j["sent"].as_u64()),
        (Some(len), Some(len))
    );
    same_bytes(&src, &far.join("big"));
    assert!(leftovers(&far).is_empty(), "{:?}", leftovers(&far));
    let from = format!("rs:{}", far.join("big").display());
    let mut pull = client.spawn(&["copy", &from, back.to_str().unwrap()], "pull-kills");
    kill_links_while(&client, &mut pull, &back.join(".big.tether-part"), len);
    let out = pull.wait(Duration::from_secs(180)).success();
    assert!(out.err().contains("restored"), "{out}");
    same_bytes(&src, &back.join("big"));
    assert!(leftovers(&back).is_empty(), "{:?}", leftovers(&back));
    client.run(&["remove", "rs"]).success();
}

/// Where a stopped copy left its partial file: the copy `args` is stopped by `stop` once `part`
/// holds 16 MiB; waits until no side of a copy under `base` runs, and returns the partial
/// file's length. The copy is held to 16 MiB a second (`--bwlimit`), so that it is still
/// running, however fast the machine, when its partial file is seen with 16 MiB.
fn stop_midway(
    home: &Home,
    args: &[&str],
    (part, base): (&Path, &Path),
    stop: impl FnOnce(&Background),
) -> u64 {
    let mut limited = vec!["copy", "--bwlimit", "16M"];
    limited.extend(args.iter().skip(1));
    let mut copy = home.spawn(&limited, "stopped-copy");
    wait_for_partial(&mut copy, part, 16 * MIB);
    stop(&copy);
    let out = copy.wait(Duration::from_secs(60));
    assert_ne!(out.code(), Some(0), "{out}");
    wait_until(WAIT, "the copy's far side to end", || {
        copy_sides(base).is_empty()
    });
    size(part)
}

/// Runs the copy again and checks it sent only what the partial file of `have` bytes lacked.
fn rerun(home: &Home, args: &[&str], have: u64, src: &Path, dest: &Path) {
    let mut v = vec!["copy", "--json"];
    v.extend_from_slice(args);
    let out = home.run(&v).success();
    let j = out.json();
    let len = size(src);
    assert_eq!(j["bytes"].as_u64(), Some(len), "{out}");
    assert_eq!(j["resumed"].as_u64(), Some(have), "{out}");
    assert_eq!(j["sent"].as_u64(), Some(len - have), "{out}");
    same_bytes(src, dest);
    assert!(leftovers(dest.parent().unwrap()).is_empty());
}

/// A copy stopped in the middle of a 64 MiB file, pushing (the CLI killed) and pulling (the CLI
/// interrupted as Ctrl-C does), or with its session side killed: nothing is in place, and the
/// same copy run again sends only what is missing and ends with the very same bytes.
#[test]
fn a_stopped_copy_run_again_sends_only_the_rest() {
    let home = Home::new();
    home.new_session("r", &[]);
    let base = home.scratch().join("copy-resume");
    let (into, back) = (base.join("into"), base.join("back"));
    std::fs::create_dir_all(&into).unwrap();
    std::fs::create_dir_all(&back).unwrap();
    let src = base.join("big");
    big_file(&src, 64, 0);
    let to = format!("r:{}", into.display());
    let push = [src.to_str().unwrap(), &to];
    let part = into.join(".big.tether-part");
    let args = ["copy", push[0], push[1]];
    let have = stop_midway(&home, &args, (&part, &base), |c| {
        assert!(send_signal(c.pid(), "KILL"));
    });
    assert!((16 * MIB..64 * MIB).contains(&have), "{have}");
    assert!(!into.join("big").exists(), "a partial file is in place");
    rerun(&home, &push, have, &src, &into.join("big"));
    // Pulling, interrupted.
    let from = format!("r:{}", into.join("big").display());
    let pull = [from.as_str(), back.to_str().unwrap()];
    let part = back.join(".big.tether-part");
    let args = ["copy", pull[0], pull[1]];
    let have = stop_midway(&home, &args, (&part, &base), |c| {
        assert!(send_signal(c.pid(), "INT"));
    });
    assert!((16 * MIB..64 * MIB).contains(&have), "{have}");
    assert!(!back.join("big").exists(), "a partial file is in place");
    rerun(&home, &pull, have, &src, &back.join("big"));
    // Pushing again, the session's side killed.
    std::fs::remove_file(into.join("big")).unwrap();
    let part = into.join(".big.tether-part");
    let args = ["copy", push[0], push[1]];
    let have = stop_midway(&home, &args, (&part, &base), |_| {
        let far = copy_sides(&into);
        assert_eq!(far.len(), 1, "one receiver: {far:?}");
        assert!(send_signal(far[0], "KILL"));
    });
    assert!((16 * MIB..64 * MIB).contains(&have), "{have}");
    rerun(&home, &push, have, &src, &into.join("big"));
    home.invoke("r", "echo usable")
        .success()
        .stdout_is("usable\n");
}

/// The same with a session on another computer, where the CLI's end reaches the far side only
/// through the client daemon: pushing with the CLI killed outright (no word to anyone),
/// pulling with it told to end (SIGTERM, as `timeout` or a service manager does). Each time
/// the far side ends, nothing is in place, the session takes the next command, and the copy
/// run again sends only the rest.
#[test]
fn a_copy_to_another_computer_stopped_midway_ends_there_and_resumes() {
    let (_sshd, remote, client) = setup();
    client
        .run(&["new", "tether-test", "--name", "rk"])
        .success();
    remote.note_session(&remote.session("rk"));
    let base = client.scratch().join("copy-stopped");
    let (into, back) = (base.join("into"), base.join("back"));
    std::fs::create_dir_all(&into).unwrap();
    std::fs::create_dir_all(&back).unwrap();
    let src = base.join("big");
    big_file(&src, 64, 0);
    let to = format!("rk:{}", into.display());
    let push = [src.to_str().unwrap(), &to];
    let args = ["copy", push[0], push[1]];
    let part = into.join(".big.tether-part");
    let have = stop_midway(&client, &args, (&part, &base), |c| {
        assert!(send_signal(c.pid(), "KILL"));
    });
    assert!((16 * MIB..64 * MIB).contains(&have), "{have}");
    assert!(!into.join("big").exists(), "a partial file is in place");
    client
        .invoke("rk", "echo usable")
        .success()
        .stdout_is("usable\n");
    rerun(&client, &push, have, &src, &into.join("big"));
    let from = format!("rk:{}", into.join("big").display());
    let pull = [from.as_str(), back.to_str().unwrap()];
    let args = ["copy", pull[0], pull[1]];
    let part = back.join(".big.tether-part");
    let have = stop_midway(&client, &args, (&part, &base), |c| {
        assert!(send_signal(c.pid(), "TERM"));
    });
    assert!((16 * MIB..64 * MIB).contains(&have), "{have}");
    assert!(!back.join("big").exists(), "a partial file is in place");
    client
        .invoke("rk", "echo usable")
        .success()
        .stdout_is("usable\n");
    rerun(&client, &pull, have, &src, &back.join("big"));
    client.run(&["remove", "rk"]).success();
}

/// Partial files that do not hold the source's start are never finished: one from a source
/// that changed since, and one damaged (a byte flipped) are thrown away and the file sent
/// whole; one that matches is finished. Both ways.
#[test]
fn a_partial_file_is_finished_only_if_it_holds_the_sources_start() {
    let home = Home::new();
    home.new_session("p", &[]);
    let base = home.scratch().join("copy-partials");
    let (into, back) = (base.join("into"), base.join("back"));
    std::fs::create_dir_all(&into).unwrap();
    std::fs::create_dir_all(&back).unwrap();
    let (src, old) = (base.join("f"), base.join("old"));
    big_file(&src, 4, 0);
    big_file(&old, 4, 1000);
    let mut first = std::fs::read(&src).unwrap();
    first.truncate(MIB as usize);
    let mut stale = std::fs::read(&old).unwrap();
    stale.truncate(MIB as usize);
    let mut damaged = first.clone();
    damaged[MIB as usize / 2] ^= 0x5a;
    let to = format!("p:{}", into.display());
    let from = format!("p:{}", src.display());
    let cases: [(&[&str], PathBuf); 2] = [
        (&[src.to_str().unwrap(), &to], into.clone()),
        (&[&from, back.to_str().unwrap()], back.clone()),
    ];
    for (args, dir) in cases {
        for (partial, resumed) in [(&stale, 0), (&damaged, 0), (&first, MIB)] {
            let _ = std::fs::remove_file(dir.join("f"));
            std::fs::write(dir.join(".f.tether-part"), partial).unwrap();
            rerun(&home, args, resumed, &src, &dir.join("f"));
        }
    }
}
