//! A session's kept output (`tether_engine` spool, memory tier): append N chunks as a command's
//! output arrives, read them back as a client receives them, and forget them as the client
//! acknowledges. A guard against regressions, not a goal: `cargo bench --bench spool`. (Under
//! `cargo test --all-targets` each benchmark runs once, so this cannot rot.)

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tether_engine::bench_support::Spool;
use tether_proto::Stream;

/// Chunk size: what a host reads from the command's FIFO at once.
const CHUNK: usize = 16 << 10;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("spool");
    let data = vec![b'x'; CHUNK];
    for n in [16usize, 256] {
        g.throughput(Throughput::Bytes((n * CHUNK) as u64));
        g.bench_with_input(BenchmarkId::new("append N chunks", n), &n, |b, &n| {
            b.iter(|| {
                let mut s = Spool::new(None);
                for i in 0..n {
                    let stream = if i % 8 == 7 {
                        Stream::Stderr
                    } else {
                        Stream::Stdout
                    };
                    s.push(stream, black_box(&data));
                }
                s
            })
        });
        g.bench_with_input(
            BenchmarkId::new("append, read back and acknowledge N chunks", n),
            &n,
            |b, &n| {
                b.iter(|| {
                    let mut s = Spool::new(None);
                    for _ in 0..n {
                        s.push(Stream::Stdout, black_box(&data));
                    }
                    let mut got = 0;
                    while !s.is_empty() {
                        let batch = s.read(0, 4 * CHUNK).expect("read");
                        let len: usize = batch.iter().map(|(_, d)| d.len()).sum();
                        got += len;
                        s.pop_front(len);
                    }
                    assert_eq!(got, n * CHUNK);
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
