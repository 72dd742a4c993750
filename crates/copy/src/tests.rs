use super::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// A scratch directory of one test, removed when the test is done with it (passed or not).
pub(crate) struct Temp(std::path::PathBuf);

impl std::ops::Deref for Temp {
    type Target = std::path::PathBuf;
    fn deref(&self) -> &std::path::PathBuf {
        &self.0
    }
}

impl AsRef<Path> for Temp {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        // Read-only modes some tests set would stop the removal.
        let _ = std::process::Command::new("chmod")
            .args(["-R", "u+rwx"])
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn temp() -> Temp {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "tether-copy-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Temp(d)
}

pub(crate) fn stream(sources: &[&Path], recursive: bool) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let opts = SendOptions {
        recursive,
        label: "here",
        total: true,
        progress: None,
    };
    let sent = send(sources, opts, None, &mut out).unwrap();
    (out, sent.problems)
}

pub(crate) fn receive(
    bytes: &[u8],
    dest: &Path,
    sources: usize,
    preserve: bool,
) -> Result<Received, CopyError> {
    Receiver {
        dest: dest.to_path_buf(),
        sources,
        preserve,
        label: "there".into(),
    }
    .run(&mut &bytes[..], None)
}

#[test]
fn a_tree_arrives_whole_with_modes_times_and_links() {
    let src = temp();
    let tree = src.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("a.txt"), b"alpha").unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(tree.join("sub/big.bin"), &big).unwrap();
    std::fs::set_permissions(tree.join("a.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("a.txt", tree.join("link")).unwrap();
    let (bytes, problems) = stream(&[&tree], true);
    assert_eq!(problems, 0);
    let dst = temp();
    let got = receive(&bytes, &dst, 1, true).unwrap();
    assert_eq!((got.files, got.dirs, got.links), (2, 2, 1));
    assert_eq!(std::fs::read(dst.join("tree/a.txt")).unwrap(), b"alpha");
    assert_eq!(std::fs::read(dst.join("tree/sub/big.bin")).unwrap(), big);
    let m = std::fs::metadata(dst.join("tree/a.txt")).unwrap();
    assert_eq!(m.mode() & 0o777, 0o640);
    let src_m = std::fs::metadata(tree.join("a.txt")).unwrap();
    assert_eq!(m.mtime(), src_m.mtime());
    assert_eq!(
        std::fs::read_link(dst.join("tree/link")).unwrap(),
        Path::new("a.txt")
    );
    // Nothing temporary is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dst.join("tree"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tether-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn one_source_takes_the_destinations_name_and_many_need_a_directory() {
    let src = temp();
    std::fs::write(src.join("one"), b"1").unwrap();
    std::fs::write(src.join("two"), b"2").unwrap();
    let dst = temp();
    let (bytes, _) = stream(&[&src.join("one")], false);
    receive(&bytes, &dst.join("renamed"), 1, false).unwrap();
    assert_eq!(std::fs::read(dst.join("renamed")).unwrap(), b"1");
    let (bytes, _) = stream(&[&src.join("one"), &src.join("two")], false);
    let err = receive(&bytes, &dst.join("nodir"), 2, false).unwrap_err();
    let want = format!("{}: No such file or directory", dst.join("nodir").display());
    assert_eq!(err.to_string(), want);
    let err = receive(&bytes, &dst.join("renamed"), 2, false).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("renamed: not a directory (needed for 2 sources)"),
        "{err}"
    );
    // A destination with a trailing slash is meant as a directory, even for one source.
    let (one, _) = stream(&[&src.join("one")], false);
    let slash = format!("{}/", dst.join("nodir").display());
    let err = receive(&one, Path::new(&slash), 1, false).unwrap_err();
    assert!(
        err.to_string().ends_with("No such file or directory"),
        "{err}"
    );
    receive(&bytes, &dst, 2, false).unwrap();
    assert_eq!(std::fs::read(dst.join("two")).unwrap(), b"2");
}

