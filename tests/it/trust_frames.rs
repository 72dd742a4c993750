//! Trust boundaries of the system daemon (issue 16), by raw frames sent as another user: a
//! word naming a session is never a path, another user's identifiers name nothing, a session
//! host serves only its owner's connections, and thousands of hostile frames from one user
//! leave the other's session whole.
//!
//! These tests need root: they create two users, alice and bob, start a system daemon, and
//! talk to its socket as bob with a python3 client (tests/it/common/system.rs).

use crate::common::rng::Rng;
use crate::common::system::*;
use crate::common::*;
use std::path::Path;
use std::time::Duration;
use tether_proto::{
    ErrorKind, InvokeSpec, RemoveSpec, Request, Response, SessionJob, SessionJobAction, SessionList,
};

/// A session job id (requests that need one must be refused for their session, not for it).
const JOB: &str = "0f0e0d0c-0b0a-4908-8706-050403020100";
/// The message of a word that is refused for its shape.
const NOT_A_WORD: &str = "not a valid session name, id or instance id";

/// Every request that names a session, naming it `word`; the ones that run something write
/// the uid they run as to `marker`.
fn naming(word: &str, marker: &Path) -> Vec<(&'static str, Request)> {
    let list = || SessionList {
        sessions: vec![word.to_owned()],
        remote: None,
        keep: false,
    };
    let script = format!("id -u > {}", marker.display());
    vec![
        (
            "Resume",
            Request::Resume {
                session: word.to_owned(),
                from: 0,
                keep_stdin: false,
                keep: false,
            },
        ),
        (
            "Resume(keep_stdin)",
            Request::Resume {
                session: word.to_owned(),
                from: 0,
                keep_stdin: true,
                keep: false,
            },
        ),
        ("Receive", Request::Receive(list())),
        ("Connect", Request::Connect(list())),
        ("Disconnect", Request::Disconnect(list())),
        (
            "Remove",
            Request::Remove(RemoveSpec {
                sessions: vec![word.to_owned()],
                all: false,
            }),
        ),
        (
            "Invoke",
            Request::Invoke(InvokeSpec {
                session: word.to_owned(),
                script: script.clone(),
                ..Default::default()
            }),
        ),
        (
            "SessionJob",
            Request::SessionJob(SessionJob {
                session: word.to_owned(),
                job: JOB.into(),
                action: SessionJobAction::Start { script },
            }),
        ),
    ]
}

/// The follow-up sent after each attack on the same connection: a daemon refuses it (Bob
/// has no such session), while a session host, which ignores the name, would run it.
fn follow_up(marker: &Path) -> Vec<u8> {
    frame(&Request::Invoke(InvokeSpec {
        session: "no-such-session".into(),
        script: format!("id -u > {}", marker.display()),
        ..Default::default()
    }))
}

#[test]
fn words_that_could_be_paths_and_other_users_ids_name_nothing() {
    let p = pair(&[]);
    let (sys, alice, bob) = (&p.sys, &p.alice, &p.bob);
    let planted = p.plant_record();
    let markers = sys.shared_dir("markers");
    let path_like = vec![
        "../x".to_string(),
        "..".to_string(),
        "/etc/passwd".to_string(),
        "a/b".to_string(),
        "a\0b".to_string(),
        "a".repeat(10_000),
        format!("../../{}/hosts/{}", alice.uid, p.iid),
        format!("{}/../{}", p.bob_iid, p.iid),
        planted,
    ];
    let words: Vec<(String, ErrorKind)> = path_like
        .into_iter()
        .map(|w| (w, ErrorKind::Usage))
        .chain([(p.iid.clone(), ErrorKind::NotFound)])
        .collect();

    // Each attack on a fresh connection, twice: with the follow-up in the same write (so a
    // daemon that hands the connection on passes it along), and after the reply.
    let mut conns = Vec::new();
    let mut what = Vec::new();
    for (w, kind) in &words {
        for (label, req) in naming(w, &markers.join(format!("m{}", conns.len()))) {
            for pipelined in [true, false] {
                let follow = follow_up(&markers.join(format!("f{}", conns.len())));
                let first = [hello(), frame(&req)].concat();
                conns.push(if pipelined {
                    Conn::once([first, follow].concat())
                } else {
                    Conn::then(first, follow)
                });
                what.push((label, w.clone(), *kind, pipelined));
            }
        }
    }
    let replies = raw_as(bob, &sys.socket(), &conns, Duration::from_secs(2), 16);

    let mut wrong = Vec::new();
    for ((label, word, kind, pipelined), reply) in what.iter().zip(&replies) {
        let shown: String = word.escape_default().to_string().chars().take(90).collect();
        let case = format!(
            "{label}({shown}){}",
            if *pipelined { " +pipelined" } else { "" }
        );
        let frames = reply.frames();
        match frames {
            [Response::Hello { .. }, Response::Error(e), ..] => {
                if e.kind != *kind {
                    wrong.push(format!(
                        "{case}: {:?} instead of {kind:?}: {}",
                        e.kind, e.message
                    ));
                } else if *kind == ErrorKind::Usage && !e.message.contains(NOT_A_WORD) {
                    wrong.push(format!(
                        "{case}: message does not say {NOT_A_WORD:?}: {}",
                        e.message
                    ));
                }
            }
            _ => wrong.push(format!("{case}: not hello then an error: {reply:?}")),
        }
        if let Some(f) = ran_or_showed(frames, &p.iid) {
            wrong.push(format!("{case}: {f}"));
        }
    }
    let written = markers_in(&markers);
    assert!(
        wrong.is_empty() && written.is_empty(),
        "{} of {} requests were not refused as they should be:\n{}\n\
         commands that ran: {written:#?}",
        wrong.len(),
        replies.len(),
        wrong.join("\n")
    );
    p.assert_whole();
    // Bob is still served, in his own session.
    sys.invoke(bob, "mine", "id -u")
        .success()
        .stdout_is(&format!("{}\n", bob.uid));

    // The CLI says so in one line, with the usage status.
    let out = sys
        .as_user(bob, &["invoke", "-s", "../x", "--", "true"])
        .code_is(2);
    assert!(
        out.err().contains(NOT_A_WORD) && out.err().contains("../x"),
        "the refusal does not name the problem:\n{out}"
    );
}

