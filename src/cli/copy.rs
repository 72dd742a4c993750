//! `tether copy` (Copy-Item -ToSession/-FromSession): files and trees between this computer
//! and a session, over the session's own connection (issue 20).
//!
//! A copy has two sides: one sends the stream ([`tether_copy`]), the other writes what it
//! names, each file under a temporary name first, and answers (which partial files it has, so
//! a copy run again after an interruption resumes; what it wrote). The side on this computer
//! runs in this process; the other runs in the session's shell, as the session's user, as
//! `tether __copy send|recv` in an ordinary invocation whose stdin and stdout carry the two
//! directions (so a copy reaches whatever `invoke` reaches, and reconnects as it does), streamed
//! by a thread of this process ([`far`]). The shell finds tether's program in `$__tether_x`,
//! set by the session host.

mod far;
mod limit;

use super::error::{CliError, CliResult};
use clap::Args;
use far::{Far, FarSide, Place};
use std::path::{Path, PathBuf};
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
    /// At most this many bytes a second (`512K`, `10M`: powers of 1024), as `scp -l` or
    /// `rsync --bwlimit`.
    #[arg(long, value_name = "RATE", value_parser = tether_client::parse_size)]
    bwlimit: Option<u64>,
}

/// The far side of a copy: `tether __copy send [-r] --label L PATH...` or
/// `tether __copy recv [-p] --sources N --label L DEST`.
#[derive(Args, Debug)]
pub struct CopySideArgs {
    /// `send` or `recv`.
    side: String,
    #[arg(short = 'r')]
    recursive: bool,
    #[arg(short = 'p')]
    preserve: bool,
    #[arg(long, default_value_t = 1)]
    sources: usize,
    /// What errors are about ("session web", "computer db1").
    #[arg(long, default_value = "this computer")]
    label: String,
    paths: Vec<PathBuf>,
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
        Far::new(match &a.computer {
            Some(c) => Place::Computer(c.clone()),
            None => Place::Session(s.to_string()),
        })
    };
    if let Some((s, path)) = far_dest {
        // Here to there.
        if far_sources.iter().any(Option::is_some) {
            return Err(CliError::usage(
                "copy: the sources are on this computer when the destination is in a session",
            ));
        }
        let far = session(s);
        let mut script = String::from("\"$__tether_x\" __copy recv");
        let mut flags = vec![
            "--sources".to_string(),
            sources.len().to_string(),
            "--label".into(),
            far.label.clone(),
        ];
        if a.preserve {
            flags.push("-p".into());
        }
        for f in flags {
            script.push(' ');
            script.push_str(&tether_transport::shell_quote(&f));
        }
        script.push_str(" -- ");
        script.push_str(&tether_transport::shell_quote(path));
        let paths: Vec<PathBuf> = sources.iter().map(PathBuf::from).collect();
        return push(&paths, &a, far::start(&far, script)?);
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
    let receiver = tether_copy::Receiver {
        dest: PathBuf::from(dest),
        sources: far_paths.len(),
        preserve: a.preserve,
        label: HERE.into(),
    };
    // A destination that cannot be is said before the far side starts.
    if let Err(e) = receiver.check() {
        return local_error(e, 0);
    }
    pull(&receiver, &a, far::start(&far, script)?)
}

/// What the side on this computer calls itself in errors.
const HERE: &str = "this computer";

/// Sends `paths` to the far receiver, and prints what it wrote.
fn push(paths: &[PathBuf], a: &CopyArgs, far: FarSide) -> CliResult {
    let FarSide { to, from, driver } = far;
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let bar = show_progress(a.json).then(|| {
        let b = Bar::new();
        b.0.set_length(tether_copy::total_bytes(&refs, a.recursive));
        b
    });
    let inc = |n: u64| {
        if let Some(b) = &bar {
            b.0.inc(n);
        }
    };
    let opts = tether_copy::SendOptions {
        recursive: a.recursive,
        label: HERE,
        // The far receiver shows no bar (our own counts what we send): walking the tree
        // twice would cost a `stat` per file for nothing.
        total: false,
        progress: Some(&inc),
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 20, limit::Limited::new(to, a.bwlimit));
    let mut replies = std::io::BufReader::new(from);
    let sent = tether_copy::send(&refs, opts, Some(&mut replies), &mut out);
    drop((out, replies));
    if let Some(b) = &bar {
        b.0.finish_and_clear();
    }
    // Our ends close here: the far side sees the end of its stdin whatever happened.
    let far = driver.wait()?;
    let sent = match sent {
        Ok(sent) => sent,
        Err(e) => return local_error(e, far),
    };
    let got = sent.received.unwrap_or_else(|| tether_copy::Received {
        files: sent.files,
        dirs: sent.dirs,
        links: sent.links,
        bytes: sent.bytes,
        resumed: sent.resumed,
        problems: Vec::new(),
    });
    report(&got, a.json, bar.is_some());
    Ok(match far {
        0 => i32::from(sent.problems > 0 || !got.problems.is_empty()),
        code => code,
    })
}

