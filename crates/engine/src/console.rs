//! What the session's shell writes to its own stdout and stderr, outside any invocation.

use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The shell's own stdout and stderr. Between invocations nothing should appear there; what
/// does appear while the shell is dying (an EXIT trap runs after the invocation's redirections
/// were undone) belongs to the invocation that made it exit, and is delivered with it.
#[derive(Clone, Default)]
pub(crate) struct Console {
    /// Recent bytes per stream (stdout, stderr), bounded.
    pub recent: Arc<std::sync::Mutex<[Vec<u8>; 2]>>,
    /// How many of the two pipes have reached end-of-file.
    pub closed: Arc<tokio::sync::watch::Sender<u8>>,
}

const CONSOLE_LIMIT: usize = 1024 * 1024;

impl Console {
    pub(crate) fn watch<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
        &self,
        pipe: Option<R>,
        i: usize,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            if let Some(mut pipe) = pipe {
                let mut buf = vec![0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let mut recent = me.recent.lock().unwrap_or_else(|p| p.into_inner());
                    if recent[i].len() + n <= CONSOLE_LIMIT {
                        recent[i].extend_from_slice(&buf[..n]);
                    }
                }
            }
            me.closed.send_modify(|c| *c += 1);
        });
    }

    /// Forgets what came before an invocation.
    pub fn clear(&self) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent[0].clear();
        recent[1].clear();
    }

    /// Waits (bounded) until the dead shell's pipes are drained, then takes their contents.
    pub async fn take_final(&self) -> [Vec<u8>; 2] {
        let mut closed = self.closed.subscribe();
        let _ =
            tokio::time::timeout(Duration::from_millis(500), closed.wait_for(|c| *c >= 2)).await;
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        [
            std::mem::take(&mut recent[0]),
            std::mem::take(&mut recent[1]),
        ]
    }
}
