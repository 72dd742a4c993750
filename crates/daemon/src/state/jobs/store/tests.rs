//! The job store's round trips: what is written down is read back, damaged files are not trusted.

use super::*;

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn store() -> (Scratch, Store) {
    let t = std::env::temp_dir().join(format!("tether-jobs-test-{}", uuid::Uuid::new_v4()));
    let s = Store {
        dir: t.join("jobs"),
    };
    (Scratch(t), s)
}

fn invocation() -> Run {
    Run::Invocation {
        instance_id: Some("0123abcd-4567-89ef-0123-456789abcdef".into()),
        remote: false,
        temporary: false,
    }
}

#[test]
fn a_job_reads_back_with_its_unreceived_output() {
    let (_t, s) = store();
    let mut c = Child::running(8, "web", "web", invocation());
    let job = Job {
        name: "Job7".into(),
        command: "make".into(),
        children: vec![Child::running(8, "web", "web", invocation())],
    };
    s.create(7, &job).unwrap();
    for (stream, data) in [(Stream::Stdout, &b"one\n"[..]), (Stream::Stderr, b"two\n")] {
        s.append(7, 8, stream, c.received, data).unwrap();
        c.received += data.len() as u64;
    }
    // `job receive` took the first chunk.
    c.taken = [4, 0];
    s.save_child(7, &c).unwrap();
    let loaded = s.load(1 << 20);
    assert_eq!(loaded.ids, vec![7]);
    let (id, job) = &loaded.jobs[0];
    assert_eq!((*id, job.name.as_str()), (7, "Job7"));
    let c = &job.children[0];
    assert_eq!(c.received, 8);
    assert_eq!(c.unread, 4);
    assert_eq!(c.out, VecDeque::from([(Stream::Stderr, b"two\n".to_vec())]));
    assert_eq!(c.state, ChildState::Running);
}

#[test]
fn a_cut_record_ends_the_file_and_later_output_follows_the_good_ones() {
    let (_t, s) = store();
    let job = Job {
        name: "Job1".into(),
        command: "x".into(),
        children: vec![Child::running(2, "a", "a", invocation())],
    };
    s.create(1, &job).unwrap();
    s.append(1, 2, Stream::Stdout, 0, b"abc").unwrap();
    let path = s.job_dir(1).join("2.out");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(&[0, 0, 0]).unwrap();
    let c = &s.load(1 << 20).jobs[0].1.children[0];
    assert_eq!((c.received, c.unread), (3, 3));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), (HEADER + 3) as u64);
}

#[test]
fn a_gap_is_kept_and_an_overlap_ends_the_file() {
    let (_t, s) = store();
    let job = Job {
        name: "Job1".into(),
        command: "x".into(),
        children: vec![Child::running(2, "a", "a", invocation())],
    };
    s.create(1, &job).unwrap();
    s.append(1, 2, Stream::Stdout, 0, b"abc").unwrap();
    // Bytes 3..10 were lost while the child was picked up again.
    s.append(1, 2, Stream::Stdout, 10, b"def").unwrap();
    // Damage: a record that goes back.
    s.append(1, 2, Stream::Stderr, 11, b"xyz").unwrap();
    let c = &s.load(1 << 20).jobs[0].1.children[0];
    assert_eq!((c.received, c.unread), (13, 6));
    assert!(
        c.reason.as_deref().unwrap_or("").contains("bad record"),
        "{:?}",
        c.reason
    );
}

#[test]
fn bad_records_are_left_out_and_never_panic() {
    let (_t, s) = store();
    let dir = s.job_dir(3);
    std::fs::create_dir_all(&dir).unwrap();
    for text in [
        "{",
        r#"{"id":4,"name":"J","command":"","children":[]}"#,
        r#"{"id":3,"name":"J","command":"","children":[5],"extra":1}"#,
    ] {
        std::fs::write(dir.join("job.json"), text).unwrap();
        assert!(s.load(1 << 20).jobs.is_empty(), "{text}");
    }
    // A child whose record names a path, not a session.
    std::fs::write(
        dir.join("job.json"),
        r#"{"id":3,"name":"J","command":"","children":[5]}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("5.json"),
        r#"{"id":5,"location":"x","session":"../x","state":"Running","exit_code":null,
           "reason":null,"run":{"kind":"invocation","instance_id":null,"remote":false,
           "temporary":false},"taken":[0,0]}"#,
    )
    .unwrap();
    let loaded = s.load(1 << 20);
    let c = &loaded.jobs[0].1.children[0];
    assert_eq!(c.state, ChildState::Failed);
    // A directory without job.json is a job that was never made.
    std::fs::create_dir_all(s.job_dir(9)).unwrap();
    let loaded = s.load(1 << 20);
    assert!(loaded.ids.contains(&9));
    assert!(!s.job_dir(9).exists());
}
