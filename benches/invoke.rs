//! Invoke round trip on an open local session: at library level, and as a whole CLI call, beside
//! `bash -c true` measured in the same run. `cargo bench --bench invoke`; the figures go to
//! BENCHMARKS.md. (Under `cargo test --all-targets` each benchmark runs once, so this cannot rot.)

use criterion::{Criterion, criterion_group, criterion_main};
use std::process::{Command, Stdio};
use tether_client::{Client, InvokeSpec, NewSession, Paths};

const EXE: &str = env!("CARGO_BIN_EXE_tether");

fn bench(c: &mut Criterion) {
    let home = tempfile::tempdir().expect("temp dir");
    // SAFETY: set before any thread that reads the environment is started.
    unsafe {
        std::env::set_var("TETHER_HOME", home.path());
        std::env::set_var("TETHER_EXE", EXE);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let paths = Paths::from_env().expect("paths");
    let client = rt.block_on(async {
        let mut client = Client::connect_or_start(&paths).await.expect("daemon");
        client
            .new_session(NewSession {
                name: Some("bench".into()),
                ..Default::default()
            })
            .await
            .expect("session");
        client
    });
    let spec = InvokeSpec {
        session: "bench".into(),
        script: "true".into(),
        ..Default::default()
    };

    let mut g = c.benchmark_group("invoke_roundtrip");
    g.bench_function("library: run `true` in an open session", |b| {
        b.iter(|| {
            let out = rt.block_on(client.run(spec.clone())).expect("run");
            assert_eq!(out.exit.code, 0);
        })
    });
    g.bench_function("cli: tether invoke -s bench true", |b| {
        b.iter(|| {
            let st = Command::new(EXE)
                .args(["invoke", "-s", "bench", "true"])
                .stdin(Stdio::null())
                .status()
                .expect("tether");
            assert!(st.success());
        })
    });
    g.bench_function("peer: bash -c true", |b| {
        b.iter(|| {
            let st = Command::new("bash")
                .args(["-c", "true"])
                .status()
                .expect("bash");
            assert!(st.success());
        })
    });
    g.finish();

    let _ = Command::new(EXE).args(["remove", "--all"]).status();
    let _ = Command::new(EXE)
        .args(["daemon", "stop"])
        .stdout(Stdio::null())
        .status();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
