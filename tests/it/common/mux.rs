//! Speaking to `tether bridge` as a hostile client would: no tether CLI, no client daemon, just
//! the bridge's multiplexed link on its pipes and raw protocol frames on each channel.
//!
//! The bridge prints its preamble line, then serves the mux (`tether_transport::mux`) on its
//! stdin/stdout; every channel this side opens is one connection to the daemon, on which frames
//! are a 4-byte big-endian length and a postcard payload, starting with `Hello`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tether_proto::{
    ClientId, ErrorInfo, ExitInfo, FRAME_HEADER_LEN, InvokeSpec, PROTOCOL_VERSION, Request,
    Response, Stream,
};
use tether_transport::mux::{ChannelReader, ChannelWriter, Mux};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// Runs `f` on a runtime of its own (two workers), for a test that speaks to a bridge.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// How long any one exchange with the bridge may take.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A running `tether bridge` and the link on its pipes. Dropping it kills the bridge (the
/// daemon it started goes on: the test's `Home` stops it).
pub struct Bridge {
    child: tokio::process::Child,
    mux: Mux,
    pub stderr_path: PathBuf,
}

impl Bridge {
    /// Starts `command` (a `tether bridge …` command line, environment included) with its
    /// stdin and stdout on pipes, and waits for its preamble.
    pub async fn start(command: std::process::Command, stderr_path: PathBuf) -> Bridge {
        let mut cmd = tokio::process::Command::from(command);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn tether bridge");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let want = tether_transport::link::preamble();
        let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
        // Skip until the preamble line; the mux starts right after it.
        let found = tokio::time::timeout(DEADLINE, async {
            let mut line = String::new();
            loop {
                line.clear();
                match stdout.read_line(&mut line).await {
                    Ok(0) | Err(_) => return false,
                    Ok(_) if line == want => return true,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert_eq!(
            found,
            Ok(true),
            "the bridge printed no preamble {want:?}; stderr: {}",
            stderr()
        );
        let (mux, _incoming) = Mux::start(stdout, stdin);
        Bridge {
            child,
            mux,
            stderr_path,
        }
    }

    /// What the bridge (and, through the dynamic loader, anything it ran) said on stderr.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// A new channel, that is a new daemon connection, greeted with `Hello` as a client daemon
    /// of another computer would.
    pub async fn connect(&self) -> Conn {
        self.connect_as("hostile-client-0001").await
    }

    /// As [`Bridge::connect`], speaking for the client daemon whose Id is `id`.
    pub async fn connect_as(&self, id: &str) -> Conn {
        let ch = self.mux.open().expect("open a channel");
        let (reader, writer) = self.mux.split(ch);
        let mut conn = Conn { reader, writer };
        conn.send(&Request::Hello {
            version: PROTOCOL_VERSION,
            agent: "hostile test client".into(),
            client: Some(ClientId {
                id: id.into(),
                label: "hostile".into(),
            }),
        })
        .await;
        match conn.recv().await {
            Some(Response::Hello { version, .. }) => assert_eq!(version, PROTOCOL_VERSION),
            other => panic!(
                "the daemon did not answer Hello: {other:?}; bridge stderr: {}",
                self.stderr()
            ),
        }
        conn
    }

    /// Runs one invocation on a connection of its own (the daemon hands the connection to the
    /// session's host, which ends it after the invocation).
    pub async fn invoke(&self, spec: InvokeSpec) -> Ran {
        let mut conn = self.connect().await;
        conn.send(&Request::Invoke(spec)).await;
        let mut ran = Ran::default();
        loop {
            match conn.recv().await {
                Some(Response::Output { stream, data }) => match stream {
                    Stream::Stdout => ran.stdout.extend_from_slice(&data),
                    Stream::Stderr => ran.stderr.extend_from_slice(&data),
                },
                Some(Response::Exit(e)) => {
                    ran.exit = Some(Ok(e));
                    return ran;
                }
                Some(Response::Error(e)) => {
                    ran.exit = Some(Err(e));
                    return ran;
                }
                Some(Response::Started { .. }) | Some(Response::Notice(_)) => {}
                Some(other) => panic!("unexpected frame during an invocation: {other:?}"),
                None => return ran,
            }
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.mux.close();
        let _ = self.child.start_kill();
    }
}

/// One daemon connection over the link.
pub struct Conn {
    reader: ChannelReader,
    writer: ChannelWriter,
}

impl Conn {
    pub async fn send(&mut self, req: &Request) {
        let frame = tether_proto::encode(req).expect("encode");
        tokio::time::timeout(DEADLINE, self.writer.send(&frame))
            .await
            .expect("sending a frame timed out")
            .expect("send a frame");
    }

    /// The next frame, or `None` at the end of the connection.
    pub async fn recv(&mut self) -> Option<Response> {
        tokio::time::timeout(DEADLINE, async {
            let mut header = [0u8; FRAME_HEADER_LEN];
            if self.reader.read_exact(&mut header).await.is_err() {
                return None;
            }
            let len = tether_proto::frame_len(header).expect("frame length");
            let mut payload = vec![0u8; len];
            self.reader
                .read_exact(&mut payload)
                .await
                .expect("a whole frame");
            Some(tether_proto::decode(&payload).expect("decode a response"))
        })
        .await
        .expect("no frame from the daemon in time")
    }

    /// Sends `req` and returns the one reply.
    pub async fn request(&mut self, req: &Request) -> Response {
        self.send(req).await;
        self.recv()
            .await
            .unwrap_or_else(|| panic!("the connection ended without a reply to {req:?}"))
    }
}

/// What one invocation printed and how it ended (`None`: the connection just ended).
#[derive(Debug, Default)]
pub struct Ran {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: Option<Result<ExitInfo, ErrorInfo>>,
}

impl Ran {
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    /// The exit status, or a panic saying how it ended instead.
    #[track_caller]
    pub fn code(&self) -> i32 {
        match &self.exit {
            Some(Ok(e)) => e.code,
            other => panic!(
                "the invocation did not exit: {other:?}\nstdout: {}\nstderr: {}",
                self.out(),
                self.err()
            ),
        }
    }
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit: {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.exit,
            self.out(),
            self.err()
        )
    }
}