#[test]
fn missing_sources_and_directories_without_r_are_reported_and_the_rest_copied() {
    let src = temp();
    std::fs::write(src.join("here"), b"h").unwrap();
    std::fs::create_dir(src.join("dir")).unwrap();
    let (bytes, problems) = stream(
        &[&src.join("missing"), &src.join("dir"), &src.join("here")],
        false,
    );
    assert_eq!(problems, 2);
    let dst = temp();
    let got = receive(&bytes, &dst, 3, false).unwrap();
    assert_eq!(got.files, 1);
    assert_eq!(got.problems.len(), 2);
    assert!(got.problems[0].starts_with("here: "), "{:?}", got.problems);
    assert!(
        got.problems[0].ends_with("missing: No such file or directory"),
        "{:?}",
        got.problems
    );
    assert!(got.problems[1].contains("use -r"), "{:?}", got.problems);
}

#[test]
fn a_cut_stream_leaves_no_partial_file_in_place() {
    let src = temp();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 199) as u8).collect();
    std::fs::write(src.join("f"), &data).unwrap();
    let (bytes, _) = stream(&[&src.join("f")], false);
    let dst = temp();
    // Cut inside the header, inside the data, and a few bytes before the file's end: nothing
    // is in place; what arrived is kept only under the partial name, and is the file's start.
    for cut in [10, 5000, bytes.len() - 10] {
        let err = receive(&bytes[..cut], &dst, 1, false).unwrap_err();
        assert!(err.to_string().contains("ended"), "{err}");
        let names: Vec<String> = std::fs::read_dir(&dst)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.is_empty() || names == [".f.tether-part"],
            "cut at {cut}: {names:?}"
        );
        if let Ok(part) = std::fs::read(dst.join(".f.tether-part")) {
            assert!(!part.is_empty() && data.starts_with(&part), "cut at {cut}");
        }
    }
    assert!(!dst.join("f").exists());
}

#[test]
fn a_hostile_stream_cannot_write_outside_the_destination() {
    let dst = temp();
    for path in ["../escape", "/etc/x", "a/../../b", "", "a//b", "./a"] {
        let mut bytes = tether_proto::encode(&Frame::File {
            path: path.into(),
            len: 1,
            mode: 0o644,
            mtime: 0,
            from: 0,
        })
        .unwrap();
        bytes.extend(tether_proto::encode(&Frame::Data(vec![1])).unwrap());
        bytes.extend(tether_proto::encode(&Frame::End).unwrap());
        let err = receive(&bytes, &dst, 1, false).unwrap_err();
        assert!(err.to_string().contains("unsafe path"), "{path}: {err}");
    }
    assert!(!dst.parent().unwrap().join("escape").exists());
    let junk = [0u8, 0, 0, 3, 0xff, 0xff, 0xff];
    assert!(receive(&junk, &dst, 1, false).is_err());
}

#[test]
fn progress_is_told_the_total_first_and_every_byte() {
    use std::cell::Cell;
    let src = temp();
    std::fs::write(src.join("x"), vec![1u8; 150_000]).unwrap();
    std::fs::write(src.join("y"), vec![2u8; 10]).unwrap();
    let sent = Cell::new(0u64);
    let count = |n: u64| sent.set(sent.get() + n);
    let mut bytes = Vec::new();
    let opts = SendOptions {
        recursive: true,
        label: "here",
        total: true,
        progress: Some(&count),
    };
    send(&[&src], opts, None, &mut bytes).unwrap();
    assert_eq!(sent.get(), 150_010);
    struct Seen(Cell<u64>, Cell<u64>);
    impl Progress for Seen {
        fn total(&self, b: u64) {
            assert_eq!(self.1.get(), 0, "the total comes first");
            self.0.set(b);
        }
        fn wrote(&self, b: u64) {
            self.1.set(self.1.get() + b);
        }
    }
    let seen = Seen(Cell::new(0), Cell::new(0));
    let dst = temp();
    let r = Receiver {
        dest: dst.clone(),
        sources: 1,
        preserve: false,
        label: "there".into(),
    };
    r.run_showing(&mut &bytes[..], None, &seen).unwrap();
    assert_eq!((seen.0.get(), seen.1.get()), (150_010, 150_010));
}

