//! Moving frames between tether processes.
//!
//! [`FrameReader`] and [`FrameWriter`] carry `tether_proto` messages over any byte stream (a unix
//! socket today, an ssh child's stdio later). [`paths`] decides where sockets live and keeps them
//! private; [`unix`] binds and connects them and checks the peer's uid.
//!
//! This layer knows nothing of what messages mean.

mod bulk;
mod farside;
pub mod identity;
pub mod link;
pub mod mux;
pub mod native;
pub mod paths;
pub mod ssh;
pub mod stdin_read;
pub mod unix;
pub mod upgrade;

pub use bulk::{Message, read_into};
use serde::Serialize;
use tether_proto::{BULK_PREFIX_MAX, DecodeError, FRAME_HEADER_LEN, decode, encode, frame_len};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};

/// Quotes a string as one POSIX shell word. Inside single quotes nothing is special except `'`
/// itself, which becomes `'\''`. NUL bytes cannot exist in shell words; callers refuse them.
pub fn shell_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Reads one line of input from outside (a FIFO any process of the session can write to, a
/// remote's stderr), keeping at most `max` bytes of it: the rest of an over-long line is read
/// and dropped, so a writer that never sends a newline cannot make the reader grow without
/// bound. `buf` receives the line without its newline. Returns `None` at end of input,
/// otherwise whether the line was cut.
pub async fn read_line_bounded<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    use tokio::io::AsyncBufReadExt;
    buf.clear();
    let (mut any, mut cut) = (false, false);
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(any.then_some(cut));
        }
        any = true;
        let newline = avail.iter().position(|&b| b == b'\n');
        let line = &avail[..newline.unwrap_or(avail.len())];
        let room = max.saturating_sub(buf.len());
        cut |= line.len() > room;
        buf.extend_from_slice(&line[..line.len().min(room)]);
        let used = newline.map_or(avail.len(), |i| i + 1);
        r.consume(used);
        if newline.is_some() {
            return Ok(Some(cut));
        }
    }
}

/// Adds the path to an I/O error's message (`<path>: <error>`), keeping its kind: `map_err(at(p))`.
pub fn at(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> std::io::Error + '_ {
    move |e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Asks for a 1 MiB kernel buffer on a pipe (Linux; elsewhere, and for non-pipes, a no-op).
/// Bulk output crosses the ssh pipes in fewer, larger writes, so the processes on the path
/// wake each other less often.
pub fn widen_pipe<F: std::os::fd::AsFd>(fd: &F) {
    #[cfg(target_os = "linux")]
    {
        let _ = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
    }
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
}

/// Errors moving frames.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("connection closed in the middle of a frame")]
    Truncated,
}

impl TransportError {
    /// True when the peer went away (as opposed to sending garbage).
    pub fn is_disconnect(&self) -> bool {
        match self {
            TransportError::Truncated => true,
            TransportError::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionAborted
            ),
            TransportError::Decode(_) => false,
        }
    }
}

/// Reads length-prefixed frames. The size cap is checked before any buffer grows.
pub struct FrameReader<R> {
    inner: BufReader<R>,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(r: R) -> Self {
        FrameReader {
            inner: BufReader::with_capacity(16 * 1024, r),
            buf: Vec::new(),
        }
    }

    /// The underlying stream and any bytes already read past the last frame (for splicing the
    /// connection to another one without losing pipelined frames).
    pub fn into_parts(self) -> (R, Vec<u8>) {
        let buffered = self.inner.buffer().to_vec();
        (self.inner.into_inner(), buffered)
    }

