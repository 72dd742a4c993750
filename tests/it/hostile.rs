//! Hostile input (SPEC §3.20, issue 6 point 7): 10,000 random, truncated and oversized frames
//! thrown at a live daemon's socket must leave it serving normal clients, with no session
//! harmed. (The decoder itself is fuzzed: `fuzz/`, see docs/FUZZING.md.)

use crate::common::rng::Rng;
use crate::common::*;
use std::io::Write;
use std::os::unix::net::UnixStream;
use tether_proto::{InvokeSpec, PROTOCOL_VERSION, Request, SessionFilter, encode};

fn hello() -> Vec<u8> {
    encode(&Request::Hello {
        version: PROTOCOL_VERSION,
        agent: "hostile".into(),
        client: None,
    })
    .unwrap()
}

/// One hostile message: what a broken or malicious peer might send on a fresh connection.
fn hostile(rng: &mut Rng) -> Vec<u8> {
    let real = [
        encode(&Request::Get(SessionFilter::default())).unwrap(),
        encode(&Request::Invoke(InvokeSpec {
            session: "s".into(),
            script: "echo pwned > /dev/null".into(),
            ..Default::default()
        }))
        .unwrap(),
        encode(&Request::DaemonStatus).unwrap(),
    ];
    match rng.below(7) {
        // Noise.
        0 => {
            let n = rng.below(300) as usize;
            rng.bytes(n)
        }
        // A plausible header with a random payload.
        1 => {
            let n = rng.below(200) as u32;
            let mut v = n.to_be_bytes().to_vec();
            v.extend(rng.bytes(n as usize));
            v
        }
        // A header announcing far more than will come, or more than any frame may hold.
        2 => {
            let mut v = (rng.next() as u32 | 0x0100_0000).to_be_bytes().to_vec();
            let n = rng.below(64) as usize;
            v.extend(rng.bytes(n));
            v
        }
        // A real hello, then garbage.
        3 => {
            let mut v = hello();
            let n = rng.below(100) as usize;
            v.extend(rng.bytes(n));
            v
        }
        // A real hello, then a real request cut short.
        4 => {
            let mut v = hello();
            let r = &real[rng.below(real.len() as u64) as usize];
            let cut = rng.below(r.len() as u64) as usize;
            v.extend_from_slice(&r[..cut]);
            v
        }
        // A request without a hello.
        5 => real[rng.below(real.len() as u64) as usize].clone(),
        // A real hello and request with bytes flipped.
        _ => {
            let mut v = hello();
            v.extend_from_slice(&real[rng.below(real.len() as u64) as usize]);
            for _ in 0..3 {
                let i = rng.below(v.len() as u64) as usize;
                v[i] ^= 1 << rng.below(8);
            }
            v
        }
    }
}

/// Whether the bytes hold a whole, valid request that does something (stop the daemon, remove
/// sessions, run a command…): random bytes can form one, and then the daemon rightly obeys.
/// Such messages are not hostile input, so they are left out.
fn meaningful(bytes: &[u8]) -> bool {
    let mut at = 0;
    while bytes.len() >= at + 4 {
        let len =
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let Some(payload) = bytes.get(at + 4..at + 4 + len) else {
            return false;
        };
        match tether_proto::decode::<Request>(payload) {
            Ok(Request::Hello { .. } | Request::Get(_) | Request::DaemonStatus) | Err(_) => {}
            Ok(_) => return true,
        }
        at += 4 + len;
    }
    false
}

#[test]
fn ten_thousand_hostile_frames_leave_the_daemon_serving_and_sessions_whole() {
    let home = Home::new();
    home.new_session("s", &[]);
    home.invoke("s", "kept=yes").success();
    let pid = home.running_daemon_pid();
    let mut rng = Rng(0x7e7e_7e7e_1234_5678);
    let sock = home.socket();
    let mut refused = 0;
    for _ in 0..10_000 {
        let mut s = match UnixStream::connect(&sock) {
            Ok(s) => s,
            Err(e) => {
                if refused == 0 {
                    eprintln!("first refusal: {e}");
                }
                refused += 1;
                continue;
            }
        };
        let msg = loop {
            let m = hostile(&mut rng);
            if !meaningful(&m) {
                break m;
            }
        };
        let _ = s.write_all(&msg);
        // Half the time hang up at once, half the time after a short read attempt.
        if rng.below(2) == 0 {
            let _ = s.set_read_timeout(Some(std::time::Duration::from_millis(1)));
            let _ = std::io::Read::read(&mut s, &mut [0u8; 64]);
        }
    }
    assert!(refused < 100, "{refused} connections refused");
    assert_eq!(
        home.running_daemon_pid(),
        pid,
        "the daemon restarted or died"
    );
    assert_eq!(home.session("s")["state"], "Opened");
    home.invoke("s", "echo $kept").success().stdout_is("yes\n");
    home.new_session("t", &[]);
    home.invoke("t", "echo fresh")
        .success()
        .stdout_is("fresh\n");
}

#[test]
fn an_oversized_script_is_refused_clearly_and_harms_nothing() {
    let home = Home::new();
    home.new_session("s", &[]);
    let big = home.scratch().join("big.sh");
    std::fs::write(&big, ":\n".repeat(3 << 20)).unwrap();
    home.run(&["invoke", "-s", "s", "--file", big.to_str().unwrap()])
        .code_is(2)
        .clear_error("limit is 4 MiB", 1);
    home.invoke("s", "echo fine").success().stdout_is("fine\n");
}

#[test]
fn connections_past_the_limit_are_refused_clearly_and_silent_ones_are_dropped() {
    let home = Home::new()
        .env("TETHER_MAX_CONNECTIONS", "8")
        .env("TETHER_HELLO_TIMEOUT_MS", "300");
    home.run(&["daemon", "start"]).success();
    let sock = home.socket();
    // Eight clients that said hello and then nothing: they hold every slot.
    let held: Vec<UnixStream> = (0..8)
        .map(|_| {
            let mut s = UnixStream::connect(&sock).unwrap();
            s.write_all(&hello()).unwrap();
            s
        })
        .collect();
    wait_until(WAIT, "the ninth client is refused", || {
        let out = home.run(&["get"]);
        out.code() == Some(4) && out.err().contains("connections open")
    });
    drop(held);
    wait_until(WAIT, "a client is served again", || {
        home.run(&["get"]).code() == Some(0)
    });
    // A connection that never speaks is closed after the hello deadline.
    let mut silent = UnixStream::connect(&sock).unwrap();
    silent
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut silent, &mut buf).unwrap_or(usize::MAX);
    assert_eq!(n, 0, "the daemon should have closed the silent connection");
}
