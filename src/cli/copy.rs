//! `tether copy` (Copy-Item -ToSession/-FromSession): files and trees between this computer
//! and a session, over the session's own connection (issue 20, first part).
//!
//! A copy is two processes of tether's own binary joined by a pipe: `tether __copy send`
//! writes the stream ([`tether_copy`]) and `tether __copy recv` writes what it names, each file
//! under a temporary name first. One of them runs here; the other runs in the session's shell,
//! as the session's user, through an ordinary `tether invoke` (so a copy reaches whatever
//! `invoke` reaches, and reconnects as it does). The shell finds tether's program in
//! `$__tether_x`, set by the session host.

use super::error::{CliError, CliResult};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tether_client::ErrorKind;

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Sources, then the destination. A path in a session is `SESSION:PATH` (with
    /// `--computer`, `:PATH`); all sources are on one side and the destination on the other.
    #[arg(required = true, num_args = 2.., value_name = "PATH")]
    paths: Vec<String>,
    /// Copy directories and what they hold.
    #[arg(short = 'r', long)]
    recursive: bool,
    /// Keep modes and modification times.
    #[arg(short = 'p', long)]
    preserve: bool,
    /// A temporary session on this computer (`:PATH` names its paths).
    #[arg(long, value_name = "COMPUTER")]
    computer: Option<String>,
    /// Print a JSON summary instead of a line.
    #[arg(long)]
    json: bool,
}

/// The hidden side of a copy: `tether __copy send [-r] PATH...` or
/// `tether __copy recv [-p] [--json] --sources N --label L DEST`.
#[derive(Args, Debug)]
pub struct CopySideArgs {
    /// `send` or `recv`.
    side: String,
    #[arg(short = 'r')]
    recursive: bool,
    #[arg(short = 'p')]
    preserve: bool,
    #[arg(long)]
    json: bool,
    #[arg(long, default_value_t = 1)]
    sources: usize,
    /// What errors are about ("session web", "computer db1").
    #[arg(long, default_value = "this computer")]
    label: String,
    /// Show a progress bar on stderr (the side that runs on the user's computer).
    #[arg(long)]
    progress: bool,
    paths: Vec<PathBuf>,
}

/// Where the session side is.
struct Far {
    /// `-s NAME` or `--computer C`, as `invoke` takes them.
    target: Vec<String>,
    label: String,
}

/// Splits `S:PATH` (or `:PATH` with `--computer`) from a local path. A local path with a
/// colon can be written `./a:b`.
fn far_path(word: &str, computer: bool) -> Option<(&str, &str)> {
    if word.starts_with('/') || word.starts_with('.') {
        return None;
    }
    let (s, p) = word.split_once(':')?;
    if s.contains('/') || (computer != s.is_empty()) {
        return None;
    }
    Some((s, if p.is_empty() { "." } else { p }))
}

pub fn run(a: CopyArgs) -> CliResult {
    let computer = a.computer.is_some();
    let (dest, sources) = a
        .paths
        .split_last()
        .ok_or_else(|| CliError::usage("copy needs sources and a destination"))?;
    let far_dest = far_path(dest, computer);
    let far_sources: Vec<_> = sources.iter().map(|s| far_path(s, computer)).collect();
    let session = |s: &str| -> Far {
        match &a.computer {
            Some(c) => Far {
                target: vec!["--computer".into(), c.clone()],
                label: format!("computer {c}"),
            },
            None => Far {
                target: vec!["-s".into(), s.to_string()],
                label: format!("session {s}"),
            },
        }
    };
    let mine = std::env::current_exe()
        .map_err(|e| CliError::new(ErrorKind::Internal, format!("copy: {e}")))?;
    let flags = |preserve: bool, json: bool, n: usize, label: &str| {
        let mut v = Vec::new();
        if preserve {
            v.push("-p".to_string());
        }
        if json {
            v.push("--json".into());
        }
        v.extend([
            "--sources".into(),
            n.to_string(),
            "--label".into(),
            label.into(),
        ]);
        v
    };
    if let Some((s, path)) = far_dest {
        // Here to there.
        if far_sources.iter().any(Option::is_some) {
            return Err(CliError::usage(
                "copy: the sources are on this computer when the destination is in a session",
            ));
        }
        let far = session(s);
        let mut send = Command::new(&mine);
        send.args(["__copy", "send", "--label", "this computer"]);
        if show_progress(a.json) {
            send.arg("--progress");
        }
        if a.recursive {
            send.arg("-r");
        }
        send.arg("--").args(sources);
        let mut script = String::from("\"$__tether_x\" __copy recv");
        for f in flags(a.preserve, a.json, sources.len(), &far.label) {
            script.push(' ');
            script.push_str(&tether_transport::shell_quote(&f));
        }
        script.push_str(" -- ");
        script.push_str(&tether_transport::shell_quote(path));
        let recv = invoke(&mine, &far, &script);
        return pipe(send, recv);
    }
    // There to here.
    let Some(Some((s, _))) = far_sources.first() else {
        return Err(CliError::usage(
            "copy: name a session path (SESSION:PATH, or :PATH with --computer) on one side",
        ));
    };
    let s = s.to_string();
    let mut far_paths = Vec::new();
    for f in &far_sources {
        match f {
            Some((other, p)) if *other == s => far_paths.push(p.to_string()),
            _ => {
                return Err(CliError::usage(
                    "copy: all sources are in one session when the destination is here",
                ));
            }
        }
    }
    let far = session(&s);
    let mut script = format!(
        "\"$__tether_x\" __copy send --label {}",
        tether_transport::shell_quote(&far.label)
    );
    if a.recursive {
        script.push_str(" -r");
    }
    script.push_str(" --");
    for p in &far_paths {
        script.push(' ');
        script.push_str(&tether_transport::shell_quote(p));
    }
    let send = invoke(&mine, &far, &script);
    let mut recv = Command::new(&mine);
    recv.args(["__copy", "recv"])
        .args(flags(a.preserve, a.json, far_paths.len(), "this computer"));
    if show_progress(a.json) {
        recv.arg("--progress");
    }
    recv.arg("--").arg(dest);
    pipe(send, recv)
}

