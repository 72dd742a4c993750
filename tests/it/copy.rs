//! `tether copy` (issue 20): files, trees, modes, times and links between this computer and a
//! session, here and on another computer (sshd harness), into a temporary session with
//! `--computer`; errors that name the side and the path; nothing partial left; a restricted
//! configuration refuses it like any other command. Resuming: [`resume`]; the destination's
//! errors (permission, a full disk, missing directories): [`errors`].

mod errors;
mod resume;

use crate::common::sshd::setup;
use crate::common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// A tree with a small file (mode 0640), a 3 MB file, an empty file, a link and a subdirectory.
fn tree(at: &Path) {
    std::fs::create_dir_all(at.join("sub/deeper")).unwrap();
    std::fs::write(at.join("small.txt"), b"small\n").unwrap();
    std::fs::set_permissions(at.join("small.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(at.join("sub/big.bin"), big).unwrap();
    std::fs::write(at.join("sub/deeper/empty"), b"").unwrap();
    std::os::unix::fs::symlink("small.txt", at.join("link")).unwrap();
}

/// Both trees hold the same names, contents, links, and (with `modes`) modes and mtimes.
fn same_tree(a: &Path, b: &Path, modes: bool) {
    for rel in ["small.txt", "sub/big.bin", "sub/deeper/empty"] {
        assert_eq!(
            std::fs::read(a.join(rel)).unwrap(),
            std::fs::read(b.join(rel)).unwrap(),
            "{rel}"
        );
        if modes {
            let (ma, mb) = (
                std::fs::metadata(a.join(rel)).unwrap(),
                std::fs::metadata(b.join(rel)).unwrap(),
            );
            assert_eq!(ma.mode() & 0o7777, mb.mode() & 0o7777, "{rel}");
            assert_eq!(ma.mtime(), mb.mtime(), "{rel}");
        }
    }
    assert_eq!(
        std::fs::read_link(b.join("link")).unwrap(),
        Path::new("small.txt")
    );
    // No temporary name is left anywhere.
    let mut stack = vec![b.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !name.contains(".tether-"),
                "left behind: {}",
                e.path().display()
            );
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
}

#[test]
fn a_tree_goes_to_a_session_and_comes_back_with_modes_times_and_links() {
    let home = Home::new();
    home.new_session("w", &[]);
    let base = home.scratch().join("copy-local");
    let src = base.join("src");
    tree(&src);
    let there = base.join("there");
    std::fs::create_dir_all(&there).unwrap();
    let dest = format!("w:{}", there.display());
    let out = home
        .run(&["copy", "-rp", "--json", src.to_str().unwrap(), &dest])
        .success();
    assert_eq!(out.err(), "", "quiet when not on a terminal: {out}");
    let summary = out.json();
    assert_eq!(summary["files"], 3, "{out}");
    assert_eq!(summary["directories"], 3, "{out}");
    assert_eq!(summary["links"], 1, "{out}");
    same_tree(&src, &there.join("src"), true);
    // Back, under another name (one source takes the destination's name).
    let back = base.join("back");
    let from = format!("w:{}", there.join("src").display());
    home.run(&["copy", "-rp", &from, back.to_str().unwrap()])
        .success();
    same_tree(&src, &back, true);
    // Relative paths are the session's: its working directory, not ours.
    home.invoke("w", &format!("cd {}", there.display()))
        .success();
    let one = base.join("one.txt");
    home.run(&["copy", "w:src/small.txt", one.to_str().unwrap()])
        .success();
    assert_eq!(std::fs::read(&one).unwrap(), b"small\n");
    // The session is as it was: usable, same directory.
    home.invoke("w", "pwd")
        .success()
        .stdout_is(&format!("{}\n", there.display()));
}

#[test]
fn several_sources_need_a_directory_and_bad_paths_name_the_side() {
    let home = Home::new();
    home.new_session("e", &[]);
    let base = home.scratch().join("copy-errors");
    std::fs::create_dir_all(&base).unwrap();
    let (a, b) = (base.join("a"), base.join("b"));
    std::fs::write(&a, "a").unwrap();
    std::fs::write(&b, "b").unwrap();
    // Several sources into a file: not a directory.
    let into_file = format!("e:{}", a.display());
    home.run(&["copy", a.to_str().unwrap(), b.to_str().unwrap(), &into_file])
        .code_is(2)
        .clear_error("not a directory", 1);
    // A missing source is reported, by the side that could not read it; the rest is copied.
    let into = base.join("into");
    std::fs::create_dir_all(&into).unwrap();
    let missing = base.join("missing");
    let out = home.run(&[
        "copy",
        missing.to_str().unwrap(),
        a.to_str().unwrap(),
        &format!("e:{}", into.display()),
    ]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.err().contains("this computer: ")
            && out
                .err()
                .contains(&format!("{}: No such file", missing.display())),
        "{out}"
    );
    assert_eq!(std::fs::read(into.join("a")).unwrap(), b"a");
    let out = home.run(&[
        "copy",
        &format!("e:{}", missing.display()),
        into.to_str().unwrap(),
    ]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.err().contains("session e: "), "{out}");
    // A destination that cannot be written: one line naming the session and the path.
    let under_file = format!("e:{}/x", a.display());
    let out = home.run(&["copy", b.to_str().unwrap(), &under_file]);
    assert_ne!(out.code(), Some(0), "{out}");
    assert!(
        out.err().contains("session e: ") && out.err().contains("Not a directory"),
        "{out}"
    );
    // A directory without -r.
    let out = home.run(&[
        "copy",
        base.to_str().unwrap(),
        &format!("e:{}", into.display()),
    ]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.err().contains("use -r"), "{out}");
    // Both sides local, or both in a session: usage errors.
    home.run(&["copy", a.to_str().unwrap(), b.to_str().unwrap()])
        .code_is(2);
    // A rate that is none: a usage error naming it, and nothing copied.
    let limited = base.join("limited");
    std::fs::create_dir_all(&limited).unwrap();
    let to = format!("e:{}", limited.display());
    for bad in ["0", "fast", "-1M"] {
        let flag = format!("--bwlimit={bad}");
        let out = home.run(&["copy", &flag, a.to_str().unwrap(), &to]);
        assert_eq!(out.code(), Some(2), "{out}");
        assert!(out.err().contains(&format!("'{bad}'")), "{out}");
    }
    assert!(!limited.join("a").exists());
    // A copy held to 1 MiB a second moves 3 MiB whole, and takes no less than 2 s (what the
    // limit promises; no upper bound is asserted).
    let big = base.join("big");
    std::fs::write(&big, vec![9u8; 3 << 20]).unwrap();
    let out = home.run(&["copy", "--bwlimit", "1M", big.to_str().unwrap(), &to]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.elapsed >= std::time::Duration::from_secs(2), "{out}");
    assert_eq!(std::fs::read(limited.join("big")).unwrap().len(), 3 << 20);
}

#[test]
fn a_restricted_configuration_refuses_a_copy() {
    let home = Home::new();
    home.configuration(
        "locked",
        "engine = \"restricted\"\npath = [\"/usr/bin\", \"/bin\"]\n[[allow]]\ncommand = \"echo\"\n",
    );
    home.run(&["new", "--name", "r", "--configuration", "locked"])
        .success();
    let src = home.scratch().join("refused.txt");
    std::fs::write(&src, "x").unwrap();
    let dest = home.scratch().join("never.txt");
    let out = home.run(&[
        "copy",
        src.to_str().unwrap(),
        &format!("r:{}", dest.display()),
    ]);
    assert_eq!(out.code(), Some(6), "{out}");
    assert!(out.err().contains("not allowed"), "{out}");
    assert!(!dest.exists());
}

#[test]
fn copies_reach_sessions_and_temporary_sessions_on_another_computer() {
    let (_sshd, remote, client) = setup();
    let far = remote.scratch().join("far-copy");
    std::fs::create_dir_all(&far).unwrap();
    let src = client.scratch().join("to-far");
    tree(&src);
    // Into a temporary session on the computer (`:PATH`).
    client
        .run(&[
            "copy",
            "-rp",
            "--computer",
            "tether-test",
            src.to_str().unwrap(),
            &format!(":{}", far.display()),
        ])
        .success();
    same_tree(&src, &far.join("to-far"), true);
    // Back out of a session there.
    client
        .run(&["new", "tether-test", "--name", "rs"])
        .success();
    let back = client.scratch().join("from-far");
    client
        .run(&[
            "copy",
            "-r",
            &format!("rs:{}", far.join("to-far").display()),
            back.to_str().unwrap(),
        ])
        .success();
    same_tree(&src, &back, false);
    client.run(&["remove", "rs"]).success();
}

/// On a terminal the side on this computer shows a bar of bytes and ends with one summary line,
/// pushing and pulling.
#[test]
fn on_a_terminal_a_copy_shows_its_progress_and_a_summary() {
    require_program("script", "util-linux");
    let home = Home::new();
    home.new_session("t", &[]);
    let base = home.scratch().join("copy-tty");
    std::fs::create_dir_all(&base).unwrap();
    let file = base.join("f.bin");
    std::fs::write(&file, vec![5u8; 2 << 20]).unwrap();
    for (from, to) in [
        (
            file.display().to_string(),
            format!("t:{}", base.join("pushed").display()),
        ),
        (
            format!("t:{}", file.display()),
            base.join("pulled").display().to_string(),
        ),
    ] {
        let line = format!(
            "{} copy {} {}",
            tether_bin().display(),
            tether_transport::shell_quote(&from),
            tether_transport::shell_quote(&to)
        );
        let mut c = std::process::Command::new("script");
        c.args(["-qec", &line, "/dev/null"]);
        for (k, v) in home.command().get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        let out = run_command(c, None, std::time::Duration::from_secs(60));
        assert_eq!(out.code(), Some(0), "{out}");
        assert!(
            out.out()
                .contains("copied 1 files, 0 directories, 0 links, 2.00 MiB"),
            "{from} -> {to}: {out}"
        );
    }
    assert_eq!(std::fs::read(base.join("pushed")).unwrap().len(), 2 << 20);
    assert_eq!(std::fs::read(base.join("pulled")).unwrap().len(), 2 << 20);
}

/// A disconnected session takes no copy (as it takes no command) until it is connected again.
#[test]
fn a_disconnected_session_takes_a_copy_once_it_is_connected_again() {
    let home = Home::new();
    home.new_session("d", &[]);
    let src = home.scratch().join("dc.txt");
    std::fs::write(&src, "dc").unwrap();
    let dest = home.scratch().join("dc-copied.txt");
    let to = format!("d:{}", dest.display());
    home.run(&["disconnect", "d"]).success();
    let out = home.run(&["copy", src.to_str().unwrap(), &to]);
    assert_ne!(out.code(), Some(0), "{out}");
    assert!(out.err().contains("tether connect d"), "{out}");
    assert!(!dest.exists());
    home.run(&["connect", "d"]).success();
    home.run(&["copy", src.to_str().unwrap(), &to]).success();
    assert_eq!(std::fs::read(&dest).unwrap(), b"dc");
}

/// In system mode a copy runs as the session's user: what it writes is theirs, and what they
/// may not read stays unread.
#[test]
fn in_system_mode_a_copy_reads_and_writes_as_the_sessions_user() {
    use crate::common::system::System;
    let sys = System::new(&[]);
    let user = sys.user("cp", &[]);
    sys.start();
    sys.new_session(&user, "web", &[]);
    let src = user.home.join("mine.txt");
    std::fs::write(&src, "mine\n").unwrap();
    nix::unistd::chown(
        &src,
        Some(nix::unistd::Uid::from_raw(user.uid)),
        Some(nix::unistd::Gid::from_raw(user.gid)),
    )
    .unwrap();
    let dest = user.home.join("copied.txt");
    let to = format!("web:{}", dest.display());
    sys.as_user(&user, &["copy", src.to_str().unwrap(), &to])
        .success();
    assert_eq!(std::fs::read(&dest).unwrap(), b"mine\n");
    assert_eq!(std::fs::metadata(&dest).unwrap().uid(), user.uid);
    let out = sys.as_user(
        &user,
        &[
            "copy",
            "web:/etc/shadow",
            user.home.join("x").to_str().unwrap(),
        ],
    );
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.err()
            .contains("session web: /etc/shadow: Permission denied"),
        "{out}"
    );
    assert!(!user.home.join("x").exists());
    // A destination directory the user may not write (root's, inside theirs): its entries
    // fail, one line each naming the side and the path, and the others are copied. Pushing.
    let tree = user.home.join("tree");
    std::fs::create_dir_all(tree.join("locked")).unwrap();
    for (rel, what) in [("a", "a"), ("locked/b", "b"), ("z", "z")] {
        std::fs::write(tree.join(rel), what).unwrap();
    }
    let into = user.home.join("into");
    std::fs::create_dir_all(into.join("tree/locked")).unwrap();
    for d in [&tree, &tree.join("locked"), &into, &into.join("tree")] {
        let (u, g) = (user.uid, user.gid);
        std::process::Command::new("chown")
            .arg(format!("{u}:{g}"))
            .arg(d)
            .status()
            .unwrap();
    }
    let out = sys.as_user(
        &user,
        &[
            "copy",
            "-r",
            tree.to_str().unwrap(),
            &format!("web:{}", into.display()),
        ],
    );
    assert_eq!(out.code(), Some(1), "{out}");
    let denied = into.join("tree/locked/b");
    // (The harness's LD_PRELOAD makes ld.so complain first.)
    let lines: Vec<String> = out
        .err_lines()
        .into_iter()
        .filter(|l| !l.contains("ld.so"))
        .collect();
    let line = format!(
        "tether: session web: {}: Permission denied",
        denied.display()
    );
    assert_eq!(lines, [line], "{out}");
    assert_eq!(std::fs::read(into.join("tree/a")).unwrap(), b"a");
    assert_eq!(std::fs::read(into.join("tree/z")).unwrap(), b"z");
    assert!(!denied.exists());
    // Pulling into a directory of root's: this computer's side says so.
    let root_dir = user.home.join("roots");
    std::fs::create_dir_all(&root_dir).unwrap();
    let out = sys.as_user(
        &user,
        &[
            "copy",
            &format!("web:{}", src.display()),
            root_dir.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code(), Some(1), "{out}");
    let line = format!(
        "tether: this computer: {}: Permission denied",
        root_dir.join("mine.txt").display()
    );
    assert!(out.err_lines().ends_with(&[line]), "{out}");
    assert!(!root_dir.join("mine.txt").exists());
}

/// Two copies at once from two CLIs into one session, to the same name: one runs while the
/// other waits for the busy session, as `invoke` does; both succeed, and what is in place is
/// one source whole, with no partial file left beside it.
#[test]
fn two_copies_at_once_to_one_name_take_turns_and_leave_one_whole_file() {
    let home = Home::new();
    home.new_session("two", &[]);
    let base = home.scratch().join("copy-two");
    let into = base.join("into");
    std::fs::create_dir_all(&into).unwrap();
    let (a, b) = (base.join("a"), base.join("b"));
    std::fs::write(&a, vec![b'a'; 8 << 20]).unwrap();
    std::fs::write(&b, vec![b'b'; 8 << 20]).unwrap();
    let to = format!("two:{}", into.join("same").display());
    // Held to 16 MiB a second, so that each copy lasts long enough for the other to find the
    // session busy.
    let copy = |src: &Path, tag: &str| {
        home.spawn(
            &["copy", "--bwlimit", "16M", src.to_str().unwrap(), &to],
            tag,
        )
    };
    let mut first = copy(&a, "copy-a");
    let mut second = copy(&b, "copy-b");
    first.wait(std::time::Duration::from_secs(120)).success();
    second.wait(std::time::Duration::from_secs(120)).success();
    let got = std::fs::read(into.join("same")).unwrap();
    assert_eq!(got.len(), 8 << 20);
    assert!(got.iter().all(|c| *c == got[0]), "a mix of both sources");
    let names: Vec<String> = std::fs::read_dir(&into)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["same"]);
}
