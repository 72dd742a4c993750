//! Many computers at once (several ssh aliases of one test sshd): one warm connection each,
//! and the throttle honoured.

use crate::common::sshd::{ALIASES, setup};

#[test]
fn fan_out_uses_one_connection_per_computer_and_honours_the_throttle() {
    let (_sshd, _remote, client) = setup();
    let log = client.scratch().join("concurrency.log");
    let script = format!(
        "echo start >> {log}; sleep 1; echo end >> {log}; echo hi",
        log = log.display()
    );
    let targets = ALIASES.join(",");
    let out = client
        .run(&[
            "invoke",
            "--computer",
            &targets,
            "--throttle-limit",
            "3",
            &script,
        ])
        .success();
    let text = out.out();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    let mut expected: Vec<String> = ALIASES.iter().map(|a| format!("{a}: hi")).collect();
    expected.sort();
    assert_eq!(lines, expected, "{out}");

    let (mut running, mut most) = (0i32, 0i32);
    for l in std::fs::read_to_string(&log).unwrap().lines() {
        running += if l == "start" { 1 } else { -1 };
        most = most.max(running);
    }
    assert!(most <= 3, "{most} ran at once with --throttle-limit 3");
    assert!(most >= 2, "targets never overlapped (most at once: {most})");

    let st = client.run(&["daemon", "status", "--json"]).success().json();
    let mut computers: Vec<String> = st["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["computer"].as_str().unwrap().to_string())
        .collect();
    computers.sort();
    let mut want: Vec<String> = ALIASES.iter().map(|a| a.to_string()).collect();
    want.sort();
    assert_eq!(computers, want);
}