/// A progress bar for a person watching (stderr a terminal), never with `--json`.
fn show_progress(json: bool) -> bool {
    !json && std::io::IsTerminal::is_terminal(&std::io::stderr())
}

/// The last line a person sees.
fn summary(files: u64, dirs: u64, links: u64, bytes: u64) {
    eprintln!(
        "copied {files} files, {dirs} directories, {links} links, {}",
        indicatif::HumanBytes(bytes)
    );
}

/// A bar of bytes on stderr.
struct Bar(indicatif::ProgressBar);

impl Bar {
    fn new() -> Bar {
        let pb = indicatif::ProgressBar::new(0);
        let style = indicatif::ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        pb.set_style(style);
        Bar(pb)
    }
}

impl tether_copy::Progress for Bar {
    fn total(&self, bytes: u64) {
        self.0.set_length(bytes);
    }
    fn wrote(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

/// `tether invoke` of `script` in the far session, with this call's global flags.
fn invoke(mine: &Path, far: &Far, script: &str) -> Command {
    let mut c = Command::new(mine);
    if super::system_mode() {
        c.arg("--system");
    }
    let ssh = super::ssh_flags();
    if let Some(f) = &ssh.config {
        c.arg("--ssh-config").arg(f);
    }
    for o in &ssh.options {
        c.args(["--ssh-option", o]);
    }
    if let Some(t) = ssh.connect_timeout {
        c.arg("--connect-timeout")
            .arg(format!("{}ms", t.as_millis()));
    }
    c.arg("invoke").args(&far.target).arg("--").arg(script);
    c
}

/// Runs `from | to`; the copy's status is the receiver's, or the sender's when it alone failed.
/// Neither end of the pipe stays open here (a `Command` keeps the stdin it was given until it
/// is dropped): a receiver that dies makes the sender's next write fail, so it ends too.
fn pipe(mut from: Command, mut to: Command) -> CliResult {
    let spawn = |e: std::io::Error| CliError::new(ErrorKind::Internal, format!("copy: {e}"));
    let mut sender = from.stdout(Stdio::piped()).spawn().map_err(spawn)?;
    drop(from);
    let Some(out) = sender.stdout.take() else {
        return Err(CliError::new(ErrorKind::Internal, "copy: no pipe"));
    };
    let receiver = to.stdin(out).spawn().map_err(spawn);
    drop(to);
    let received = receiver.and_then(|mut r| r.wait().map_err(spawn));
    let sent = sender.wait().map_err(spawn)?;
    let received = received?;
    let code = |s: std::process::ExitStatus| s.code().unwrap_or(1);
    Ok(match (code(received), code(sent)) {
        (0, s) => s,
        (r, _) => r,
    })
}

/// The hidden sides, run by the two ends of a copy.
pub fn side(a: CopySideArgs) -> CliResult {
    let fail = |e: tether_copy::CopyError| {
        let kind = match e {
            tether_copy::CopyError::Usage(_) => ErrorKind::Usage,
            _ => ErrorKind::Internal,
        };
        CliError::new(kind, format!("{}: {e}", a.label))
    };
    match a.side.as_str() {
        "send" => {
            let paths: Vec<&Path> = a.paths.iter().map(PathBuf::as_path).collect();
            let bar = a.progress.then(|| {
                let b = Bar::new();
                b.0.set_length(tether_copy::total_bytes(&paths, a.recursive));
                b
            });
            let inc = |n: u64| {
                if let Some(b) = &bar {
                    b.0.inc(n);
                }
            };
            let opts = tether_copy::SendOptions {
                recursive: a.recursive,
                label: &a.label,
                total: true,
                progress: Some(&inc),
            };
            let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            let sent = tether_copy::send(&paths, opts, &mut out).map_err(fail)?;
            if let Some(b) = bar {
                b.0.finish_and_clear();
                summary(sent.files, sent.dirs, sent.links, sent.bytes);
            }
            Ok(i32::from(sent.problems > 0))
        }
        "recv" => {
            let [dest] = a.paths.as_slice() else {
                return Err(CliError::usage("__copy recv: one destination"));
            };
            let receiver = tether_copy::Receiver {
                dest: dest.clone(),
                sources: a.sources,
                preserve: a.preserve,
            };
            let mut input = std::io::BufReader::with_capacity(1 << 20, std::io::stdin().lock());
            let got = match a.progress {
                true => {
                    let bar = Bar::new();
                    let got = receiver.run_showing(&mut input, &bar);
                    bar.0.finish_and_clear();
                    got
                }
                false => receiver.run(&mut input),
            }
            .map_err(fail)?;
            for p in &got.problems {
                eprintln!("tether: {p}");
            }
            if a.json {
                let v = serde_json::json!({
                    "files": got.files, "directories": got.dirs, "links": got.links,
                    "bytes": got.bytes, "problems": got.problems,
                });
                println!("{v}");
            } else if a.progress {
                summary(got.files, got.dirs, got.links, got.bytes);
            }
            Ok(i32::from(!got.problems.is_empty()))
        }
        other => Err(CliError::usage(format!("__copy: unknown side {other:?}"))),
    }
}