/// Real requests naming alice's session every way bob might try: her name, Id and instance
/// id, paths to it, and bob's planted record; plus the host-only requests.
fn replays(p: &Pair, planted: &str, marker: &Path) -> Vec<Request> {
    let words = [
        "vault".to_string(),
        "2".to_string(),
        p.iid.clone(),
        format!("../../{}/hosts/{}", p.alice.uid, p.iid),
        format!("../{}/hosts/{}", p.alice.uid, p.iid),
        format!("{}/../{}", p.bob_iid, p.iid),
        p.sys
            .area(&p.alice)
            .join("hosts")
            .join(&p.iid)
            .display()
            .to_string(),
        planted.to_string(),
    ];
    let spec = |w: &str| InvokeSpec {
        session: w.into(),
        script: format!("id -u > {}", marker.display()),
        ..Default::default()
    };
    let mut v = Vec::new();
    for w in &words {
        v.extend(naming(w, marker).into_iter().map(|(_, r)| r));
        v.push(Request::Pin(w.clone()));
        v.push(Request::Get(tether_proto::SessionFilter {
            name_glob: Some(w.clone()),
            instance_id: Some(w.clone()),
            ..Default::default()
        }));
        v.push(Request::Handoff {
            spec: spec(w),
            prefix: frame(&Request::Invoke(spec(w))),
        });
    }
    v.push(Request::HostInfo);
    v.push(Request::HostClose);
    v.push(Request::HandoffReceive {
        prefix: Vec::new(),
        from: Some(0),
        acked: true,
        client: Default::default(),
        keep_stdin: true,
        keep: false,
    });
    v
}

/// One hostile connection's bytes.
fn hostile(rng: &mut Rng, real: &[Vec<u8>], follow: &[u8]) -> Vec<u8> {
    match rng.below(10) {
        // Noise.
        0 => {
            let n = rng.below(300) as usize;
            rng.bytes(n)
        }
        // A plausible header with a random payload, after a hello or not.
        1 => {
            let n = rng.below(200) as u32;
            let mut v = if rng.below(2) == 0 {
                hello()
            } else {
                Vec::new()
            };
            v.extend(n.to_be_bytes());
            v.extend(rng.bytes(n as usize));
            v
        }
        // A header announcing far more than will come, or more than any frame may hold.
        2 => {
            let mut v = hello();
            v.extend((rng.next() as u32 | 0x0100_0000).to_be_bytes());
            let n = rng.below(64) as usize;
            v.extend(rng.bytes(n));
            v
        }
        // A real request cut short.
        3 => {
            let r = rng.pick(real);
            let cut = rng.below(r.len() as u64) as usize;
            [hello(), r[..cut].to_vec()].concat()
        }
        // A real request without a hello.
        4 => rng.pick(real).clone(),
        // A real request with bits flipped.
        5 => {
            let mut v = [hello(), rng.pick(real).clone()].concat();
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(v.len() as u64) as usize;
                v[i] ^= 1 << rng.below(8);
            }
            v
        }
        // Pinned to a "configuration" named after her session.
        6 => [
            frame(&Request::Pin("vault".into())),
            hello(),
            rng.pick(real).clone(),
        ]
        .concat(),
        // Replayed as they are, several on one connection, with the probe after them.
        _ => {
            let mut v = hello();
            for _ in 0..1 + rng.below(3) {
                v.extend_from_slice(rng.pick(real));
            }
            v.extend_from_slice(follow);
            v
        }
    }
}

