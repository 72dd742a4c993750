//! Trust boundaries of the system daemon (issue 16): a session host serves nobody but root
//! and the session's owner, a session's shell starts as its user before it touches anything,
//! `config list|show` disclose nothing a user may not use or read, and one user's sessions,
//! kept output and open files are theirs, counted against them.
//!
//! These tests need root: they create users (alice, bob), start a system daemon and act as
//! each user (tests/it/common/system.rs).

use crate::common::system::*;
use crate::common::*;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;
use tether_proto::{ErrorKind, InvokeSpec, NewSession, Request, Response};

#[test]
fn host_sockets_are_closed_to_other_users() {
    let p = pair(&[]);
    let sock = p
        .sys
        .area(&p.alice)
        .join("hosts")
        .join(format!("{}.sock", p.iid));
    assert_eq!(
        (mode(&sock), owner(&sock)),
        (0o600, 0),
        "{} is not root's alone",
        sock.display()
    );
    for user in [&p.bob, &p.alice] {
        let reply = raw_once(user, &sock, hello());
        assert!(
            matches!(&reply, Reply::Refused(e) if e == "EACCES"),
            "{} reached the session host directly: {reply:?}",
            user.name
        );
    }
    p.assert_whole();
}

/// Hands a connection whose other end is `peer` (a python client of that user, waiting) to
/// alice's session host, as her daemon would, with `script` to run; returns what the host
/// wrote to that client and whether `marker` appeared within `within`.
fn hand_over(
    p: &Pair,
    peer: &User,
    script: &str,
    marker: &Path,
    within: Duration,
) -> (Reply, bool) {
    use std::os::unix::net::{UnixListener, UnixStream};
    let meet = p.sys.shared_dir(&unique("meet"));
    let path = meet.join("s");
    let listener = UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let (who, at) = (peer.clone(), path.clone());
    let client = std::thread::spawn(move || {
        raw_as(
            &who,
            &at,
            &[Conn::once(Vec::new())],
            Duration::from_secs(3),
            1,
        )
        .pop()
        .unwrap()
    });
    let mut accepted = None;
    wait_until(WAIT, "the python client connects", || {
        match listener.accept() {
            Ok((s, _)) => accepted = Some(s),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}"),
        }
        accepted.is_some()
    });
    let stream = accepted.unwrap();
    stream.set_nonblocking(false).unwrap();
    let cred =
        nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials).unwrap();
    assert_eq!(
        cred.uid(),
        peer.uid,
        "the accepted connection is not {}'s",
        peer.name
    );

    let host_sock = p
        .sys
        .area(&p.alice)
        .join("hosts")
        .join(format!("{}.sock", p.iid));
    let host = UnixStream::connect(&host_sock).unwrap();
    let handoff = frame(&Request::Handoff {
        spec: InvokeSpec {
            script: script.into(),
            ..Default::default()
        },
        prefix: Vec::new(),
    });
    let iov = [std::io::IoSlice::new(&handoff)];
    let fds = [stream.as_raw_fd()];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    let sent = nix::sys::socket::sendmsg::<()>(
        host.as_raw_fd(),
        &iov,
        &cmsg,
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .unwrap();
    assert_eq!(sent, handoff.len());
    let ran = appears_within(marker, within);
    drop((stream, host, listener));
    (client.join().unwrap(), ran)
}

#[test]
fn a_session_host_refuses_a_connection_handed_over_from_a_stranger() {
    let p = pair(&[]);
    let out = p.sys.shared_dir("out");

    // The control: a connection of alice's own, handed over, runs (as alice).
    let mine = out.join("alice");
    let script = format!("id -u > {}", mine.display());
    let (reply, ran) = hand_over(&p, &p.alice, &script, &mine, WAIT);
    assert!(ran, "alice's own hand-off did not run; she got {reply:?}");
    wait_until(WAIT, "the control's line is written", || {
        std::fs::read_to_string(&mine).is_ok_and(|s| s.ends_with('\n'))
    });
    assert_eq!(
        std::fs::read_to_string(&mine).unwrap().trim(),
        p.alice.uid.to_string()
    );
    assert!(
        reply
            .frames()
            .iter()
            .any(|f| matches!(f, Response::Exit(e) if e.code == 0)),
        "alice got no exit status: {reply:?}"
    );

    // Bob's connection, handed over the same way, runs nothing and learns nothing.
    let theirs = out.join("bob");
    let script = format!("id -u > {}", theirs.display());
    let (reply, ran) = hand_over(&p, &p.bob, &script, &theirs, Duration::from_secs(2));
    let written = std::fs::read_to_string(&theirs).unwrap_or_default();
    assert!(
        !ran,
        "alice's host ran a command for bob's connection (as uid {}); bob got {reply:?}",
        written.trim()
    );
    if let Some(f) = ran_or_showed(reply.frames(), &p.iid) {
        panic!("bob's connection was served: {f}");
    }
    p.assert_whole();
}

