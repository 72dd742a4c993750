//! `new --output-mode` is the user's explicit choice and wins over the configuration's
//! `output_buffering`, both ways (issue 17 point 8): `block` keeps every byte (the command
//! waits) even when the configuration drops, and `drop` drops even when it blocks.

use crate::common::*;

fn write_config(home: &Home, name: &str, text: &str) {
    let dir = home.path().join("configurations");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
}

/// Runs ~590 KB of numbered lines in session `name` while it is disconnected (the quota is
/// 64K), and returns what `receive` then gets. In drop mode the command never waits, so
/// `receive` comes after its end (else it would get the rest live); in block mode it waits
/// at the quota for `receive`.
fn disconnected_output(home: &Home, name: &str, dropping: bool) -> Out {
    let marker = home.scratch().join(format!("go-{name}"));
    let done = home.scratch().join(format!("done-{name}"));
    let script = format!(
        "while [ ! -e {m} ]; do sleep 0.02; done; seq 1 100000; echo end; touch {d}",
        m = marker.display(),
        d = done.display()
    );
    let mut cli = home.spawn(&["invoke", "-s", name, &script], name);
    wait_until(WAIT, "the command runs", || {
        home.session(name)["availability"] == "Busy"
    });
    home.run(&["disconnect", name]).success();
    cli.wait(WAIT);
    std::fs::write(&marker, "").unwrap();
    if dropping {
        wait_until(WAIT, "the command finishes", || done.exists());
    }
    home.run(&["receive", name]).success()
}

fn all_lines() -> String {
    let mut s: String = (1..=100_000).map(|i| format!("{i}\n")).collect();
    s.push_str("end\n");
    s
}

#[test]
fn an_explicit_block_wins_over_a_configuration_that_drops() {
    let home = Home::new();
    home.run(&["daemon", "start"]).success();
    write_config(
        &home,
        "dropping",
        "output_quota = \"64K\"\noutput_buffering = \"drop\"\n",
    );
    // The configuration alone drops.
    home.new_session("cfg", &["--configuration", "dropping"]);
    let out = disconnected_output(&home, "cfg", true);
    assert!(
        out.out().len() <= 64 * 1024 + 16,
        "{} bytes",
        out.out().len()
    );
    assert!(out.err().contains("were dropped"), "{out}");
    // `--output-mode block` keeps everything: the command waited for `receive`.
    home.new_session(
        "blk",
        &["--configuration", "dropping", "--output-mode", "block"],
    );
    let out = disconnected_output(&home, "blk", false);
    assert!(
        out.out() == all_lines(),
        "{} bytes received",
        out.out().len()
    );
    assert!(!out.err().contains("dropped"), "{out}");
}

#[test]
fn an_explicit_drop_wins_over_a_configuration_that_blocks() {
    let home = Home::new();
    home.run(&["daemon", "start"]).success();
    write_config(
        &home,
        "blocking",
        "output_quota = \"64K\"\noutput_buffering = \"block\"\n",
    );
    home.new_session(
        "drp",
        &["--configuration", "blocking", "--output-mode", "drop"],
    );
    let out = disconnected_output(&home, "drp", true);
    assert!(
        out.out().len() <= 64 * 1024 + 16,
        "{} bytes",
        out.out().len()
    );
    assert!(out.out().ends_with("99999\n100000\nend\n"), "{out}");
    assert!(out.err().contains("were dropped"), "{out}");
    // And without the flag, the configuration's block holds.
    home.new_session("cfg", &["--configuration", "blocking"]);
    let out = disconnected_output(&home, "cfg", false);
    assert!(
        out.out() == all_lines(),
        "{} bytes received",
        out.out().len()
    );
}