/// Whether the bytes hold a whole request that is none of the replayed ones: a bit flip can
/// make one that bob may rightly send (remove his own sessions…), which is not an attack.
fn other_request(bytes: &[u8], allowed: &[Request]) -> bool {
    let mut at = 0;
    while bytes.len() >= at + 4 {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let Some(payload) = bytes.get(at + 4..at + 4 + len) else {
            return false;
        };
        match tether_proto::decode::<Request>(payload) {
            Err(_) => {}
            Ok(Request::Hello { .. } | Request::Pin(_) | Request::DaemonStatus) => {}
            Ok(r) if allowed.contains(&r) => {}
            Ok(_) => return true,
        }
        at += 4 + len;
    }
    false
}

/// The requests in a connection's bytes, for a failure message.
fn requests_in(bytes: &[u8]) -> String {
    let mut at = 0;
    let mut out = Vec::new();
    while bytes.len() >= at + 4 {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let Some(payload) = bytes.get(at + 4..at + 4 + len) else {
            out.push(format!("{} bytes of a cut frame", bytes.len() - at));
            break;
        };
        let r = tether_proto::decode::<Request>(payload);
        out.push(match r {
            Ok(r) => format!("{r:?}").chars().take(300).collect(),
            Err(e) => format!("undecodable: {e}"),
        });
        at += 4 + len;
    }
    out.join(" | ")
}

#[test]
fn two_thousand_hostile_frames_from_one_user_leave_the_others_session_whole() {
    let p = pair(&[]);
    let planted = p.plant_record();
    let markers = p.sys.shared_dir("markers");
    let marker = markers.join("pwned");
    let mut allowed = replays(&p, &planted, &marker);
    let probe = Request::Invoke(InvokeSpec {
        session: "no-such-session".into(),
        script: format!("id -u > {}", marker.display()),
        ..Default::default()
    });
    allowed.push(probe.clone());
    let real: Vec<Vec<u8>> = allowed.iter().map(frame).collect();
    let follow = frame(&probe);

    let mut rng = Rng(0x16_7e57_7275_5354);
    let conns: Vec<Conn> = (0..2_000)
        .map(|_| {
            loop {
                let m = hostile(&mut rng, &real, &follow);
                if !other_request(&m, &allowed) {
                    break Conn::once(m);
                }
            }
        })
        .collect();
    let started = std::time::Instant::now();
    let replies = raw_as(
        &p.bob,
        &p.sys.socket(),
        &conns,
        Duration::from_millis(250),
        48,
    );
    eprintln!(
        "{} hostile connections in {:?}",
        conns.len(),
        started.elapsed()
    );

    let refused = replies
        .iter()
        .filter(|r| matches!(r, Reply::Refused(_)))
        .count();
    assert!(refused < 20, "{refused} of bob's connections were refused");
    // The replays got as far as being refused for what they name (not only for their bytes).
    let refusals = |kind: ErrorKind| {
        replies
            .iter()
            .filter(|r| {
                r.frames()
                    .iter()
                    .any(|f| matches!(f, Response::Error(e) if e.kind == kind))
            })
            .count()
    };
    let (usage, not_found) = (refusals(ErrorKind::Usage), refusals(ErrorKind::NotFound));
    eprintln!("refused: {usage} for usage, {not_found} as not found");
    assert!(
        not_found > 200,
        "only {not_found} hostile connections were refused as not found"
    );
    let served: Vec<String> = replies
        .iter()
        .zip(&conns)
        .filter_map(|(r, c)| {
            let f = ran_or_showed(r.frames(), &p.iid)?;
            Some(format!("{f}\n  after {}", requests_in(&c.steps[0])))
        })
        .collect();
    assert!(
        served.is_empty(),
        "{} hostile connections were served; the first:\n{}",
        served.len(),
        served[..served.len().min(5)].join("\n")
    );
    let written = markers_in(&markers);
    assert!(written.is_empty(), "commands ran: {written:#?}");
    p.assert_whole();
    // Bob is still served: his own session, and a new one.
    p.sys
        .invoke(&p.bob, "mine", "echo ok")
        .success()
        .stdout_is("ok\n");
    p.sys.new_session(&p.bob, "after", &[]);
    assert_eq!(
        names(&p.sys.sessions(&p.bob)),
        vec!["after".to_string(), "mine".to_string()]
    );
}