#[test]
fn a_session_starts_as_its_user_before_it_touches_anything() {
    let sys = System::new(&[]);
    let alice = sys.user("a", &[]);
    // A directory only root may pass through, and one inside it anyone could read.
    let locked = sys.tmp.path().join("locked");
    let open = locked.join("open");
    std::fs::create_dir_all(&open).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(open.join("secret"), "root's secret\n").unwrap();
    let out = sys.shared_dir("out");
    let booted = out.join("booted");
    sys.config(
        "wd",
        &format!("working_directory = \"{}\"\n", open.display()),
    );
    std::fs::write(
        sys.configs.join("boot.sh"),
        format!("id -u > {}\n", booted.display()),
    )
    .unwrap();
    sys.config("boot", "startup_script = \"boot.sh\"\n");
    sys.start();
    sys.new_session(&alice, "keep", &[]);
    let hosts = sys.host_processes(&alice);
    assert_eq!(hosts.len(), 1, "alice's one session host: {hosts:?}");

    let asks = [
        (
            "cwd",
            NewSession {
                name: Some("d".into()),
                cwd: Some(open.display().to_string()),
                ..Default::default()
            },
        ),
        (
            "configuration wd",
            NewSession {
                name: Some("d".into()),
                configuration: Some("wd".into()),
                ..Default::default()
            },
        ),
    ];
    for (how, spec) in asks {
        let reply = raw_once(
            &alice,
            &sys.socket(),
            [hello(), frame(&Request::New(spec))].concat(),
        );
        match reply.frames() {
            [Response::Hello { .. }, Response::Error(e), ..] => {
                assert_eq!(e.kind, ErrorKind::Permission, "{how}: {e:?}");
                assert!(
                    e.message.contains(open.to_str().unwrap()),
                    "{how}: the error does not name the directory: {e:?}"
                );
            }
            _ => panic!(
                "{how}: a session in {} was not refused: {reply:?}",
                open.display()
            ),
        }
        // No session, and no host left running for it.
        let listed = names(&sys.sessions(&alice));
        assert_eq!(listed, vec!["keep".to_string()], "{how}");
        wait_until(WAIT, "alice has only her first session host", || {
            sys.host_processes(&alice) == hosts
        });
    }
    // The same through the CLI: one line, the permission status.
    let cli = sys
        .as_user(&alice, &["new", "--name", "d", "--configuration", "wd"])
        .code_is(6);
    assert!(cli.err().contains(open.to_str().unwrap()), "{cli}");

    // A configuration's start-up script runs as the user.
    sys.new_session(&alice, "b", &["--configuration", "boot"]);
    wait_until(WAIT, "the start-up script has run", || {
        std::fs::read_to_string(&booted).is_ok_and(|s| s.ends_with('\n'))
    });
    assert_eq!(
        std::fs::read_to_string(&booted).unwrap().trim(),
        alice.uid.to_string(),
        "the start-up script did not run as alice"
    );
}

