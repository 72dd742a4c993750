//! The byte pump between a mux channel and a local stream ([`crate::mux`]).

use super::{ChannelReader, ChannelWriter, MAX_DATA};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Copies both ways between a channel and a local stream until both directions end. Used by
/// the bridge (channel ⇄ daemon socket) and the client daemon (CLI socket ⇄ channel).
///
/// When the peer resets the channel (its reader went away: a relay whose CLI was killed),
/// nothing the local stream writes can be delivered, but what the peer sent before the reset
/// (an `Abandon`, the end of a command's stdin) must still reach it. A session host blocked
/// writing output would never read those, so its output is read and dropped until they are
/// delivered; then both ends close.
pub async fn splice<R, W>(reader: ChannelReader, mut writer: ChannelWriter, mut sr: R, mut sw: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let delivered = tokio::sync::Notify::new();
    let up = async {
        // Each read lands in a buffer of its own that becomes the frame's payload as it is:
        // nothing is zeroed, nothing copied (the mux writes it out with its header, `writev`).
        let reset = loop {
            let mut buf = Vec::with_capacity(MAX_DATA);
            match sr.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break false,
                Ok(n) => {
                    // A short read keeps only what it holds while it waits for the link.
                    if n < MAX_DATA / 2 {
                        buf.shrink_to_fit();
                    }
                    if writer.send_vec(buf).await.is_err() {
                        break true;
                    }
                }
            }
        };
        writer.eof();
        if reset {
            let mut sink = vec![0u8; MAX_DATA];
            loop {
                tokio::select! {
                    r = sr.read(&mut sink) => if matches!(r, Ok(0) | Err(_)) { break },
                    _ = delivered.notified() => break,
                }
            }
        }
    };
    let down = async {
        // Each chunk is written from the buffer it arrived in.
        let mut reader = reader;
        while let Some(chunk) = reader.chunk().await {
            if sw.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = sw.shutdown().await;
        // A permit is kept if `up` is not waiting yet.
        delivered.notify_one();
        reader
    };
    let (_, reader) = tokio::join!(up, down);
    drop(reader);
}
