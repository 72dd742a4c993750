//! A raw frame client that runs as another user: python3 (run by setpriv as that user)
//! connects to a unix socket, sends bytes encoded here, and prints what comes back, which is
//! decoded here.

use super::User;
use crate::common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tether_proto::{PROTOCOL_VERSION, Request, Response};

/// A whole frame (length header included) holding `req`.
pub fn frame(req: &Request) -> Vec<u8> {
    tether_proto::encode(req).expect("encode a request")
}

/// The `Hello` every connection starts with.
pub fn hello() -> Vec<u8> {
    frame(&Request::Hello {
        version: PROTOCOL_VERSION,
        agent: "trust-test".into(),
        client: None,
    })
}

/// The frames of a connection, concatenated.
pub fn frames(reqs: &[Request]) -> Vec<u8> {
    reqs.iter().flat_map(frame).collect()
}

/// The client run by python3 as another user. argv: SOCKET SILENCE PARALLEL. stdin: one
/// line per connection, `c ` then its steps, each hex, joined by `.`. For each connection it
/// connects, sends the first step, and whenever the peer has been silent for SILENCE seconds
/// sends the next step; after the last it reads until end of file or SILENCE of silence.
/// PARALLEL connections are open at once. Output: one line per connection, in order:
/// `INDEX ok HOW HEX` (HOW: eof, reset, silent; `+epipe` when a send failed) or
/// `INDEX refused ERRNO` when the connection could not be made.
const RAW_CLIENT: &str = r#"
import errno, select, socket, sys, time
path, silence, par = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
jobs = [[bytes.fromhex(s) for s in l[2:].split('.')] for l in sys.stdin.read().split('\n') if l.startswith('c ')]
out = [None] * len(jobs)
active = {}
def send(s, st, data):
    if not data:
        return
    try:
        s.setblocking(True)
        s.settimeout(30)
        s.sendall(data)
    except OSError:
        st['note'] = '+epipe'
        st['step'] = len(jobs[st['i']])
    finally:
        s.setblocking(False)
def finish(s, how):
    st = active.pop(s)
    out[st['i']] = '%d ok %s%s %s' % (st['i'], how, st['note'], st['buf'].hex())
    s.close()
nxt = 0
while nxt < len(jobs) or active:
    while nxt < len(jobs) and len(active) < par:
        i = nxt
        nxt += 1
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
        except OSError as e:
            out[i] = '%d refused %s' % (i, errno.errorcode.get(e.errno, str(e.errno)))
            s.close()
            continue
        st = {'i': i, 'step': 0, 'buf': bytearray(), 'last': time.monotonic(), 'note': ''}
        active[s] = st
        send(s, st, jobs[i][0])
        st['last'] = time.monotonic()
    if not active:
        continue
    ready, _, _ = select.select(list(active), [], [], 0.02)
    now = time.monotonic()
    for s in ready:
        st = active[s]
        try:
            d = s.recv(1 << 16)
        except BlockingIOError:
            continue
        except OSError:
            finish(s, 'reset')
            continue
        if not d:
            finish(s, 'eof')
            continue
        st['buf'] += d
        st['last'] = now
    for s, st in list(active.items()):
        if now - st['last'] >= silence:
            st['step'] += 1
            if st['step'] < len(jobs[st['i']]):
                send(s, st, jobs[st['i']][st['step']])
                st['last'] = time.monotonic()
            else:
                finish(s, 'silent')
sys.stdout.write(''.join(l + '\n' for l in out))
"#;

/// One connection of the raw client: what to send, step by step (the next step goes once
/// the peer has been silent for the run's `silence`).
#[derive(Clone, Debug, Default)]
pub struct Conn {
    pub steps: Vec<Vec<u8>>,
}

impl Conn {
    /// All of `bytes` at once.
    pub fn once(bytes: Vec<u8>) -> Conn {
        Conn { steps: vec![bytes] }
    }
    /// `first`, then (after the reply) `then`.
    pub fn then(first: Vec<u8>, then: Vec<u8>) -> Conn {
        Conn {
            steps: vec![first, then],
        }
    }
}