/// Receives from the far sender into `receiver`'s destination, and prints what it wrote.
fn pull(receiver: &tether_copy::Receiver, a: &CopyArgs, far: FarSide) -> CliResult {
    let FarSide { to, from, driver } = far;
    let mut input =
        std::io::BufReader::with_capacity(1 << 20, limit::Limited::new(from, a.bwlimit));
    let mut replies = to;
    let got = match show_progress(a.json) {
        true => {
            let bar = Bar::new();
            let got = receiver.run_showing(&mut input, Some(&mut replies), &bar);
            bar.0.finish_and_clear();
            got
        }
        false => receiver.run(&mut input, Some(&mut replies)),
    };
    drop((input, replies));
    let far = driver.wait()?;
    let got = match got {
        Ok(got) => got,
        Err(e) => return local_error(e, far),
    };
    for p in &got.problems {
        errln!("tether: {p}");
    }
    report(&got, a.json, show_progress(a.json));
    Ok(match far {
        0 => i32::from(!got.problems.is_empty()),
        code => code,
    })
}

/// This side's error. When the far side went away it said why itself (or `invoke` did), and
/// its status is the copy's.
fn local_error(e: tether_copy::CopyError, far: i32) -> CliResult {
    use tether_copy::CopyError;
    let kind = match e {
        CopyError::Usage(_) => ErrorKind::Usage,
        _ => ErrorKind::Internal,
    };
    if matches!(e, CopyError::Closed(_)) && far != 0 {
        return Ok(far);
    }
    Err(CliError::new(kind, format!("{HERE}: {e}")))
}

/// The summary: JSON, or one line for a person watching.
fn report(got: &tether_copy::Received, json: bool, watching: bool) {
    if json {
        let v = serde_json::json!({
            "files": got.files, "directories": got.dirs, "links": got.links,
            "bytes": got.bytes, "sent": got.bytes - got.resumed, "resumed": got.resumed,
            "problems": got.problems,
        });
        outln!("{v}");
    } else if watching {
        summary(got);
    }
}

/// A progress bar for a person watching (stderr a terminal), never with `--json`.
fn show_progress(json: bool) -> bool {
    !json && std::io::IsTerminal::is_terminal(&std::io::stderr())
}

/// The last line a person sees.
fn summary(got: &tether_copy::Received) {
    let resumed = match got.resumed {
        0 => String::new(),
        n => format!(" ({} of it resumed)", indicatif::HumanBytes(n)),
    };
    errln!(
        "copied {} files, {} directories, {} links, {}{resumed}",
        got.files,
        got.dirs,
        got.links,
        indicatif::HumanBytes(got.bytes)
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

/// The far side of a copy, run in the session's shell: the stream and the answers go through
/// its stdin and stdout.
pub fn side(a: CopySideArgs) -> CliResult {
    let fail = |e: tether_copy::CopyError| match e {
        // The side on the user's computer went away: it (or its `invoke`) says why, and
        // nobody may be reading our stderr any more.
        tether_copy::CopyError::Closed(_) => Ok(1),
        tether_copy::CopyError::Usage(_) => {
            Err(CliError::new(ErrorKind::Usage, format!("{}: {e}", a.label)))
        }
        _ => Err(CliError::new(
            ErrorKind::Internal,
            format!("{}: {e}", a.label),
        )),
    };
    // Our stdin and stdout are the invocation's FIFOs: widened, the host moves a megabyte
    // per wake-up of ours instead of 64 KiB.
    tether_transport::widen_pipe(&std::io::stdin());
    tether_transport::widen_pipe(&std::io::stdout());
    let mut stdin = std::io::BufReader::with_capacity(1 << 20, std::io::stdin().lock());
    let mut stdout = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    match a.side.as_str() {
        "send" => {
            let paths: Vec<&Path> = a.paths.iter().map(PathBuf::as_path).collect();
            let opts = tether_copy::SendOptions {
                recursive: a.recursive,
                label: &a.label,
                total: true,
                progress: None,
            };
            match tether_copy::send(&paths, opts, Some(&mut stdin), &mut stdout) {
                Ok(sent) => Ok(i32::from(sent.problems > 0)),
                Err(e) => fail(e),
            }
        }
        "recv" => {
            let [dest] = a.paths.as_slice() else {
                return Err(CliError::usage("__copy recv: one destination"));
            };
            let receiver = tether_copy::Receiver {
                dest: dest.clone(),
                sources: a.sources,
                preserve: a.preserve,
                label: a.label.clone(),
            };
            let got = match receiver.run(&mut stdin, Some(&mut stdout)) {
                Ok(got) => got,
                Err(e) => return fail(e),
            };
            for p in &got.problems {
                errln!("tether: {p}");
            }
            Ok(i32::from(!got.problems.is_empty()))
        }
        other => Err(CliError::usage(format!("__copy: unknown side {other:?}"))),
    }
}
