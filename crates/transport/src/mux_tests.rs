use super::*;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Two link ends joined by an in-memory pipe: (opener, acceptor, incoming channels).
fn pair() -> (Mux, Mux, mpsc::UnboundedReceiver<(Mux, Channel)>) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let (client, _) = Mux::start(ar, aw);
    let (server, accepted) = Mux::start(br, bw);
    (client, server, accepted)
}

async fn read_all(mut r: ChannelReader) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).await.unwrap();
    v
}

#[tokio::test]
async fn bytes_flow_both_ways_and_eof_is_per_direction() {
    let (client, _server, mut accepted) = pair();
    let (cr, mut cw) = client.split(client.open().unwrap());
    cw.send(b"ping").await.unwrap();
    cw.eof();
    let (m, ch) = accepted.recv().await.unwrap();
    let (sr, mut sw) = m.split(ch);
    assert_eq!(read_all(sr).await, b"ping");
    // The other direction is still open after the client's eof.
    sw.send(b"pong").await.unwrap();
    drop(sw);
    assert_eq!(read_all(cr).await, b"pong");
}

#[tokio::test]
async fn large_transfers_are_byte_exact_on_many_channels_at_once() {
    let (client, _server, mut accepted) = pair();
    tokio::spawn(async move {
        while let Some((m, ch)) = accepted.recv().await {
            // Echo server.
            tokio::spawn(async move {
                let (mut r, mut w) = m.split(ch);
                let mut buf = vec![0u8; 10_000];
                loop {
                    let n = r.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    w.send(&buf[..n]).await.unwrap();
                }
            });
        }
    });
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let ch = client.open().unwrap();
        let (r, mut w) = client.split(ch);
        let data: Vec<u8> = (0..(3 * WINDOW + 12345)).map(|k| (k as u8) ^ i).collect();
        let expect = data.clone();
        tasks.push(tokio::spawn(async move {
            let sender = tokio::spawn(async move {
                w.send(&data).await.unwrap();
                w.eof();
            });
            let got = read_all(r).await;
            sender.await.unwrap();
            assert_eq!(got.len(), expect.len());
            assert!(got == expect, "channel {i} corrupted");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn a_stalled_reader_blocks_only_its_own_channel() {
    let (client, _server, mut accepted) = pair();
    let (_r1, mut w1) = client.split(client.open().unwrap());
    let (_r2, mut w2) = client.split(client.open().unwrap());
    let (m, ch1) = accepted.recv().await.unwrap();
    let (_stalled, _w) = m.split(ch1);
    let (m, ch2) = accepted.recv().await.unwrap();
    let (r2, _w2s) = m.split(ch2);
    // Fill channel 1's window; its reader never reads.
    w1.send(&vec![1u8; WINDOW]).await.unwrap();
    let blocked = tokio::time::timeout(Duration::from_millis(200), w1.send(b"x")).await;
    assert!(blocked.is_err(), "a full window must make the sender wait");
    // Channel 2 still moves a window and more.
    let data = vec![2u8; WINDOW + 10];
    let sender = tokio::spawn(async move {
        w2.send(&data).await.unwrap();
        w2.eof();
    });
    let got = tokio::time::timeout(Duration::from_secs(10), read_all(r2))
        .await
        .expect("channel 2 stalled behind channel 1");
    assert_eq!(got.len(), WINDOW + 10);
    sender.await.unwrap();
}

#[tokio::test]
async fn dropping_a_reader_resets_the_peer_writer() {
    let (client, _server, mut accepted) = pair();
    let (_r, mut w) = client.split(client.open().unwrap());
    let (m, ch) = accepted.recv().await.unwrap();
    drop(m.split(ch));
    // The reset arrives; a send then fails instead of waiting forever for credit.
    let res = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if w.send(&[0u8; MAX_DATA]).await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(res.is_ok(), "the writer never noticed the reset");
}

/// A relay whose CLI was killed sends its last requests (the rest of a command's stdin, an
/// `Abandon`) and resets the channel while the local end (a session host) is blocked writing
/// output nobody reads: the splice drops that output so the host gets to read them all, then
/// closes both ends.
#[tokio::test]
async fn after_a_reset_the_requests_sent_before_it_still_reach_a_writer_that_was_blocked() {
    use tokio::io::AsyncWriteExt;
    let (client, _server, mut accepted) = pair();
    let (cr, mut cw) = client.split(client.open().unwrap());
    let (m, ch) = accepted.recv().await.unwrap();
    let (sr, sw) = m.split(ch);
    let (near, host) = tokio::net::UnixStream::pair().unwrap();
    let (near_r, near_w) = near.into_split();
    tokio::spawn(splice(sr, sw, near_r, near_w));
    // The host, as a session host's loop does, reads requests only once its write is done,
    // and writes far more than every buffer on the way holds.
    let (mut host_r, mut host_w) = host.into_split();
    let host = tokio::spawn(async move {
        let chunk = vec![7u8; MAX_DATA];
        for _ in 0..(4 * WINDOW / MAX_DATA + 64) {
            if host_w.write_all(&chunk).await.is_err() {
                break;
            }
        }
        // What came before the end (a reset, when the splice closes its end with output of
        // ours unread, as a peer gone for good does).
        let mut v = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = host_r.read(&mut buf).await {
            v.extend_from_slice(&buf[..n]);
        }
        v
    });
    // The peer reads a little, sends its last request, and goes without reading the rest.
    let mut cr = cr;
    let mut first = [0u8; 1024];
    cr.read_exact(&mut first).await.unwrap();
    // More than the host's socket holds: the splice blocks writing it until the host reads.
    let mut last = vec![b'r'; WINDOW / 2];
    last.extend_from_slice(b"abandon");
    cw.send(&last).await.unwrap();
    drop((cr, cw));
    let got = tokio::time::timeout(Duration::from_secs(20), host)
        .await
        .expect("the host stayed blocked writing and never read the request");
    let got = got.unwrap();
    assert_eq!(got.len(), last.len());
    assert!(got.ends_with(b"abandon"));
}

async fn feed_garbage(bytes: Vec<u8>) -> Mux {
    let (mut a, b) = tokio::io::duplex(1024 * 1024);
    let (br, bw) = tokio::io::split(b);
    let (m, _acc) = Mux::start(br, bw);
    a.write_all(&bytes).await.unwrap();
    drop(a);
    tokio::time::timeout(Duration::from_secs(5), m.closed())
        .await
        .expect("link did not end");
    m
}

#[tokio::test]
async fn bad_frames_end_the_link_without_panicking() {
    // Unknown kind.
    let m = feed_garbage(vec![9, 0, 0, 0, 1, 0, 0, 0, 0]).await;
    assert!(m.is_closed());
    assert!(m.open().is_err());
    // An oversized data frame is refused before anything is allocated.
    let mut big = vec![DATA, 0, 0, 0, 1];
    big.extend_from_slice(&u32::MAX.to_be_bytes());
    feed_garbage(big).await;
    // Truncated header.
    feed_garbage(vec![DATA, 0]).await;
}

#[tokio::test]
async fn a_peer_that_ignores_the_window_loses_that_channel() {
    let (mut a, b) = tokio::io::duplex(8 * 1024 * 1024);
    let (br, bw) = tokio::io::split(b);
    let (_m, mut acc) = Mux::start(br, bw);
    let mut bytes = vec![OPEN, 0, 0, 0, 7, 0, 0, 0, 0];
    let chunk = vec![0u8; MAX_FRAME as usize];
    for _ in 0..(WINDOW / chunk.len() + 2) {
        bytes.extend_from_slice(&[DATA, 0, 0, 0, 7]);
        bytes.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&chunk);
    }
    a.write_all(&bytes).await.unwrap();
    let (m, ch) = acc.recv().await.unwrap();
    // Not reading lets the unconsumed bytes pile up until the overrun resets the channel.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while m.channels() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "overrun not detected"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (mut r, _w) = m.split(ch);
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), r.read_to_end(&mut got)).await;
    assert!(
        got.len() <= WINDOW,
        "read {} bytes past the window",
        got.len()
    );
}

#[test]
fn random_bytes_never_panic() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut seed = 0x9e3779b97f4a7c15u64;
    for _ in 0..200 {
        let len = (seed % 200) as usize;
        let mut bytes = Vec::with_capacity(len);
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Keep kinds mostly valid so deeper paths run too.
            bytes.push(if bytes.len() % 9 == 0 {
                (seed % 6) as u8
            } else {
                (seed % 4) as u8
            });
        }
        rt.block_on(async { feed_garbage(bytes).await });
    }
}
