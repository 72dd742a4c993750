//! Operations (issue 8): systemd units (`daemon install`), the foreground daemon they run, log
//! rotation while the daemon runs, and `tether doctor` here and on another computer.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

fn mode(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{p:?}: {e}"))
        .mode()
        & 0o7777
}

fn canonical_bin() -> PathBuf {
    fs::canonicalize(tether_bin()).expect("the tether binary exists")
}

/// `systemd-analyze verify` must accept the unit without a single warning (it only warns
/// about unknown or misspelt settings, with exit status 0).
fn verify_unit(unit: &Path, user: bool, scratch: &Path) {
    let runtime = scratch.join("runtime");
    fs::create_dir_all(&runtime).unwrap();
    fs::set_permissions(&runtime, fs::Permissions::from_mode(0o700)).unwrap();
    let mut c = Command::new("systemd-analyze");
    if user {
        c.arg("--user");
    }
    let out = c
        .args(["verify", "--man=no"])
        .arg(unit)
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .expect("run systemd-analyze");
    let err = String::from_utf8_lossy(&out.stderr);
    let name = unit.file_name().unwrap().to_string_lossy();
    assert!(
        out.status.success() && !err.contains(name.as_ref()),
        "systemd-analyze verify {unit:?} complained ({}):\n{err}\n{}",
        out.status,
        fs::read_to_string(unit).unwrap_or_default()
    );
}

fn has_program(p: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|d| d.join(p).is_file())
}

#[test]
fn install_writes_units_that_name_this_binary() {
    let home = Home::new();
    let dir = home.scratch().join("units");
    let out = home
        .run(&[
            "daemon",
            "install",
            "--unit-dir",
            dir.to_str().unwrap(),
            "--no-enable",
        ])
        .success();
    let unit = dir.join("tether.service");
    assert!(out.out().contains(unit.to_str().unwrap()), "{out}");
    let text = fs::read_to_string(&unit).unwrap();
    let exec = format!(
        "\nExecStart={} daemon start --foreground\n",
        canonical_bin().display()
    );
    assert!(text.contains(&exec), "no {exec:?} in:\n{text}");
    // The service must use the home the CLI uses, or it would be a second daemon.
    let env = format!("\nEnvironment=TETHER_HOME={}\n", home.path().display());
    assert!(text.contains(&env), "no {env:?} in:\n{text}");
    for line in ["Type=simple", "KillMode=process", "WantedBy=default.target"] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    assert!(!text.contains('@'), "a placeholder is left:\n{text}");

    home.run(&[
        "daemon",
        "install",
        "--system",
        "--unit-dir",
        dir.to_str().unwrap(),
        "--no-enable",
    ])
    .success();
    let system = dir.join("tether-system.service");
    let stext = fs::read_to_string(&system).unwrap();
    assert!(
        stext.contains("daemon start --system --foreground")
            && stext.contains("WantedBy=multi-user.target")
            && !stext.contains("TETHER_HOME"),
        "{stext}"
    );
    if has_program("systemd-analyze") {
        verify_unit(&unit, true, &home.scratch());
        verify_unit(&system, false, &home.scratch());
    } else {
        eprintln!("systemd-analyze not installed (package systemd): checked the key lines only");
    }
    assert_eq!(
        home.daemon_pid(),
        None,
        "install --no-enable starts nothing"
    );
}

/// Without systemctl (a container, a non-systemd system) enabling cannot work: one clear line
/// and a non-zero status, and the unit is still written.
#[test]
fn install_without_systemd_says_so_in_one_line() {
    let home = Home::new();
    let dir = home.scratch().join("units");
    let empty = home.scratch().join("empty-path");
    fs::create_dir_all(&empty).unwrap();
    let out = home
        .run_env(
            &[("PATH", empty.to_str().unwrap())],
            &["daemon", "install", "--unit-dir", dir.to_str().unwrap()],
        )
        .failure();
    assert!(dir.join("tether.service").is_file());
    let lines = out.err_lines();
    assert_eq!(lines.len(), 1, "one line expected:\n{out}");
    assert!(lines[0].contains("systemctl"), "{out}");
}

