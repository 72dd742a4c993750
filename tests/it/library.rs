//! The client library without the CLI: `Client::run` keeps the connection the daemon handed to
//! the session's host and reuses it, and a reused connection never reaches a session that was
//! removed (a new session of the same name gets the call instead).

use crate::common::Home;
use std::process::Command;
use tether_client::{Client, InvokeSpec, NewSession, Paths, RemoveSpec};

const EXE: &str = env!("CARGO_BIN_EXE_tether");

fn spec(session: &str, script: &str) -> InvokeSpec {
    InvokeSpec {
        session: session.into(),
        script: script.into(),
        ..Default::default()
    }
}

#[test]
fn run_reuses_its_connection_and_never_reaches_a_removed_session() {
    let h = Home::new();
    // The daemon is started here rather than by `connect_or_start`, which runs `TETHER_EXE` (or
    // `tether` on PATH): setting TETHER_EXE would change the environment of every test sharing
    // this process.
    h.run(&["daemon", "start", "--quiet"]).success();
    let home = h.path().to_path_buf();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let paths = Paths::for_home(home.clone());
    rt.block_on(async {
        let mut client = Client::connect_or_start(&paths).await.unwrap();
        let new = |name: &str| NewSession {
            name: Some(name.into()),
            ..Default::default()
        };
        client.new_session(new("lib")).await.unwrap();
        client.run(spec("lib", "x=1; cd /")).await.unwrap();
        for i in 0..20 {
            let out = client
                .run(spec("lib", "echo \"$x$PWD\"; echo e >&2; (exit 3)"))
                .await
                .unwrap();
            assert_eq!(out.stdout, b"1/\n", "run {i}");
            assert_eq!(out.stderr, b"e\n", "run {i}");
            assert_eq!(out.exit.code, 3, "run {i}");
        }
        client
            .remove(RemoveSpec {
                sessions: vec!["lib".into()],
                all: false,
            })
            .await
            .unwrap();
        let gone = client.run(spec("lib", "true")).await;
        assert!(gone.is_err(), "a removed session must not run anything");
        client.new_session(new("lib")).await.unwrap();
        let out = client
            .run(spec("lib", "echo \"${x:-fresh}\""))
            .await
            .unwrap();
        assert_eq!(
            out.stdout, b"fresh\n",
            "the call went to the old session's state"
        );
        client
            .remove(RemoveSpec {
                sessions: vec![],
                all: true,
            })
            .await
            .unwrap();
    });
    let st = Command::new(EXE)
        .args(["daemon", "stop"])
        .env("TETHER_HOME", &home)
        .output()
        .unwrap();
    assert!(st.status.success());
}

/// Everything a command printed, until its exit.
async fn collect(inv: &mut tether_client::Invocation) -> (Vec<u8>, i32) {
    let mut out = Vec::new();
    loop {
        match inv.next().await.unwrap() {
            tether_client::Event::Output { data, .. } => out.extend(data),
            tether_client::Event::Exit(e) => return (out, e.code),
            _ => {}
        }
    }
}

/// A program that hands one stdin to invocations in turn loses nothing: once a command has
/// exited, the thread that forwarded stdin to it reads no more (it was blocked reading, and
/// would have swallowed the next invocation's first bytes).
#[test]
fn stdin_forwarded_to_a_finished_command_is_not_swallowed() {
    use std::io::Write;
    let h = Home::new();
    h.run(&["daemon", "start", "--quiet"]).success();
    h.run(&["new", "--name", "fw"]).success();
    let home = h.path().to_path_buf();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (r, w) = nix::unistd::pipe().unwrap();
    let mut w = std::fs::File::from(w);
    let with_stdin = |script: &str| InvokeSpec {
        stdin: true,
        ..spec("fw", script)
    };
    rt.block_on(async {
        let client = Client::connect(&Paths::for_home(home.clone()))
            .await
            .unwrap();
        let mut first = client.invoke(with_stdin("head -c 5")).await.unwrap();
        first.forward_stdin(r.try_clone().unwrap());
        w.write_all(b"hello").unwrap();
        assert_eq!(collect(&mut first).await, (b"hello".to_vec(), 0));
        // The first thread is still there; these bytes are the second command's.
        w.write_all(b"world\n").unwrap();
        drop(first);
        let mut second = client.invoke(with_stdin("cat")).await.unwrap();
        second.forward_stdin(r.try_clone().unwrap());
        drop(w);
        assert_eq!(collect(&mut second).await, (b"world\n".to_vec(), 0));
    });
    h.run(&["daemon", "stop"]).success();
}
