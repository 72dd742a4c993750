//! The previous release's `tether`, built from git, for the adoption tests (`adopt.rs`): a
//! daemon of this build must adopt the sessions that the previous one's daemon started.
//!
//! The commit is `TETHER_ADOPT_FROM` if set, else the last commit of the previous host
//! protocol: the parent of the newest commit that changed `HOST_PROTOCOL_VERSION`
//! (`crates/proto/src/host.rs`), so that hosts of an older protocol are what this build must
//! adopt. Its tree is
//! extracted with `git archive` into `<target>/previous/src-<hash>` and built there with
//! `cargo build --locked --bin tether` and a target directory of its own shared by every such
//! build (`<target>/previous/target`, so the next commit's build is incremental). The binary
//! is kept as `<target>/previous/tether-<hash>`; a lock file makes test processes take turns.
//!
//! Without the repository's history (a shallow clone, a commit not there) the test fails and
//! says so: it never passes without having run.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long building the previous commit may take (a cold build on two cores takes minutes).
const BUILD_DEADLINE: Duration = Duration::from_secs(20 * 60);

/// The previous release's binary.
pub struct Previous {
    pub commit: String,
    pub bin: PathBuf,
}

/// Runs git in `repo`; its trimmed stdout, or why it failed.
fn git(repo: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[track_caller]
fn needs_history(why: &str) -> ! {
    panic!(
        "the adoption test builds the previous commit of tether from git and needs the \
         repository's history ({why}); fetch it (git fetch --unshallow) or name a commit in \
         TETHER_ADOPT_FROM"
    )
}

/// The commit to build: `TETHER_ADOPT_FROM`, else the last commit of the previous host protocol.
fn base_commit(repo: &Path) -> String {
    if git(repo, &["rev-parse", "--is-shallow-repository"]).as_deref() == Ok("true") {
        needs_history(&format!("{} is a shallow clone", repo.display()));
    }
    let wanted = match std::env::var("TETHER_ADOPT_FROM") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => {
            // The last commit that spoke the host protocol before ours: the parent of the
            // newest commit that changed its version.
            let args = [
                "log",
                "-1",
                "--format=%H",
                "-G",
                "pub const HOST_PROTOCOL_VERSION",
                "HEAD",
                "--",
                "crates/proto/src/host.rs",
            ];
            match git(repo, &args) {
                Ok(c) if !c.is_empty() => format!("{c}~1"),
                Ok(_) => needs_history("no commit changed the host protocol's version"),
                Err(e) => needs_history(&e),
            }
        }
    };
    match git(
        repo,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{wanted}^{{commit}}"),
        ],
    ) {
        Ok(c) if c.len() == 40 => c,
        _ => needs_history(&format!("commit {wanted} is not in the repository")),
    }
}

/// The previous release's `tether`, built once (per commit) and cached.
pub fn previous_tether() -> Previous {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo = match git(manifest, &["rev-parse", "--show-toplevel"]) {
        Ok(r) => PathBuf::from(r),
        Err(e) => needs_history(&format!(
            "{} is not in a git repository: {e}",
            manifest.display()
        )),
    };
    let commit = base_commit(&repo);
    let short = &commit[..12];
    // `<target>/debug/tether` → `<target>/previous`.
    let bin = super::tether_bin();
    let target = bin
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("no target directory above {}", bin.display()));
    let dir = target.join("previous");
    fs::create_dir_all(&dir).unwrap();
    let cached = dir.join(format!("tether-{short}"));
    let lock = fs::File::create(dir.join("build.lock")).unwrap();
    let _turn = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the previous build");
    if !cached.is_file() {
        let started = Instant::now();
        build(&repo, &commit, &dir, &cached);
        eprintln!(
            "adopt: built tether {short} (the previous commit) in {:.0?}",
            started.elapsed()
        );
    }
    Previous {
        commit,
        bin: cached,
    }
}

/// Extracts `commit` and builds its `tether` into `cached`.
fn build(repo: &Path, commit: &str, dir: &Path, cached: &Path) {
    let short = &commit[..12];
    let src = dir.join(format!("src-{short}"));
    if src.exists() {
        fs::remove_dir_all(&src).unwrap();
    }
    fs::create_dir_all(&src).unwrap();
    let mut archive = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["archive", "--format=tar", commit])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run git archive");
    // `-m`: files dated now, not at the commit. The target directory is shared by every
    // commit's build and cargo judges freshness by modification times: files dated at an
    // earlier commit than the last build would look built already.
    let tar = Command::new("tar")
        .arg("-xm")
        .arg("-C")
        .arg(&src)
        .stdin(archive.stdout.take().unwrap())
        .status()
        .expect("run tar");
    let archived = archive.wait().unwrap();
    assert!(
        archived.success() && tar.success(),
        "extracting {commit} into {} failed (git archive: {archived}, tar: {tar})",
        src.display()
    );
    let log_path = dir.join(format!("build-{short}.log"));
    let log = fs::File::create(&log_path).unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(cargo)
        .args(["build", "--locked", "--bin", "tether"])
        .current_dir(&src)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("run cargo build");
    let started = std::time::SystemTime::now();
    let deadline = Instant::now() + BUILD_DEADLINE;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "building tether {short} took over {BUILD_DEADLINE:?}; cargo's output ends:\n{}",
                tail(&log_path)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        status.success(),
        "building tether {short} failed ({}); cargo's output ends:\n{}",
        status.code().map_or_else(
            || format!("signal {:?}", status.signal()),
            |c| format!("exit {c}")
        ),
        tail(&log_path)
    );
    let built = dir.join("target").join("debug").join("tether");
    let linked = fs::metadata(&built).and_then(|m| m.modified()).unwrap();
    assert!(
        linked >= started,
        "cargo did not link {} for {short}: it would be another commit's binary",
        built.display()
    );
    let partial = dir.join(format!(".tether-{short}.partial"));
    fs::copy(&built, &partial)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", built.display(), partial.display()));
    fs::rename(&partial, cached).unwrap();
}

/// The last lines of a build log.
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
