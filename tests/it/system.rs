//! System mode (issue 6 point 5): one root daemon for every user (`tether daemon start
//! --system`). Sessions run as their owner, owners are kept apart, `run_as` configurations run
//! as their account for the users they allow, and per-user limits hold.
//!
//! These tests need root: they create users (useradd, from the `passwd` package) and run
//! commands as them (setpriv, from `util-linux`). Each test has its own system tree, its own
//! configurations and its own users, and removes all of them.

use crate::common::system::*;
use crate::common::*;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

#[test]
fn sessions_run_as_their_owners_and_owners_are_kept_apart() {
    let sys = System::new(&[]);
    let extra = sys.group("g");
    let alice = sys.user("a", &[&extra]);
    let bob = sys.user("b", &[]);
    sys.start();

    let web = sys.new_session(&alice, "web", &[]);
    assert_eq!(web["owner"], alice.name.as_str());
    let out = sys
        .invoke(
            &alice,
            "web",
            "id -u; id -G; echo \"$HOME|$USER|$LOGNAME\"; echo \"preload=${LD_PRELOAD-none}\"; x=42",
        )
        .success()
        .out();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], alice.uid.to_string(), "{out}");
    let gid = nix::unistd::Group::from_name(&extra.0)
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    assert!(
        lines[1].split(' ').any(|g| g == gid.to_string()),
        "supplementary group missing: {out}"
    );
    assert_eq!(
        lines[2],
        format!("{}|{}|{}", alice.home.display(), alice.name, alice.name)
    );
    assert_eq!(
        lines[3], "preload=none",
        "the client's environment leaked: {out}"
    );
    sys.invoke(&alice, "web", "echo \"x=$x\"")
        .success()
        .stdout_is("x=42\n");

    // Bob sees nothing of Alice's, and can name nothing of hers.
    assert!(sys.sessions(&bob).is_empty(), "bob sees alice's sessions");
    let iid = web["instance_id"].as_str().unwrap();
    for args in [
        vec!["invoke", "-s", iid, "--", "id"],
        vec!["remove", iid],
        vec!["connect", iid],
        vec!["disconnect", iid],
        vec!["receive", iid],
    ] {
        let out = sys.as_user(&bob, &args).failure();
        assert!(
            out.err().contains("no session"),
            "bob's {args:?} was not refused as not found:\n{out}"
        );
    }
    // Same names in both users' namespaces; each runs as its owner.
    sys.new_session(&bob, "web", &[]);
    sys.invoke(&bob, "web", "id -u")
        .success()
        .stdout_is(&format!("{}\n", bob.uid));
    let mine = sys.sessions(&alice);
    assert_eq!(names(&mine), vec!["web".to_string()]);
    sys.invoke(&alice, "web", "echo \"x=$x\"")
        .success()
        .stdout_is("x=42\n");

    // Only root stops the system daemon.
    let out = sys.as_user(&bob, &["daemon", "stop"]).failure();
    assert!(out.err().contains("only root"), "{out}");
    sys.invoke(&alice, "web", "true").success();

    // Files: the socket is for everyone; everything else is root's or the session user's, and
    // nothing is readable by others.
    let sock = sys.sys_home.join("daemon.sock");
    assert_eq!(mode(&sock), 0o666);
    assert_eq!(mode(&sys.sys_home), 0o711);
    let area = sys.sys_home.join("users").join(alice.uid.to_string());
    assert_eq!((mode(&area), owner(&area)), (0o711, 0));
    let fifo_dir = area.join("hosts").join(iid);
    assert_eq!((mode(&fifo_dir), owner(&fifo_dir)), (0o711, 0));
    assert_eq!(owner(&fifo_dir.join("st")), alice.uid);
    let record = area.join("hosts").join(format!("{iid}.json"));
    assert_eq!((mode(&record), owner(&record)), (0o600, 0));
    let mut stack = vec![sys.sys_home.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let m = mode(&p);
            if p != sock {
                assert_eq!(m & 0o066, 0, "{} is open to others ({m:o})", p.display());
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    // Alice cannot read her session's record or reach its host's socket directly.
    let mut cat = Command::new("setpriv");
    cat.arg(format!("--reuid={}", alice.uid))
        .arg(format!("--regid={}", alice.gid))
        .arg("--init-groups")
        .arg("cat")
        .arg(&record);
    let out = run_command(cat, None, CMD_TIMEOUT);
    assert!(!out.status().success(), "alice read the record: {out}");

    // Restarting the system daemon leaves every user's sessions running: the next one adopts
    // them, each for its owner.
    run_command(sys.root_cmd(&["daemon", "stop"]), None, CMD_TIMEOUT).success();
    sys.start();
    sys.invoke(&alice, "web", "echo \"x=$x\"; id -u")
        .success()
        .stdout_is(&format!("x=42\n{}\n", alice.uid));
    assert_eq!(names(&sys.sessions(&bob)), vec!["web".to_string()]);
}

#[test]
fn session_jobs_run_as_the_owner_and_cannot_make_root_read_for_them() {
    let sys = System::new(&[]);
    let alice = sys.user("a", &[]);
    sys.start();
    sys.new_session(&alice, "web", &[]);
    let id = sys.session_job(&alice, "web", "id -un");
    sys.as_user(&alice, &["job", "wait", &id, "--timeout", "20s"])
        .success();
    sys.as_user(&alice, &["job", "receive", &id])
        .success()
        .stdout_is(&format!("{}\n", alice.name));

    // A job that swaps its own output file for a link to a file only root may read: the
    // daemon (root) must not follow it.
    let plant = "for j in \"${__tether_w%/*}\"/jobs/*/; do ln -sf /etc/shadow \"$j/err\"; done; \
                 sleep 1; echo planted";
    let id = sys.session_job(&alice, "web", plant);
    let _ = sys.as_user(&alice, &["job", "wait", &id, "--timeout", "20s"]);
    let got = sys.as_user(&alice, &["job", "receive", &id]);
    let listed = sys
        .as_user(&alice, &["job", "list", "--json"])
        .success()
        .out();
    let shadow = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
    let first = shadow.lines().next().unwrap_or("root:");
    assert!(
        !got.out().contains(first) && !got.err().contains(first) && !listed.contains(first),
        "root read a file for the user: {got}\n{listed}"
    );
    // The daemon refused the link: the job is Failed, saying why.
    let jobs: Value = serde_json::from_str(&listed).unwrap();
    let job = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"].as_u64().map(|n| n.to_string()) == Some(id.clone()))
        .unwrap();
    assert_eq!(job["state"], "Failed", "{job}");
    assert!(
        job["children"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("symbolic link") || r.contains("not a file of the job")),
        "{job}"
    );
}

#[test]
fn run_as_configurations_serve_only_the_users_they_allow() {
    let sys = System::new(&[]);
    let ops = sys.group("o");
    let alice = sys.user("a", &[]);
    let bob = sys.user("b", &[]);
    let carol = sys.user("c", &[&ops]);
    let svc = sys.user("s", &[]);
    sys.config(
        "svc",
        &format!(
            "run_as = \"{}\"\nallowed_users = [\"{}\"]\nallowed_groups = [\"{}\"]\n",
            svc.name, alice.name, ops.0
        ),
    );
    sys.config(
        "jea",
        &format!(
            "engine = \"restricted\"\nrun_as = \"{}\"\nallowed_users = [\"{}\"]\n\
             [[allow]]\ncommand = \"id\"\nargs = [\"-u\"]\n",
            svc.name, alice.name
        ),
    );
    sys.config(
        "ghost",
        "run_as = \"nosuchaccount-tether\"\nallowed_users = []\n",
    );
    sys.start();

    // Alice (by name) and Carol (by group) run as svc; the session is still theirs.
    for u in [&alice, &carol] {
        let s = sys.new_session(u, "svc1", &["--configuration", "svc"]);
        assert_eq!(s["owner"], u.name.as_str());
        assert_eq!(s["configuration_name"], "svc");
        sys.invoke(u, "svc1", "id -u; echo \"$HOME\"")
            .success()
            .stdout_is(&format!("{}\n{}\n", svc.uid, svc.home.display()));
    }
    // Bob is in neither list.
    let out = sys
        .as_user(&bob, &["new", "--name", "x", "--configuration", "svc"])
        .code_is(6);
    assert!(
        out.err()
            .contains(&format!("user {} is not allowed to use it", bob.name)),
        "{out}"
    );
    let out = sys
        .as_user(&bob, &["invoke", "--configuration", "svc", "--", "id"])
        .code_is(6);
    assert!(out.err().contains("not allowed"), "{out}");
    assert!(sys.sessions(&bob).is_empty());
    // Alice's svc session is hers alone, though it runs as svc.
    assert_eq!(names(&sys.sessions(&alice)), vec!["svc1".to_string()]);
    assert!(
        sys.sessions(&svc).is_empty(),
        "svc sees the sessions run as it"
    );

    // A restricted endpoint that runs as svc: what it allows runs as svc; nothing else runs.
    sys.as_user(&alice, &["invoke", "--configuration", "jea", "--", "id -u"])
        .success()
        .stdout_is(&format!("{}\n", svc.uid));
    let out = sys
        .as_user(&alice, &["invoke", "--configuration", "jea", "--", "id"])
        .failure();
    assert!(
        out.err().contains("not allowed in configuration jea"),
        "{out}"
    );

    // An account that does not exist is a clear error naming the configuration.
    let out = sys
        .as_user(&alice, &["invoke", "--configuration", "ghost", "--", "id"])
        .failure();
    assert!(
        out.err().contains("configuration ghost") && out.err().contains("does not exist"),
        "{out}"
    );
}

#[test]
fn one_user_cannot_exhaust_the_daemon_for_the_others() {
    let sys = System::new(&[("TETHER_MAX_CONNECTIONS_PER_USER", "4")]);
    let alice = sys.user("a", &[]);
    let bob = sys.user("b", &[]);
    sys.config("one", "max_sessions_per_user = 1\n");
    sys.start();

    // Sessions per user count per user.
    sys.new_session(&alice, "a1", &["--configuration", "one"]);
    let out = sys
        .as_user(&alice, &["new", "--name", "a2", "--configuration", "one"])
        .failure();
    assert!(out.err().contains("at most 1 sessions per user"), "{out}");
    sys.new_session(&bob, "b1", &["--configuration", "one"]);

    // Alice holds all the connections she may have open…
    let sock = sys.sys_home.join("daemon.sock");
    let hold = "import socket,sys\n\
        s=[socket.socket(socket.AF_UNIX) for _ in range(4)]\n\
        [x.connect(sys.argv[1]) for x in s]\n\
        print('held', flush=True)\n\
        sys.stdin.read()\n";
    let mut child = Command::new("setpriv")
        .arg(format!("--reuid={}", alice.uid))
        .arg(format!("--regid={}", alice.gid))
        .arg("--init-groups")
        .args(["/usr/bin/python3", "-c", hold])
        .arg(&sock)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "held");
    // …so her next one is refused with one clear line, while Bob is served as usual.
    let out = sys.as_user(&alice, &["get"]).failure();
    assert!(
        out.err().contains("the limit per user"),
        "alice's fifth connection was not refused clearly:\n{out}"
    );
    assert_eq!(names(&sys.sessions(&bob)), vec!["b1".to_string()]);
    // Her connections closed, she is served again.
    drop(child.stdin.take());
    let _ = child.wait();
    wait_until(Duration::from_secs(20), "alice served again", || {
        sys.as_user(&alice, &["get"]).status().success()
    });
}

#[test]
fn only_root_starts_the_system_daemon_and_clients_never_start_it() {
    let sys = System::new(&[]);
    let alice = sys.user("a", &[]);
    let out = sys.as_user(&alice, &["get"]).failure();
    assert!(out.err().contains("system daemon is not running"), "{out}");
    let out = sys.as_user(&alice, &["daemon", "start"]).failure();
    assert!(out.err().contains("must be started by root"), "{out}");
    assert!(!sys.sys_home.join("daemon.sock").exists());
}