#[test]
fn a_sparse_file_arrives_with_its_holes() {
    use std::io::{Seek, Write};
    let src = temp();
    let path = src.join("sparse");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(b"head").unwrap();
    f.seek(std::io::SeekFrom::Start(64 << 20)).unwrap();
    f.write_all(b"middle").unwrap();
    f.set_len(200 << 20).unwrap();
    drop(f);
    let (bytes, problems) = stream(&[&path], false);
    assert_eq!(problems, 0);
    assert!(
        bytes.len() < 1 << 20,
        "holes travel as holes: {} bytes",
        bytes.len()
    );
    let dst = temp();
    receive(&bytes, &dst, 1, false).unwrap();
    let got = dst.join("sparse");
    let m = std::fs::metadata(&got).unwrap();
    assert_eq!(m.len(), 200 << 20);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "written sparse: {} blocks",
        m.blocks()
    );
    let data = std::fs::read(&got).unwrap();
    assert_eq!(&data[..4], b"head");
    assert_eq!(&data[64 << 20..(64 << 20) + 6], b"middle");
    assert!(data[4..64 << 20].iter().all(|b| *b == 0));
}

#[test]
fn data_frames_written_from_the_buffer_are_what_encode_writes_and_read_back_whole() {
    for len in [0usize, 1, 5, 127, 128, 65_536, 200_000] {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut direct = Vec::new();
        write_data(&mut direct, &data).unwrap();
        let encoded = tether_proto::encode(&Frame::Data(data.clone())).unwrap();
        assert_eq!(direct, encoded, "{len} bytes");
        let cut = CopyError::Closed;
        let back: Frame = read_frame(&mut &direct[..], cut).unwrap();
        assert_eq!(back, Frame::Data(data));
        // Cut anywhere: an error, never a short frame.
        for at in [direct.len() / 2, direct.len().saturating_sub(1)] {
            if at > 0 && at < direct.len() {
                assert!(read_frame::<Frame>(&mut &direct[..at], cut).is_err());
            }
        }
    }
    // Other frames are decoded as before.
    let end = tether_proto::encode(&Frame::End).unwrap();
    let back: Frame = read_frame(&mut &end[..], CopyError::Closed).unwrap();
    assert_eq!(back, Frame::End);
}