    /// Next message, or `None` at a clean end of stream (between frames). The data of a bulk
    /// message ([`Message`]) is read straight into the message's own buffer.
    pub async fn read<T: Message>(&mut self) -> Result<Option<T>, TransportError> {
        let mut header = [0u8; FRAME_HEADER_LEN];
        let mut got = 0;
        while got < FRAME_HEADER_LEN {
            let n = self.inner.read(&mut header[got..]).await?;
            if n == 0 {
                return if got == 0 {
                    Ok(None)
                } else {
                    Err(TransportError::Truncated)
                };
            }
            got += n;
        }
        let len = frame_len(header)?;
        let truncated = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => TransportError::Truncated,
            _ => e.into(),
        };
        let mut head = [0u8; BULK_PREFIX_MAX];
        let h = len.min(BULK_PREFIX_MAX);
        self.inner
            .read_exact(&mut head[..h])
            .await
            .map_err(truncated)?;
        if let Some(start) = T::bulk_start(&head[..h], len) {
            let mut data = Vec::with_capacity(len - start);
            data.extend_from_slice(&head[start..h]);
            read_into(&mut self.inner, &mut data, len - h)
                .await
                .map_err(truncated)?;
            return match T::from_bulk(&head[..start], data) {
                Some(msg) => Ok(Some(msg)),
                None => Err(DecodeError::Malformed("bulk message".into()).into()),
            };
        }
        self.buf.clear();
        self.buf.extend_from_slice(&head[..h]);
        read_into(&mut self.inner, &mut self.buf, len - h)
            .await
            .map_err(truncated)?;
        let msg = decode(&self.buf)?;
        // Do not keep a huge buffer around after one big frame.
        if self.buf.capacity() > 1024 * 1024 {
            self.buf = Vec::new();
        }
        Ok(Some(msg))
    }
}

/// Writes length-prefixed frames. Writes are buffered; call [`FrameWriter::flush`] (or use
/// [`FrameWriter::send`]) when the peer should see them.
pub struct FrameWriter<W> {
    inner: BufWriter<W>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(w: W) -> Self {
        FrameWriter {
            inner: BufWriter::with_capacity(16 * 1024, w),
        }
    }

    /// The underlying stream, for what frames cannot carry (a descriptor, `send_with_fd`);
    /// anything queued must have been flushed first.
    pub fn get_ref(&self) -> &W {
        self.inner.get_ref()
    }

    /// The underlying stream; anything queued must have been flushed first.
    pub fn into_inner(self) -> W {
        self.inner.into_inner()
    }

    /// Queues an already encoded frame (header included) without flushing: a relay passes
    /// frames on without decoding and re-encoding them.
    pub async fn write_raw(&mut self, frame: &[u8]) -> Result<(), TransportError> {
        self.inner.write_all(frame).await?;
        Ok(())
    }

    /// Queues one message without flushing (for bursts of output).
    pub async fn feed<T: Serialize>(&mut self, msg: &T) -> Result<(), TransportError> {
        let frame = encode(msg)?;
        self.inner.write_all(&frame).await?;
        Ok(())
    }

    /// Writes an `Output` frame from a borrowed buffer (no copy into a message) and flushes.
    pub async fn send_output(
        &mut self,
        stream: tether_proto::Stream,
        data: &[u8],
    ) -> Result<(), TransportError> {
        let header = tether_proto::output_frame_header(stream, data.len());
        self.send_bulk(&header, data).await
    }

    /// Writes one `Request::Stdin` frame straight from `data` (no copy) and flushes.
    pub async fn send_stdin(&mut self, data: &[u8]) -> Result<(), TransportError> {
        let header = tether_proto::stdin_frame_header(data.len());
        self.send_bulk(&header, data).await
    }

    async fn send_bulk(&mut self, header: &[u8], data: &[u8]) -> Result<(), TransportError> {
        // Header and data in one writev: two writes would wake the reader twice, once for a
        // header it cannot use without the data behind it.
        let mut bufs = [std::io::IoSlice::new(header), std::io::IoSlice::new(data)];
        let mut slices = &mut bufs[..];
        while !slices.is_empty() {
            let n = self.inner.write_vectored(slices).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
            }
            std::io::IoSlice::advance_slices(&mut slices, n);
        }
        self.flush().await
    }

    /// Writes one message and flushes.
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), TransportError> {
        self.feed(msg).await?;
        self.flush().await
    }

    pub async fn flush(&mut self) -> Result<(), TransportError> {
        self.inner.flush().await?;
        Ok(())
    }

    /// Flushes and shuts down the write half.
    pub async fn shutdown(&mut self) -> Result<(), TransportError> {
        self.inner.shutdown().await?;
        Ok(())
    }
}

