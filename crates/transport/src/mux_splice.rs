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
        let mut buf = vec![0u8; MAX_DATA];
        loop {
            match sr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if writer.send(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        writer.eof();
    };
    let down = async {
        let mut reader = reader;
        let _ = tokio::io::copy_buf(
            &mut tokio::io::BufReader::with_capacity(MAX_DATA, &mut reader),
            &mut sw,
        )
        .await;
        let _ = sw.shutdown().await;
        reader
    };
    let (_, reader) = tokio::join!(up, down);
    drop(reader);
}