#[test]
fn foreground_daemon_serves_then_hands_over_and_exits_on_sigterm() {
    let home = Home::new();
    let mut first = home.spawn(&["daemon", "start", "--foreground"], "fg1");
    wait_until(WAIT, "the foreground daemon writes its pid", || {
        home.daemon_pid() == Some(first.pid())
    });
    home.run(&["invoke", "echo fg-ok"])
        .success()
        .stdout_is("fg-ok\n");

    // A second one (systemd starting the unit while an on-demand daemon runs) waits.
    let mut second = home.spawn(&["daemon", "start", "--foreground"], "fg2");
    wait_until(WAIT, "the second daemon says it waits", || {
        fs::read_to_string(&second.stderr_path).is_ok_and(|e| e.contains("waiting"))
    });
    assert!(!second.finished(), "the standby must not exit");

    assert!(send_signal(first.pid(), "TERM"));
    let out = first.wait(WAIT);
    assert!(out.status().success(), "SIGTERM is a clean stop:\n{out}");
    wait_until(WAIT, "the standby takes over", || {
        home.daemon_pid() == Some(second.pid())
    });
    home.run(&["invoke", "echo fg-two"])
        .success()
        .stdout_is("fg-two\n");
    assert!(send_signal(second.pid(), "TERM"));
    assert!(second.wait(WAIT).status().success());
    assert!(!home.socket().exists(), "the socket goes with the daemon");
}

#[test]
fn log_rotates_while_the_daemon_runs() {
    let home = Home::new()
        .env("TETHER_LOG", "debug")
        .env("TETHER_LOG_MAX_BYTES", "2K");
    home.run(&["daemon", "start"]).success();
    let pid = home.running_daemon_pid();
    let log = home.path().join("daemon.log");
    let old = |n: u32| home.path().join(format!("daemon.log.{n}"));
    // Each request writes a debug line; keep asking until three old files exist.
    let mut requests = 0;
    wait_until(Duration::from_secs(60), "daemon.log.3 exists", || {
        home.run(&["daemon", "status"]).success();
        requests += 1;
        old(3).exists()
    });
    for _ in 0..40 {
        home.run(&["daemon", "status"]).success();
    }
    assert_eq!(
        home.daemon_pid(),
        Some(pid),
        "the same daemon rotated its log"
    );
    assert!(!old(4).exists(), "only three old logs are kept");
    for p in [log.clone(), old(1), old(2), old(3)] {
        assert_eq!(mode(&p), 0o600, "{p:?}");
        let len = fs::metadata(&p).unwrap().len();
        assert!(
            len <= 2048 + 512,
            "{p:?} grew to {len} bytes past the 2K limit"
        );
    }
    let recent = fs::read_to_string(&log).unwrap();
    assert!(
        recent.contains("request DaemonStatus"),
        "the live log gets new lines after rotating ({requests} requests):\n{recent}"
    );
}