#[test]
fn every_mode_arrives_whether_or_not_the_file_was_made_with_it() {
    // The receiver makes a file with its permissions and changes them at the end only when
    // they differ: read-only, setuid, private and ordinary modes must all come out exact.
    let src = temp();
    let modes = [0o600, 0o644, 0o755, 0o444, 0o4755, 0o2750, 0o1777, 0o400];
    for (i, mode) in modes.iter().enumerate() {
        let p = src.join(format!("m{i}"));
        std::fs::write(&p, vec![b'x'; i * 100]).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    let paths: Vec<std::path::PathBuf> = (0..modes.len())
        .map(|i| src.join(format!("m{i}")))
        .collect();
    let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    let (bytes, problems) = stream(&refs, false);
    assert_eq!(problems, 0);
    let dst = temp();
    let got = receive(&bytes, &dst, modes.len(), true).unwrap();
    assert!(got.problems.is_empty(), "{:?}", got.problems);
    for (i, mode) in modes.iter().enumerate() {
        let m = std::fs::metadata(dst.join(format!("m{i}"))).unwrap();
        assert_eq!(m.mode() & 0o7777, *mode, "m{i}");
        assert_eq!(m.len(), i as u64 * 100, "m{i}");
    }
    // Again over what is there (each file replaced whole): still exact.
    let got = receive(&bytes, &dst, modes.len(), true).unwrap();
    assert!(got.problems.is_empty(), "{:?}", got.problems);
    for (i, mode) in modes.iter().enumerate() {
        let m = std::fs::metadata(dst.join(format!("m{i}"))).unwrap();
        assert_eq!(m.mode() & 0o7777, *mode, "m{i}");
    }
}

#[test]
fn a_stale_partial_file_longer_than_the_new_one_is_cut_to_the_new_length() {
    // An earlier copy left a long partial file; this copy's file is shorter and its start
    // differs: the partial is reused, and must end at the new length, not the old.
    let src = temp();
    let file = src.join("f");
    std::fs::write(&file, b"short and new").unwrap();
    let dst = temp();
    let part = dst.join(".f.tether-part");
    std::fs::write(&part, vec![b'o'; 100_000]).unwrap();
    std::fs::set_permissions(&part, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (bytes, _) = stream(&[&file], false);
    receive(&bytes, &dst, 1, false).unwrap();
    assert_eq!(std::fs::read(dst.join("f")).unwrap(), b"short and new");
    assert!(!part.exists());
}

#[test]
fn a_file_over_a_directory_is_a_problem_in_made_and_in_existing_directories() {
    // In a directory the copy made, the rename finds the clash; in one that was there, the
    // check before writing does. Either way: the same problem, nothing left behind.
    let frames = |dir: bool| {
        let mut f = Vec::new();
        if dir {
            f.push(Frame::Dir {
                path: "t".into(),
                mode: 0o755,
                mtime: 0,
            });
        }
        f.push(Frame::Dir {
            path: "t/x".into(),
            mode: 0o755,
            mtime: 0,
        });
        f.push(Frame::File {
            path: "t/x".into(),
            len: 3,
            mode: 0o644,
            mtime: 0,
            from: 0,
        });
        f.push(Frame::Data(b"abc".to_vec()));
        f.push(Frame::End);
        let mut bytes = Vec::new();
        for x in &f {
            bytes.extend(tether_proto::encode(x).unwrap());
        }
        bytes
    };
    for made in [true, false] {
        let dst = temp();
        let into = dst.join("in");
        std::fs::create_dir(&into).unwrap();
        if !made {
            std::fs::create_dir(into.join("t")).unwrap();
        }
        let got = receive(&frames(made), &into, 1, false).unwrap();
        assert_eq!(got.problems.len(), 1, "{made}: {:?}", got.problems);
        assert!(
            got.problems[0].contains("is a directory"),
            "{:?}",
            got.problems
        );
        assert!(into.join("t/x").is_dir());
        let left: Vec<_> = std::fs::read_dir(into.join("t"))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(left.len(), 1, "only the directory: {left:?}");
    }
}

#[test]
fn sibling_directories_are_announced_before_what_they_hold() {
    // The order that keeps ext4 from scanning freed inodes per new file (send.rs): every
    // subdirectory's `Dir` comes before the first entry inside it or its siblings.
    let src = temp();
    let t = src.join("t");
    for d in ["a", "b", "a/c"] {
        std::fs::create_dir_all(t.join(d)).unwrap();
    }
    for f in ["a/1", "b/2", "a/c/3", "top"] {
        std::fs::write(t.join(f), f).unwrap();
    }
    let (bytes, problems) = stream(&[&t], true);
    assert_eq!(problems, 0);
    let mut input = &bytes[..];
    let mut order = Vec::new();
    loop {
        match read_frame::<Frame>(&mut input, CopyError::Stream).unwrap() {
            Frame::Dir { path, .. } => order.push(format!("D {path}")),
            Frame::File { path, .. } => order.push(format!("F {path}")),
            Frame::End => break,
            _ => {}
        }
    }
    let at = |x: &str| order.iter().position(|o| o == x).unwrap();
    assert!(
        at("D t/a") < at("F t/top") && at("D t/b") < at("F t/a/1"),
        "{order:?}"
    );
    assert!(at("D t/a/c") < at("F t/a/1"), "{order:?}");
    assert!(at("D t/b") < at("D t/a/c"), "{order:?}");
    let dst = temp();
    let got = receive(&bytes, &dst, 1, false).unwrap();
    assert_eq!((got.files, got.dirs), (4, 4));
    assert_eq!(std::fs::read(dst.join("t/a/c/3")).unwrap(), b"a/c/3");
}

#[test]
fn a_partial_name_taken_by_something_else_falls_back_to_a_unique_name() {
    // A directory where the partial file would go (or another user's file that the kernel
    // will not let us open): the file is written under a unique name and arrives anyway.
    let src = temp();
    let file = src.join("f");
    std::fs::write(&file, b"data").unwrap();
    let dst = temp();
    std::fs::create_dir(dst.join(".f.tether-part")).unwrap();
    let (bytes, _) = stream(&[&file], false);
    let got = receive(&bytes, &dst, 1, false).unwrap();
    assert!(got.problems.is_empty(), "{:?}", got.problems);
    assert_eq!(std::fs::read(dst.join("f")).unwrap(), b"data");
    assert!(dst.join(".f.tether-part").is_dir(), "left alone");
    // A destination that cannot be written at all still says so.
    let ro = dst.join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o500)).unwrap();
    let got = receive(&bytes, &ro, 1, false).unwrap();
    // (root writes anywhere: then the copy simply succeeds.)
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        assert_eq!(got.problems.len(), 1, "{:?}", got.problems);
        assert!(
            got.problems[0].contains("ermission denied"),
            "{:?}",
            got.problems
        );
    } else {
        assert!(got.problems.is_empty(), "{:?}", got.problems);
    }
}

