//! A child job's connections: it is a client of this same daemon, through its own socket, as
//! a CLI would be (so local sessions, temporary ones and other computers, with the relay's
//! reconnection, work exactly as for `invoke`).

use tether_proto::{ErrorInfo, ErrorKind, PROTOCOL_VERSION, Request, Response};
use tether_transport::paths::Paths;
use tether_transport::{FrameReader, FrameWriter};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

type Reader = FrameReader<OwnedReadHalf>;
type Writer = FrameWriter<OwnedWriteHalf>;

fn lost(why: impl std::fmt::Display) -> ErrorInfo {
    ErrorInfo::new(ErrorKind::Lost, why.to_string())
}

/// Connects to the daemon and sends `Hello` and `first` in one write; returns once the
/// daemon's `Hello` is read.
async fn connect(paths: &Paths, first: &Request) -> Result<(Reader, Writer), ErrorInfo> {
    let stream = UnixStream::connect(paths.daemon_socket())
        .await
        .map_err(|e| {
            ErrorInfo::new(
                ErrorKind::Connection,
                format!("cannot reach this client's daemon: {e}"),
            )
        })?;
    let (r, w) = stream.into_split();
    let mut writer = FrameWriter::new(w);
    let hello = Request::Hello {
        version: PROTOCOL_VERSION,
        agent: format!("tether-jobs/{}", env!("CARGO_PKG_VERSION")),
        client: None,
    };
    writer.feed(&hello).await.map_err(lost)?;
    writer.send(first).await.map_err(lost)?;
    let mut reader = FrameReader::new(r);
    match reader.read::<Response>().await {
        Ok(Some(Response::Hello { .. })) => Ok((reader, writer)),
        Ok(Some(Response::Error(e))) => Err(e),
        Ok(other) => Err(lost(format!("unexpected reply {other:?}"))),
        Err(e) => Err(lost(e)),
    }
}

/// The answer to a request already sent.
async fn answer(reader: &mut Reader) -> Result<Response, ErrorInfo> {
    match reader.read::<Response>().await {
        Ok(Some(Response::Error(e))) => Err(e),
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(lost("the daemon closed the connection")),
        Err(e) => Err(lost(e)),
    }
}

/// A command's output stream (`Invoke`, `Resume` or `Receive`), once it has started.
pub(crate) struct Feed {
    reader: Reader,
    /// The output byte the stream starts at.
    pub from: u64,
    /// The instance id of the session it runs in (on its computer).
    pub session: String,
    tx: mpsc::UnboundedSender<Request>,
}

impl Feed {
    pub async fn open(paths: &Paths, req: Request) -> Result<Feed, ErrorInfo> {
        let (mut reader, writer) = connect(paths, &req).await?;
        let (from, session) = match answer(&mut reader).await? {
            Response::Started { session, from, .. } => (from, session),
            other => return Err(lost(format!("unexpected reply {other:?}"))),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(pump(writer, rx));
        Ok(Feed {
            reader,
            from,
            session,
            tx,
        })
    }

    /// The next frame: output, a notice or the exit; an error frame or the end of the
    /// connection is an `Err`.
    pub async fn next(&mut self) -> Result<Response, ErrorInfo> {
        answer(&mut self.reader).await.and_then(|r| match r {
            Response::Hello { .. } | Response::Started { .. } => {
                Err(lost(format!("unexpected frame {r:?}")))
            }
            r => Ok(r),
        })
    }

    /// The host may forget the output before byte `seq` (past the end: the exit too).
    pub fn ack(&self, seq: u64) {
        let _ = self.tx.send(Request::Ack(seq));
    }

    /// For `job stop` and for leaving.
    pub fn control(&self) -> mpsc::UnboundedSender<Request> {
        self.tx.clone()
    }
}

/// Writes the child's frames (acknowledgements, Ctrl-C) until every sender is gone. Only the
/// newest of several queued acknowledgements is sent.
async fn pump(mut w: Writer, mut rx: mpsc::UnboundedReceiver<Request>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(r) = rx.try_recv() {
            if let (Some(Request::Ack(_)), Request::Ack(_)) = (batch.last(), &r) {
                batch.pop();
            }
            batch.push(r);
        }
        for r in &batch {
            if w.feed(r).await.is_err() {
                return;
            }
        }
        if w.flush().await.is_err() {
            return;
        }
    }
}

/// Requests and answers on one connection, made again when it breaks.
pub(crate) struct Conn {
    paths: Paths,
    link: Option<(Reader, Writer)>,
}

impl Conn {
    pub fn new(paths: Paths) -> Conn {
        Conn { paths, link: None }
    }

    pub async fn call(&mut self, req: Request) -> Result<Response, ErrorInfo> {
        let got = match self.link.as_mut() {
            Some((r, w)) => match w.send(&req).await {
                Ok(()) => answer(r).await,
                Err(e) => Err(lost(e)),
            },
            None => match connect(&self.paths, &req).await {
                Ok((mut r, w)) => {
                    let got = answer(&mut r).await;
                    self.link = Some((r, w));
                    got
                }
                Err(e) => return Err(e),
            },
        };
        if got
            .as_ref()
            .is_err_and(|e| matches!(e.kind, ErrorKind::Lost | ErrorKind::Connection))
        {
            self.link = None;
        }
        got
    }
}