#[test]
fn doctor_is_happy_with_a_healthy_home() {
    let home = Home::new();
    home.run(&["daemon", "start"]).success();
    let pid = home.running_daemon_pid();
    // A session with a finished background job: its files must be private too, while the job
    // itself runs with the session's umask.
    home.new_session("ops", &[]);
    home.invoke("ops", "umask 0022").success();
    let job = home
        .run(&["job", "start", "-s", "ops", "umask", "--json"])
        .success()
        .json();
    let id = job[0]["id"].as_u64().expect("job id").to_string();
    home.run(&["job", "wait", &id, "--timeout", "20s"])
        .success();
    let out = home.run(&["job", "receive", &id]).success();
    assert_eq!(out.out().trim(), "0022", "the job's umask:\n{out}");
    home.invoke("ops", "umask").success().stdout_is("0022\n");
    let out = home.run(&["doctor"]).success();
    assert!(!out.out().contains("FAIL"), "{out}");
    let daemon = format!(
        "ok    daemon: running: pid {pid}, version {}",
        env!("CARGO_PKG_VERSION")
    );
    assert!(out.out().contains(&daemon), "no {daemon:?}:\n{out}");
    for check in ["home", "permissions", "socket", "disk", "log"] {
        assert!(
            out.out()
                .lines()
                .any(|l| l.starts_with("ok") && l.contains(&format!(" {check}: "))),
            "{check} should be ok:\n{out}"
        );
    }
    let json = home.run(&["doctor", "--json"]).success().json();
    assert_eq!(json["ok"], true, "{json}");
    let checks = json["checks"].as_array().expect("checks array");
    assert!(
        checks
            .iter()
            .any(|c| c["check"] == "daemon" && c["status"] == "ok"),
        "{json}"
    );
}

#[test]
fn doctor_fails_on_a_directory_others_can_read() {
    let home = Home::new();
    home.run(&["daemon", "start"]).success();
    let hosts = home.path().join("hosts");
    fs::set_permissions(&hosts, fs::Permissions::from_mode(0o750)).unwrap();
    let out = home.run(&["doctor"]).code_is(1);
    let line = out
        .out()
        .lines()
        .find(|l| l.starts_with("FAIL") && l.contains("permissions"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no FAIL permissions line:\n{out}"));
    assert!(
        line.contains(hosts.to_str().unwrap()) && line.contains("0750"),
        "{line}"
    );
    assert!(line.contains("fix: chmod"), "{line}");
    fs::set_permissions(&hosts, fs::Permissions::from_mode(0o700)).unwrap();
    home.run(&["doctor"]).success();
}

#[test]
fn doctor_fails_on_a_computer_that_does_not_answer() {
    require_program("ssh", "openssh-client");
    let home = Home::new();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = home.scratch().join("ssh_config");
    fs::write(
        &cfg,
        format!(
            "Host nowhere\n  HostName 127.0.0.1\n  Port {port}\n  StrictHostKeyChecking no\n  \
             UserKnownHostsFile /dev/null\n"
        ),
    )
    .unwrap();
    let out = home
        .run(&[
            "doctor",
            "--ssh-config",
            cfg.to_str().unwrap(),
            "--computer",
            "nowhere",
        ])
        .code_is(1);
    let line = out
        .out()
        .lines()
        .find(|l| l.starts_with("FAIL  nowhere: ssh:"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no FAIL line for nowhere's ssh:\n{out}"));
    assert!(line.to_lowercase().contains("refused"), "{line}");
    assert_eq!(home.daemon_pid(), None, "doctor starts no daemon");
}

#[test]
fn doctor_reports_the_version_and_daemon_on_another_computer() {
    let (_sshd, remote, client) = sshd::setup();
    remote.run(&["daemon", "start"]).success();
    let remote_pid = remote.running_daemon_pid();
    let out = client
        .run(&["doctor", "--computer", "tether-test"])
        .success();
    let text = out.out();
    assert!(
        text.contains("ok    tether-test: ssh: reachable"),
        "ssh line:\n{out}"
    );
    let version = format!(
        "ok    tether-test: tether: {}: tether {}",
        canonical_bin().display(),
        env!("CARGO_PKG_VERSION")
    );
    let alt = format!(
        "ok    tether-test: tether: {}: tether {}",
        tether_bin().display(),
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        text.contains(&version) || text.contains(&alt),
        "no {version:?}:\n{out}"
    );
    let daemon = text
        .lines()
        .find(|l| l.contains("tether-test: daemon:"))
        .unwrap_or_else(|| panic!("no remote daemon line:\n{out}"));
    assert!(
        daemon.starts_with("ok") && daemon.contains(&remote_pid.to_string()),
        "{daemon}"
    );
    assert_eq!(client.daemon_pid(), None, "doctor starts no local daemon");
}