/// What came back on one connection of the raw client.
#[derive(Debug, Clone)]
pub enum Reply {
    /// `connect` failed (the errno's name: EACCES, ECONNREFUSED…).
    Refused(String),
    Got {
        /// The frames, decoded as far as they decode.
        frames: Vec<Response>,
        /// Bytes after the last whole, decodable frame (a cut or undecodable frame).
        #[allow(dead_code, reason = "read in failure messages, through Debug")]
        junk: Vec<u8>,
        /// How the connection ended (eof, reset, silent; `+epipe` when a send failed).
        #[allow(dead_code, reason = "read in failure messages, through Debug")]
        how: String,
    },
}

impl Reply {
    pub fn frames(&self) -> &[Response] {
        match self {
            Reply::Got { frames, .. } => frames,
            Reply::Refused(_) => &[],
        }
    }
}

/// Splits `bytes` into frames and decodes each as a `Response`; stops at the first that is
/// cut short or does not decode, returning it and what follows as junk.
pub fn decode_responses(bytes: &[u8]) -> (Vec<Response>, Vec<u8>) {
    let mut at = 0;
    let mut out = Vec::new();
    while bytes.len() >= at + tether_proto::FRAME_HEADER_LEN {
        let header: [u8; 4] = bytes[at..at + 4].try_into().unwrap();
        let Ok(len) = tether_proto::frame_len(header) else {
            break;
        };
        let Some(payload) = bytes.get(at + 4..at + 4 + len) else {
            break;
        };
        match tether_proto::decode::<Response>(payload) {
            Ok(r) => out.push(r),
            Err(_) => break,
        }
        at += 4 + len;
    }
    (out, bytes[at..].to_vec())
}

/// `python3 -c SCRIPT ARGS…` as `user`.
pub fn python_as(user: &User, script: &str, args: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .arg("--init-groups")
        .args(["/usr/bin/python3", "-c", script])
        .args(args)
        .current_dir("/")
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    c
}

/// Runs `conns` against the unix socket `socket` as `user`, in one python process with
/// `parallel` connections open at once; a step ends after `silence` without a byte.
pub fn raw_as(
    user: &User,
    socket: &Path,
    conns: &[Conn],
    silence: Duration,
    parallel: usize,
) -> Vec<Reply> {
    let mut input = String::new();
    for c in conns {
        let steps: Vec<String> = c.steps.iter().map(|s| hex(s)).collect();
        input.push_str("c ");
        input.push_str(&steps.join("."));
        input.push('\n');
    }
    let silence_s = format!("{:.3}", silence.as_secs_f64());
    let par = parallel.max(1).to_string();
    let cmd = python_as(
        user,
        RAW_CLIENT,
        &[socket.to_str().unwrap(), &silence_s, &par],
    );
    // Each round of connections ends within a few silences (plus its replies).
    let rounds = conns.len().div_ceil(parallel.max(1)) as u32;
    let budget = Duration::from_secs(60) + (silence * 3 + Duration::from_secs(1)) * rounds;
    let out = run_command(cmd, Some(input.into_bytes()), budget).success();
    let lines: Vec<String> = out.out().lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), conns.len(), "raw client output:\n{out}");
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let mut parts = line.splitn(4, ' ');
            assert_eq!(parts.next(), Some(i.to_string().as_str()), "{line}");
            match parts.next() {
                Some("refused") => Reply::Refused(parts.next().unwrap_or("").to_owned()),
                Some("ok") => {
                    let how = parts.next().unwrap_or("").to_owned();
                    let bytes = unhex(parts.next().unwrap_or(""));
                    let (frames, junk) = decode_responses(&bytes);
                    Reply::Got { frames, junk, how }
                }
                _ => panic!("raw client printed {line:?}"),
            }
        })
        .collect()
}

/// One connection, sent at once, answered within ~3 s of silence.
pub fn raw_once(user: &User, socket: &Path, bytes: Vec<u8>) -> Reply {
    raw_as(
        user,
        socket,
        &[Conn::once(bytes)],
        Duration::from_secs(3),
        1,
    )
    .pop()
    .unwrap()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex from the raw client"))
        .collect()
}

/// Waits up to `within` for `path` to appear; true if it did.
pub fn appears_within(path: &Path, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if path.exists() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
