//! Giving our stdin to the client daemon (`Request::GiveStdin`): for a command on another
//! computer, the daemon's relay carries stdin onto the link. Once [`crate::lend::LEND_AFTER`]
//! bytes went in frames, a CLI whose stdin is not a terminal hands it to the relay, which
//! then reads it straight into the link: one process and two copies of every byte fewer on
//! the way. Runs on the stdin thread ([`crate::lend_in::forward`]), so it blocks.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::Duration;
use tether_proto::{FRAME_HEADER_LEN, Request, Response};

/// How long the daemon may take to answer: it only checks the token and hands the pipe over.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// The whole frames at the start of `bytes`, decoded (a bad one ends the list).
fn replies(bytes: &[u8]) -> Vec<Response> {
    let mut rest = bytes;
    let mut out = Vec::new();
    while rest.len() >= FRAME_HEADER_LEN {
        let mut header = [0u8; FRAME_HEADER_LEN];
        header.copy_from_slice(&rest[..FRAME_HEADER_LEN]);
        let Ok(len) = tether_proto::frame_len(header) else {
            break;
        };
        let Some(payload) = rest.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
            break;
        };
        match tether_proto::decode::<Response>(payload) {
            Ok(r) => out.push(r),
            Err(_) => break,
        }
        rest = &rest[FRAME_HEADER_LEN + len..];
    }
    out
}

/// Gives `input` to the relay that answered `Relayed { token }`, through the daemon at
/// `daemon`. True once the daemon took it: from then on we read none of it. False on any
/// refusal (stdin then goes on in frames).
pub(crate) fn give_stdin(daemon: &Path, token: u64, input: &impl AsFd) -> bool {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(daemon) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(ANSWER_WITHIN));
    let _ = stream.set_write_timeout(Some(ANSWER_WITHIN));
    let mut frames = Vec::new();
    for req in [crate::hello(), Request::GiveStdin { token }] {
        match tether_proto::encode(&req) {
            Ok(f) => frames.extend(f),
            Err(_) => return false,
        }
    }
    // The descriptor travels with the first bytes: the daemon reads those with recvmsg.
    let fds = [input.as_fd().as_raw_fd()];
    let sent = sendmsg::<()>(
        stream.as_raw_fd(),
        &[std::io::IoSlice::new(&frames)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    );
    match sent {
        Ok(n) if n == frames.len() => {}
        Ok(n) => {
            if stream.write_all(&frames[n..]).is_err() {
                return false;
            }
        }
        Err(_) => return false,
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < 64 * 1024 {
        let answered = replies(&got);
        match answered.as_slice() {
            [Response::Hello { .. }, Response::Ok, ..] => return true,
            [_, _, ..] | [Response::Error(_), ..] => return false,
            _ => {}
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_hello_and_ok_mean_taken() {
        let enc = |rs: &[Response]| -> Vec<u8> {
            rs.iter()
                .flat_map(|r| tether_proto::encode(r).unwrap())
                .collect()
        };
        let hello = Response::Hello { version: 1, pid: 2 };
        assert_eq!(replies(&enc(&[hello.clone(), Response::Ok])).len(), 2);
        let cut = enc(&[hello.clone(), Response::Ok]);
        assert_eq!(
            replies(&cut[..cut.len() - 1]).len(),
            1,
            "a cut frame is not read"
        );
        assert!(
            replies(&[0, 0, 0, 2, 0xff, 0xff]).is_empty(),
            "nor a garbled one"
        );
    }
}
