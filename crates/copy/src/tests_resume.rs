//! Resuming (issue 20): a copy that was cut short, run again, sends only what the receiver's
//! partial file lacks, and only when that partial file is the source's start.

use super::tests::{receive, stream, temp};
use super::*;
use std::io::{BufReader, BufWriter};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Both sides at once, as the CLI joins them: the stream one way, the answers the other.
fn two_way(sources: &[&Path], dest: &Path, recursive: bool) -> (Sent, Received) {
    let (stream_tx, stream_rx) = UnixStream::pair().unwrap();
    let (reply_tx, reply_rx) = UnixStream::pair().unwrap();
    let receiver = Receiver {
        dest: dest.to_path_buf(),
        sources: sources.len(),
        preserve: false,
        label: "there".into(),
    };
    let recv = std::thread::spawn(move || {
        let mut input = BufReader::new(stream_rx);
        let mut replies = reply_tx;
        receiver.run(&mut input, Some(&mut replies)).unwrap()
    });
    let opts = SendOptions {
        recursive,
        label: "here",
        total: true,
        progress: None,
    };
    let mut out = BufWriter::new(stream_tx);
    let mut replies = reply_rx;
    let sent = send(sources, opts, Some(&mut replies), &mut out).unwrap();
    drop(out);
    (sent, recv.join().unwrap())
}

/// A file of `n` bytes that differ from place to place.
fn varied(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

/// Cuts a one-way stream of `file` at `at` bytes into `dest`, leaving a partial file.
fn cut_copy(file: &Path, dest: &Path, at: usize) -> u64 {
    let (bytes, _) = stream(&[file], false);
    assert!(receive(&bytes[..at], dest, 1, false).is_err());
    let name = file.file_name().unwrap().to_string_lossy();
    std::fs::metadata(dest.join(format!(".{name}.tether-part")))
        .unwrap()
        .len()
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tether-"))
        .collect()
}

#[test]
fn a_rerun_sends_only_what_the_partial_file_lacks() {
    let src = temp();
    let data = varied(3 << 20, 1);
    let file = src.join("big");
    std::fs::write(&file, &data).unwrap();
    let dst = temp();
    let have = cut_copy(&file, &dst, 2 << 20);
    assert!(have > 1 << 20, "{have}");
    let (sent, got) = two_way(&[&file], &dst, false);
    assert_eq!((sent.resumed, got.resumed), (have, have));
    assert_eq!((sent.bytes, got.bytes), (3 << 20, 3 << 20));
    assert_eq!(sent.received.as_ref(), Some(&got));
    assert_eq!(std::fs::read(dst.join("big")).unwrap(), data);
    assert!(leftovers(&dst).is_empty(), "{:?}", leftovers(&dst));
    // Nothing to resume the next time: sent whole again.
    let (sent, _) = two_way(&[&file], &dst, false);
    assert_eq!(sent.resumed, 0);
}

#[test]
fn a_source_changed_in_the_part_already_copied_is_sent_whole() {
    let src = temp();
    let file = src.join("f");
    std::fs::write(&file, varied(1 << 20, 2)).unwrap();
    let dst = temp();
    assert!(cut_copy(&file, &dst, 600_000) > 0);
    let changed = varied(1 << 20, 3);
    std::fs::write(&file, &changed).unwrap();
    let (sent, got) = two_way(&[&file], &dst, false);
    assert_eq!((sent.resumed, got.resumed), (0, 0));
    assert!(got.problems.is_empty(), "{:?}", got.problems);
    assert_eq!(std::fs::read(dst.join("f")).unwrap(), changed);
    assert!(leftovers(&dst).is_empty());
}

#[test]
fn a_damaged_partial_file_is_never_completed() {
    let src = temp();
    let data = varied(1 << 20, 4);
    let file = src.join("f");
    std::fs::write(&file, &data).unwrap();
    let dst = temp();
    let part = dst.join(".f.tether-part");
    // Damaged before the rerun: its hash does not match the source's start, so it is sent
    // whole (the partial data is thrown away).
    assert!(cut_copy(&file, &dst, 700_000) > 100);
    let mut bytes = std::fs::read(&part).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&part, &bytes).unwrap();
    let (sent, got) = two_way(&[&file], &dst, false);
    assert_eq!((sent.resumed, got.problems.len()), (0, 0));
    assert_eq!(std::fs::read(dst.join("f")).unwrap(), data);
    // Damaged after the hashes matched (here: a sender whose sum disagrees): the file is not
    // renamed into place, its partial file is removed, and that is reported.
    std::fs::remove_file(dst.join("f")).unwrap();
    let have = cut_copy(&file, &dst, 700_000) as usize;
    let mut frames = Vec::new();
    let mut put = |f: &Frame| frames.extend(tether_proto::encode(f).unwrap());
    put(&Frame::Names {
        names: vec!["f".into()],
        recursive: false,
    });
    put(&Frame::File {
        path: "f".into(),
        len: data.len() as u64,
        mode: 0o644,
        mtime: 0,
        from: have as u64,
    });
    for c in data[have..].chunks(CHUNK) {
        put(&Frame::Data(c.to_vec()));
    }
    put(&Frame::Sum([7; 32]));
    put(&Frame::End);
    let mut answers = Vec::new();
    let got = Receiver {
        dest: dst.clone(),
        sources: 1,
        preserve: false,
        label: "there".into(),
    }
    .run(&mut &frames[..], Some(&mut answers))
    .unwrap();
    assert_eq!(got.files, 0);
    assert!(
        got.problems.len() == 1
            && got.problems[0].starts_with("there: ")
            && got.problems[0].contains("does not match the source"),
        "{:?}",
        got.problems
    );
    assert!(!dst.join("f").exists(), "a damaged file was put in place");
    assert!(leftovers(&dst).is_empty(), "{:?}", leftovers(&dst));
}

