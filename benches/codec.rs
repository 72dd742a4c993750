//! Frame codec (`tether_proto::encode`/`decode`) on the two frames every invocation carries: a
//! typical `Request::Invoke` and a `Response::Output` of 16 KiB (the hosts' read size). A guard
//! against regressions, not a goal: `cargo bench --bench codec`. (Under `cargo test
//! --all-targets` each benchmark runs once, so this cannot rot.)

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tether_proto::{
    FRAME_HEADER_LEN, InvokeSpec, Request, Response, Stream, decode, encode, output_data_len,
    output_frame_header,
};

fn invoke_request() -> Request {
    Request::Invoke(InvokeSpec {
        session: "build".into(),
        script: "cd ~/src/tether && cargo build --release 2>&1 | tail -n 20".into(),
        args: vec!["--locked".into()],
        acked: true,
        wait_timeout_ms: Some(240_000),
        ..Default::default()
    })
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    let req = invoke_request();
    let frame = encode(&req).expect("encode");
    g.bench_function("encode Request::Invoke", |b| {
        b.iter(|| encode(black_box(&req)).expect("encode"))
    });
    g.bench_function("decode Request::Invoke", |b| {
        b.iter(|| decode::<Request>(black_box(&frame[FRAME_HEADER_LEN..])).expect("decode"))
    });

    for size in [64usize, 16 << 10] {
        let out = Response::Output {
            stream: Stream::Stdout,
            data: vec![b'x'; size],
        };
        let frame = encode(&out).expect("encode");
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(
            BenchmarkId::new("encode Response::Output", size),
            &out,
            |b, out| b.iter(|| encode(black_box(out)).expect("encode")),
        );
        g.bench_with_input(
            BenchmarkId::new("decode Response::Output", size),
            &frame,
            |b, frame| {
                b.iter(|| {
                    decode::<Response>(black_box(&frame[FRAME_HEADER_LEN..])).expect("decode")
                })
            },
        );
        // The relay's path: header built without a copy, length read without decoding.
        g.bench_with_input(
            BenchmarkId::new("output_frame_header + output_data_len", size),
            &frame,
            |b, frame| {
                b.iter(|| {
                    let h = output_frame_header(Stream::Stdout, black_box(size));
                    assert_eq!(h.len() + size, frame.len());
                    output_data_len(black_box(&frame[FRAME_HEADER_LEN..])).expect("output frame")
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
