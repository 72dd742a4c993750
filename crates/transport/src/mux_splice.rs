//! The byte pump between a mux channel and a local stream ([`crate::mux`]).

use super::{ChannelReader, ChannelWriter, MAX_DATA};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Copies both ways between a channel and a local stream until both directions end. Used by
/// the bridge (channel ⇄ daemon socket) and the client daemon (CLI socket ⇄ channel).
pub async fn splice<R, W>(reader: ChannelReader, mut writer: ChannelWriter, mut sr: R, mut sw: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let up = async {
        // Each read lands in a buffer of its own that becomes the frame's payload as it is:
        // nothing is zeroed, nothing copied (the mux writes it out with its header, `writev`).
        loop {
            let mut buf = Vec::with_capacity(MAX_DATA);
            match sr.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    // A short read keeps only what it holds while it waits for the link.
                    if n < MAX_DATA / 2 {
                        buf.shrink_to_fit();
                    }
                    if writer.send_vec(buf).await.is_err() {
                        break;
                    }
                }
            }
        }
        writer.eof();
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
        reader
    };
    let (_, reader) = tokio::join!(up, down);
    drop(reader);
}