/// The protocol versions a listener accepts in a `Hello`, and the newest it speaks (which its
/// reply names): a daemon speaks exactly [`tether_proto::PROTOCOL_VERSION`], a session host
/// every host protocol from [`tether_proto::host::OLDEST_HOST_PROTOCOL`] on.
pub struct Speaks {
    pub who: &'static str,
    pub accepts: std::ops::RangeInclusive<u32>,
    pub newest: u32,
}

impl Speaks {
    pub fn daemon() -> Speaks {
        let v = tether_proto::PROTOCOL_VERSION;
        Speaks {
            who: "tether daemon",
            accepts: v..=v,
            newest: v,
        }
    }

    pub fn session_host() -> Speaks {
        Speaks {
            who: "session host",
            accepts: tether_proto::host::host_versions(),
            newest: tether_proto::host::HOST_PROTOCOL_VERSION,
        }
    }
}

/// Answers a connection's first frame, already read: a `Hello` of a version we accept gets our
/// `Hello` naming the newest we speak (queued, not flushed, so it travels with the first
/// reply); anything else gets a one-line error naming both versions, or nothing. Returns
/// whether the connection may go on.
pub async fn answer_hello<W: AsyncWrite + Unpin>(
    first: Result<Option<tether_proto::Request>, TransportError>,
    writer: &mut FrameWriter<W>,
    speaks: &Speaks,
) -> bool {
    use tether_proto::{ErrorInfo, ErrorKind, Request, Response};
    match first {
        Ok(Some(Request::Hello { version, .. })) if speaks.accepts.contains(&version) => {
            let hello = Response::Hello {
                version: speaks.newest,
                pid: std::process::id(),
            };
            writer.feed(&hello).await.is_ok()
        }
        Ok(Some(Request::Hello { version, .. })) => {
            let msg = upgrade::refusal_line(speaks.who, speaks.newest, version);
            let err = Response::Error(ErrorInfo::new(ErrorKind::Connection, msg));
            let _ = writer.send(&err).await;
            false
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_line_longer_than_the_bound_is_cut_and_the_next_line_is_whole() {
        let mut input = vec![b'x'; 1 << 20];
        input.extend_from_slice(b"\nshort\nlast without newline");
        let mut r = tokio::io::BufReader::with_capacity(4096, &input[..]);
        let mut line = Vec::new();
        let cut = super::read_line_bounded(&mut r, &mut line, 100)
            .await
            .unwrap();
        assert_eq!((cut, line.len()), (Some(true), 100));
        assert!(
            line.capacity() < 64 * 1024,
            "the buffer grew to {}",
            line.capacity()
        );
        let cut = super::read_line_bounded(&mut r, &mut line, 100)
            .await
            .unwrap();
        assert_eq!((cut, &line[..]), (Some(false), &b"short"[..]));
        let cut = super::read_line_bounded(&mut r, &mut line, 100)
            .await
            .unwrap();
        assert_eq!(
            (cut, &line[..]),
            (Some(false), &b"last without newline"[..])
        );
        assert_eq!(
            super::read_line_bounded(&mut r, &mut line, 100)
                .await
                .unwrap(),
            None
        );
    }

    #[test]
    fn an_io_error_names_its_path_and_keeps_its_kind() {
        let p = std::path::Path::new("/nonexistent/tether-test");
        let e = std::fs::read(p).map_err(super::at(p)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        assert!(
            e.to_string().starts_with("/nonexistent/tether-test: "),
            "{e}"
        );
    }

    use super::*;
    use tether_proto::{Request, Response, Stream};

    #[tokio::test]
    async fn frames_cross_a_pipe_and_eof_is_clean() {
        let (a, b) = tokio::io::duplex(64);
        let (_ar, aw) = tokio::io::split(a);
        let (br, _bw) = tokio::io::split(b);
        let mut w = FrameWriter::new(aw);
        let mut r = FrameReader::new(br);
        let writer = tokio::spawn(async move {
            w.send(&Request::Cancel).await.unwrap();
            w.send(&Response::Output {
                stream: Stream::Stdout,
                data: vec![7; 100_000],
            })
            .await
            .unwrap();
            w.shutdown().await.unwrap();
        });
        assert_eq!(r.read::<Request>().await.unwrap(), Some(Request::Cancel));
        match r.read::<Response>().await.unwrap() {
            Some(Response::Output { data, .. }) => assert_eq!(data.len(), 100_000),
            other => panic!("{other:?}"),
        }
        writer.await.unwrap();
        assert_eq!(r.read::<Request>().await.unwrap(), None);
    }

    #[tokio::test]
    async fn lying_length_is_refused_without_allocating() {
        let (a, b) = tokio::io::duplex(64);
        let (_ar, mut aw) = tokio::io::split(a);
        let (br, _bw) = tokio::io::split(b);
        aw.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let mut r = FrameReader::new(br);
        let err = r.read::<Request>().await.unwrap_err();
        assert!(matches!(
            err,
            TransportError::Decode(DecodeError::TooLarge(_))
        ));
    }

    #[tokio::test]
    async fn truncated_frame_is_reported() {
        let (a, b) = tokio::io::duplex(64);
        let (_ar, mut aw) = tokio::io::split(a);
        let (br, _bw) = tokio::io::split(b);
        aw.write_all(&[0, 0, 0, 9, 1]).await.unwrap();
        drop(aw);
        drop(_ar);
        let mut r = FrameReader::new(br);
        assert!(r.read::<Request>().await.unwrap_err().is_disconnect());
    }

    #[tokio::test]
    async fn a_different_protocol_version_gets_one_clear_line() {
        use tether_proto::{ErrorKind, PROTOCOL_VERSION, Response};
        let (a, b) = tokio::io::duplex(4096);
        let (_ar, aw) = tokio::io::split(a);
        let (br, _bw) = tokio::io::split(b);
        let mut w = FrameWriter::new(aw);
        let old = Request::Hello {
            version: PROTOCOL_VERSION + 1,
            agent: "x".into(),
            client: None,
        };
        assert!(!answer_hello(Ok(Some(old)), &mut w, &Speaks::daemon()).await);
        match FrameReader::new(br).read::<Response>().await.unwrap() {
            Some(Response::Error(e)) => {
                assert_eq!(e.kind, ErrorKind::Connection);
                assert!(e.message.contains("install the same tether version"), "{e}");
                assert!(!e.message.contains('\n'));
            }
            other => panic!("{other:?}"),
        }
        let ok = Request::Hello {
            version: PROTOCOL_VERSION,
            agent: "x".into(),
            client: None,
        };
        assert!(answer_hello(Ok(Some(ok)), &mut w, &Speaks::daemon()).await);
        assert!(!answer_hello(Ok(Some(Request::Cancel)), &mut w, &Speaks::daemon()).await);
    }

    /// A session host greets every host protocol it still speaks, and names its newest.
    #[tokio::test]
    async fn a_session_host_accepts_every_host_protocol_it_speaks() {
        use tether_proto::Response;
        use tether_proto::host::{HOST_PROTOCOL_VERSION, OLDEST_HOST_PROTOCOL};
        for (version, ok) in [
            (OLDEST_HOST_PROTOCOL, true),
            (HOST_PROTOCOL_VERSION, true),
            (OLDEST_HOST_PROTOCOL - 1, false),
            (HOST_PROTOCOL_VERSION + 1, false),
        ] {
            let (a, b) = tokio::io::duplex(4096);
            let (_ar, aw) = tokio::io::split(a);
            let (br, _bw) = tokio::io::split(b);
            let mut w = FrameWriter::new(aw);
            let hello = Request::Hello {
                version,
                agent: "daemon".into(),
                client: None,
            };
            assert_eq!(
                answer_hello(Ok(Some(hello)), &mut w, &Speaks::session_host()).await,
                ok,
                "version {version}"
            );
            w.flush().await.unwrap();
            let reply = FrameReader::new(br).read::<Response>().await.unwrap();
            match (ok, reply) {
                (true, Some(Response::Hello { version, .. })) => {
                    assert_eq!(version, HOST_PROTOCOL_VERSION)
                }
                (false, Some(Response::Error(_))) => {}
                (_, other) => panic!("version {version}: {other:?}"),
            }
        }
    }
}