#[test]
fn partial_files_under_a_tree_resume_and_stale_ones_go() {
    let src = temp();
    let tree = src.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    let big = varied(2 << 20, 5);
    std::fs::write(tree.join("sub/big"), &big).unwrap();
    std::fs::write(tree.join("small"), b"small").unwrap();
    // An earlier copy of this tree stopped in sub/big, and another one in a file that is no
    // longer among the sources.
    let dst = temp();
    std::fs::create_dir_all(dst.join("tree/sub")).unwrap();
    std::fs::write(dst.join("tree/sub/.big.tether-part"), &big[..1_000_000]).unwrap();
    std::fs::write(dst.join("tree/.gone.tether-part"), b"stale").unwrap();
    let (sent, got) = two_way(&[&tree], &dst, true);
    assert_eq!(sent.resumed, 1_000_000);
    assert_eq!((got.files, got.resumed), (2, 1_000_000));
    assert_eq!(std::fs::read(dst.join("tree/sub/big")).unwrap(), big);
    assert!(leftovers(&dst.join("tree")).is_empty());
    assert!(leftovers(&dst.join("tree/sub")).is_empty());
}

#[test]
fn a_partial_name_that_is_not_ours_alone_is_left_alone() {
    let src = temp();
    let data = varied(300_000, 6);
    let file = src.join("f");
    std::fs::write(&file, &data).unwrap();
    let dst = temp();
    // A hard link where the partial file would be (in a shared directory, it could be
    // someone's file): never resumed, never written, never removed.
    let other = dst.join("other");
    std::fs::write(&other, &data[..1000]).unwrap();
    std::fs::hard_link(&other, dst.join(".f.tether-part")).unwrap();
    let (sent, got) = two_way(&[&file], &dst, false);
    assert_eq!((sent.resumed, got.files), (0, 1));
    assert_eq!(std::fs::read(dst.join("f")).unwrap(), data);
    assert_eq!(std::fs::read(&other).unwrap(), &data[..1000]);
    assert!(dst.join(".f.tether-part").exists());
}

#[test]
fn a_directory_that_cannot_be_made_is_reported_and_the_rest_copied() {
    let src = temp();
    let tree = src.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("a"), b"a").unwrap();
    std::fs::write(tree.join("sub/b"), vec![1u8; 200_000]).unwrap();
    std::fs::write(tree.join("z"), b"z").unwrap();
    let dst = temp();
    std::fs::create_dir_all(dst.join("tree")).unwrap();
    // A file where the directory goes.
    std::fs::write(dst.join("tree/sub"), b"in the way").unwrap();
    let (_, got) = two_way(&[&tree], &dst, true);
    assert_eq!(got.files, 2);
    assert_eq!(got.problems.len(), 1, "{:?}", got.problems);
    let sub = dst.join("tree/sub");
    assert_eq!(
        got.problems[0],
        format!("there: {}: File exists", sub.display())
    );
    assert_eq!(std::fs::read(dst.join("tree/a")).unwrap(), b"a");
    assert_eq!(std::fs::read(dst.join("tree/z")).unwrap(), b"z");
}