#[test]
fn many_small_files_arrive_beside_sparse_and_empty_ones() {
    // Files of one frame in several directories, a small file whose first frame is a hole,
    // and an empty one: all arrive exact, and nothing temporary is left.
    use std::io::{Seek, Write};
    let src = temp();
    let t = src.join("t");
    for d in 0..6 {
        std::fs::create_dir_all(t.join(format!("d{d}"))).unwrap();
        for i in 0..50 {
            let data = format!("{d}/{i}").repeat(i + 1);
            std::fs::write(t.join(format!("d{d}/f{i}")), data).unwrap();
        }
    }
    let mut f = std::fs::File::create(t.join("d0/holey")).unwrap();
    f.seek(std::io::SeekFrom::Start(32 << 10)).unwrap();
    f.write_all(b"after the hole").unwrap();
    drop(f);
    std::fs::write(t.join("d1/empty"), b"").unwrap();
    let (bytes, problems) = stream(&[&t], true);
    assert_eq!(problems, 0);
    let dst = temp();
    let got = receive(&bytes, &dst, 1, false).unwrap();
    assert!(got.problems.is_empty(), "{:?}", got.problems);
    assert_eq!((got.files, got.dirs), (6 * 50 + 2, 7));
    for d in 0..6 {
        for i in 0..50 {
            let want = format!("{d}/{i}").repeat(i + 1);
            let have = std::fs::read(dst.join(format!("t/d{d}/f{i}"))).unwrap();
            assert_eq!(have, want.as_bytes(), "d{d}/f{i}");
        }
    }
    let holey = std::fs::read(dst.join("t/d0/holey")).unwrap();
    assert_eq!(holey.len(), (32 << 10) + 14);
    assert!(holey[..32 << 10].iter().all(|b| *b == 0));
    assert_eq!(&holey[32 << 10..], b"after the hole");
    assert_eq!(std::fs::read(dst.join("t/d1/empty")).unwrap(), b"");
    for d in 0..6 {
        for e in std::fs::read_dir(dst.join(format!("t/d{d}")))
            .unwrap()
            .flatten()
        {
            let n = e.file_name().to_string_lossy().into_owned();
            assert!(!n.contains(".tether-"), "left behind: d{d}/{n}");
        }
    }
}