#[test]
fn config_listings_disclose_nothing_a_user_may_not_use_or_read() {
    let sys = System::new(&[]);
    let alice = sys.user("a", &[]);
    let bob = sys.user("b", &[]);
    sys.config("pub", "idle_timeout = 600\n");
    sys.config(
        "alice_only",
        &format!("allowed_users = [\"{}\"]\n", alice.name),
    );
    sys.config("secret", "# the-secret-text\nidle_timeout = 600\n");
    sys.config("broken", "idle_timeout = 600\npassword = hunter2 =\n");
    for f in ["secret", "broken"] {
        let p = sys.configs.join(format!("{f}.toml"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(owner(&p), 0);
    }
    sys.start();

    let listed = |u: &User| -> Vec<String> {
        let out = sys.as_user(u, &["config", "list", "--json"]).success();
        let v = out.json();
        let list = v
            .as_array()
            .unwrap_or_else(|| panic!("config list --json is not an array:\n{out}"));
        list.iter()
            .map(|c| c["name"].as_str().unwrap_or("?").to_owned())
            .collect()
    };
    let bobs = listed(&bob);
    assert!(bobs.contains(&"pub".to_string()), "{bobs:?}");
    assert!(
        !bobs.contains(&"alice_only".to_string()),
        "bob sees a configuration he may not use: {bobs:?}"
    );
    assert!(
        listed(&alice).contains(&"alice_only".to_string()),
        "alice does not see her own configuration"
    );

    // Shown by name, it does not exist for bob, word for word.
    let hidden = sys
        .as_user(&bob, &["config", "show", "alice_only"])
        .code_is(3);
    let absent = sys
        .as_user(&bob, &["config", "show", "no_such_cfg"])
        .code_is(3);
    assert_eq!(
        hidden.err(),
        absent.err().replace("no_such_cfg", "alice_only"),
        "a configuration bob may not use is told apart from one that does not exist"
    );

    // Nothing bob can get shows what only root may read.
    let mut seen = Vec::new();
    for args in [
        &["config", "list"][..],
        &["config", "list", "--json"],
        &["config", "show", "secret"],
        &["config", "show", "broken"],
        &["config", "show", "pub"],
        &["config", "show", "alice_only"],
    ] {
        let out = sys.as_user(&bob, args);
        for secret in ["the-secret-text", "hunter2"] {
            if out.out().contains(secret) || out.err().contains(secret) {
                seen.push(format!("{args:?} shows {secret}:\n{out}"));
            }
        }
    }
    assert!(seen.is_empty(), "{}", seen.join("\n"));
}

#[test]
fn each_user_has_a_fair_share_of_sessions_and_the_daemon_of_open_files() {
    let sys = System::new(&[("TETHER_MAX_SESSIONS_PER_USER", "3")]);
    let alice = sys.user("a", &[]);
    let bob = sys.user("b", &[]);
    // Started as a login would start it: a low soft limit on open files under the hard one.
    let mut hard = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit into a local struct.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut hard) },
        0
    );
    let hard = hard.rlim_max;
    assert!(hard > 256, "the hard limit on open files is only {hard}");
    let mut start = sys.root_cmd(&["daemon", "start"]);
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        start.pre_exec(move || {
            let low = libc::rlimit {
                rlim_cur: 256,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &low) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    run_command(start, None, CMD_TIMEOUT).success();
    for n in ["b1", "b2", "b3"] {
        sys.new_session(&bob, n, &[]);
    }
    let out = sys.as_user(&bob, &["new", "--name", "b4"]).code_is(4);
    assert!(out.err().contains("limit per user"), "{out}");
    assert_eq!(names(&sys.sessions(&bob)), ["b1", "b2", "b3"]);
    sys.new_session(&alice, "a1", &[]);
    // Sessions get the limit the daemon was started with, as anywhere else.
    sys.invoke(&alice, "a1", "ulimit -n")
        .success()
        .stdout_is("256\n");

    // The daemon serves many users' connections and sessions: it takes every descriptor the
    // system lets it have.
    let pid = sys.daemon_pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("{limits}"));
    let nums: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    assert_eq!(
        (nums[0], nums[1]),
        (hard.to_string().as_str(), hard.to_string().as_str()),
        "the daemon, started with a soft limit of 256 under a hard one of {hard}, did not \
         raise it: {line}"
    );
}

#[test]
fn each_user_has_a_fair_share_of_jobs() {
    let sys = System::new(&[("TETHER_MAX_JOBS_PER_USER", "2")]);
    let alice = sys.user("a", &[]);
    let bob = sys.user("b", &[]);
    sys.start();
    sys.new_session(&bob, "b", &[]);
    sys.new_session(&alice, "a", &[]);
    sys.session_job(&bob, "b", "sleep 30");
    sys.session_job(&bob, "b", "sleep 30");
    let out = sys
        .as_user(&bob, &["job", "start", "-s", "b", "--", "true"])
        .code_is(4);
    assert!(
        out.err().contains("limit per user") && out.err().contains(&bob.name),
        "{out}"
    );
    // Bob's jobs are his: alice still has her share.
    sys.session_job(&alice, "a", "true");
    let out = sys
        .as_user(&bob, &["invoke", "--as-job", "--", "true"])
        .code_is(4);
    assert!(out.err().contains("limit per user"), "{out}");
}

#[test]
fn output_kept_for_a_disconnected_command_belongs_to_its_user() {
    let sys = System::new(&[("TETHER_OUTPUT_MEMORY", "65536")]);
    let alice = sys.user("a", &[]);
    sys.start();
    let s = sys.new_session(&alice, "s", &[]);
    let iid = s["instance_id"].as_str().unwrap();
    let go = sys.shared_dir("flags").join("go");
    // It writes only once disconnected, so all of it is kept (past memory: in the spool).
    let script = format!(
        "while [ ! -e {go} ]; do sleep 0.05; done; head -c 1048576 /dev/zero | tr '\\0' x; sleep 120",
        go = go.display()
    );
    let mut cli = sys.spawn_as_user(&alice, &["invoke", "-s", "s", "--", &script], "invoke");
    wait_until(WAIT, "the command runs", || {
        sys.session(&alice, "s")["availability"] == "Busy"
    });
    sys.as_user(&alice, &["disconnect", "s"]).success();
    cli.wait(WAIT);
    std::fs::write(&go, "").unwrap();
    let spool = sys.area(&alice).join("hosts").join(iid).join("spool");
    wait_until(WAIT, "the kept output is spooled", || {
        std::fs::metadata(&spool).is_ok_and(|m| m.len() > 0)
    });
    assert_eq!(
        owner(&spool),
        alice.uid,
        "{} is not alice's (mode {:o})",
        spool.display(),
        mode(&spool)
    );
    // Removing the session ends the command and its kept output.
    sys.as_user(&alice, &["remove", "s"]).success();
    wait_until(WAIT, "the spool is gone with the session", || {
        !spool.exists()
    });
}
