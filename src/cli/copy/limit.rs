//! `copy --bwlimit`: at most so many bytes a second through this side's end of the stream, as
//! `scp -l` and `rsync --bwlimit` offer, for a copy that must not take a shared link's whole
//! width. The limit is kept on average since the copy started, paced after each read or write
//! (1 MiB at most, the stream's buffers).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

pub(super) struct Limited<T> {
    inner: T,
    /// Bytes a second; `None`: no limit.
    rate: Option<u64>,
    start: Instant,
    moved: u64,
}

impl<T> Limited<T> {
    pub(super) fn new(inner: T, rate: Option<u64>) -> Limited<T> {
        Limited {
            inner,
            rate,
            start: Instant::now(),
            moved: 0,
        }
    }

    /// Sleeps until `n` more bytes are within the rate.
    fn pace(&mut self, n: usize) {
        let Some(rate) = self.rate.filter(|r| *r > 0) else {
            return;
        };
        self.moved += n as u64;
        let due = Duration::from_secs_f64(self.moved as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(self.start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

impl<W: Write> Write for Limited<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pace(n);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pace(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_go_through_whole_and_no_faster_than_the_rate() {
        let data = vec![5u8; 300 * 1024];
        let started = Instant::now();
        let mut w = Limited::new(Vec::new(), Some(1 << 20));
        for chunk in data.chunks(64 * 1024) {
            w.write_all(chunk).unwrap();
        }
        // 300 KiB at 1 MiB/s: not before 0.29 s (a lower bound: sleeping never ends early).
        assert!(started.elapsed() >= Duration::from_millis(290));
        assert_eq!(w.inner, data);
        let mut r = Limited::new(&data[..], None);
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
    }
}
