//! Using tether as a library: create a session, run commands that share state, read the output
//! and exit status, and time round trips. Run with `cargo run --release --example quickstart`.
//!
//! Uses `TETHER_HOME` like the CLI (default `~/.local/state/tether`), starting the daemon if
//! needed (it runs `tether daemon start`, so build the binary first: `cargo build --release`).

use std::time::Instant;
use tether_client::{Client, InvokeSpec, NewSession, Paths, RemoveSpec};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("TETHER_EXE").is_none() {
        // Find the tether binary built next to this example.
        let exe = std::env::current_exe()?;
        if let Some(dir) = exe.parent().and_then(|d| d.parent()) {
            // SAFETY: single-threaded runtime, before any other thread reads the environment.
            unsafe { std::env::set_var("TETHER_EXE", dir.join("tether")) };
        }
    }
    let paths = Paths::from_env()?;
    let mut client = Client::connect_or_start(&paths).await?;
    let name = format!("example-{}", std::process::id());
    client
        .new_session(NewSession {
            name: Some(name.clone()),
            ..Default::default()
        })
        .await?;

    let run = |script: &str| InvokeSpec {
        session: name.clone(),
        script: script.into(),
        ..Default::default()
    };
    client.run(run("greeting=hello; cd /tmp")).await?;
    let out = client
        .run(run("echo \"$greeting from $PWD\"; echo oops >&2; (exit 3)"))
        .await?;
    print!("stdout: {}", String::from_utf8_lossy(&out.stdout));
    print!("stderr: {}", String::from_utf8_lossy(&out.stderr));
    println!("exit status: {}", out.exit.code);

    let n = 500;
    let start = Instant::now();
    for _ in 0..n {
        client.run(run("true")).await?;
    }
    println!(
        "round trip: {:.1} µs per invocation ({n} runs)",
        start.elapsed().as_secs_f64() * 1e6 / n as f64
    );

    client
        .remove(RemoveSpec {
            sessions: vec![name],
            all: false,
        })
        .await?;
    Ok(())
}
