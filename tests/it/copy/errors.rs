//! A destination `tether copy` cannot write: each failed entry is one line naming the side
//! (the session, or this computer) and the path, the status is not 0, the other entries are
//! copied, and nothing partial is left. Permission denied is in the system-mode test of
//! [`super`] (root may write anywhere).

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A small tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        assert!(
            nix::unistd::getuid().is_root(),
            "this test mounts a small tmpfs to fill it: run it as root"
        );
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount -t tmpfs failed");
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A file that does not fit on the destination's disk: one line names the side and the file,
/// its partial file is gone (so the space is free again), and the small files before and after
/// it are copied. Pushing and pulling.
#[test]
fn a_full_disk_fails_the_file_that_does_not_fit_and_the_rest_is_copied() {
    let home = Home::new();
    home.new_session("d", &[]);
    let base = home.scratch().join("copy-full");
    let src = base.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), vec![1u8; 10_000]).unwrap();
    std::fs::write(src.join("big"), vec![2u8; 3 << 20]).unwrap();
    std::fs::write(src.join("c"), vec![3u8; 10_000]).unwrap();
    let sources: Vec<String> = ["a", "big", "c"]
        .iter()
        .map(|n| src.join(n).display().to_string())
        .collect();
    let small = Tmpfs::mount(&base.join("small"), "1m");
    // Into the session.
    let mut args = vec!["copy".to_string()];
    args.extend(sources.iter().cloned());
    args.push(format!("d:{}", small.0.display()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = home.run(&args).code_is(1);
    let line = format!(
        "session d: {}: No space left on device",
        small.0.join("big").display()
    );
    assert_eq!(out.err_lines(), [format!("tether: {line}")], "{out}");
    assert_eq!(names(&small.0), ["a", "c"]);
    assert_eq!(std::fs::read(small.0.join("c")).unwrap(), vec![3u8; 10_000]);
    // Out of it.
    for n in ["a", "c"] {
        std::fs::remove_file(small.0.join(n)).unwrap();
    }
    let mut args = vec!["copy".to_string()];
    args.extend(sources.iter().map(|s| format!("d:{s}")));
    args.push(small.0.display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = home.run(&args).code_is(1);
    let line = line.replace("session d:", "this computer:");
    assert_eq!(out.err_lines(), [format!("tether: {line}")], "{out}");
    assert_eq!(names(&small.0), ["a", "c"]);
}

/// A destination directory that is not there: one line, naming the side and the path, and
/// nothing written. One source into a missing directory, several sources into a missing
/// directory, and a path ending in a slash; pushing and pulling.
#[test]
fn a_missing_destination_directory_is_named() {
    let home = Home::new();
    home.new_session("m", &[]);
    let base = home.scratch().join("copy-missing");
    std::fs::create_dir_all(&base).unwrap();
    let (a, b) = (base.join("a"), base.join("b"));
    std::fs::write(&a, "a").unwrap();
    std::fs::write(&b, "b").unwrap();
    let missing = base.join("missing");
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let cases: [(Vec<String>, PathBuf); 3] = [
        (vec![a.into()], missing.join("x")),
        (vec![a.into(), b.into()], missing.clone()),
        (
            vec![a.into()],
            PathBuf::from(format!("{}/", missing.display())),
        ),
    ];
    for (sources, dest) in cases {
        let mut push = vec!["copy".to_string()];
        push.extend(sources.iter().cloned());
        push.push(format!("m:{}", dest.display()));
        let mut pull = vec!["copy".to_string()];
        pull.extend(sources.iter().map(|s| format!("m:{s}")));
        pull.push(dest.display().to_string());
        for (args, side) in [(push, "session m"), (pull, "this computer")] {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = home.run(&args).code_is(1);
            let want = format!("{side}: {}: No such file or directory", dest.display());
            out.clear_error(&want, 1);
        }
    }
    assert!(!missing.exists());
    assert!(names(&base).iter().all(|n| !n.contains(".tether-")));
}

/// Things already in the destination's way, left there by a careless user: a directory under
/// a file's partial name does not stop the file (it goes under a unique name, and the
/// directory is left alone); a directory under the file's own name is that file's problem,
/// named with the side; a tree copied over an existing one of the same shape replaces its
/// files. Pushing and pulling, through the real binary.
#[test]
fn what_is_in_the_way_of_a_copy_is_named_or_stepped_around() {
    let home = Home::new();
    home.new_session("w", &[]);
    let base = home.scratch().join("copy-in-the-way");
    let src = base.join("src");
    std::fs::create_dir_all(src.join("t/sub")).unwrap();
    std::fs::write(src.join("t/f"), "new f").unwrap();
    std::fs::write(src.join("t/sub/g"), "new g").unwrap();
    let s = src.join("t");
    let s = s.to_str().unwrap();
    for (n, pull) in [(0, false), (1, true)] {
        let dst = base.join(format!("dst{n}"));
        std::fs::create_dir_all(dst.join("t/.f.tether-part")).unwrap();
        std::fs::create_dir_all(dst.join("t/sub/g")).unwrap();
        std::fs::write(dst.join("t/f"), "old f").unwrap();
        let d = dst.to_str().unwrap();
        let (from, to, side) = match pull {
            false => (s.to_string(), format!("w:{d}"), "session w"),
            true => (format!("w:{s}"), d.to_string(), "this computer"),
        };
        let out = home.run(&["copy", "-r", &from, &to]).code_is(1);
        let g = dst.join("t/sub/g");
        out.clear_error(&format!("{side}: {}: is a directory", g.display()), 1);
        assert_eq!(std::fs::read(dst.join("t/f")).unwrap(), b"new f");
        assert!(dst.join("t/.f.tether-part").is_dir(), "left alone");
        assert!(g.is_dir(), "left alone");
        let left: Vec<String> = names(&dst.join("t"))
            .into_iter()
            .chain(names(&dst.join("t/sub")))
            .filter(|n| n.contains(".tether-") && n != ".f.tether-part")
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}
