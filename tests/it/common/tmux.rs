//! A private tmux server to drive `tether enter` as a person would: keys in, screen out.
//!
//! Each [`Tmux`] runs its own server on a socket in its own temporary directory and kills that
//! server (only that one) when dropped.

use super::{Home, wait_until};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub struct Tmux {
    _dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Tmux {
    /// Starts `tether ARGS…` for `home` in a 100×30 window. The pane stays after tether exits,
    /// showing `ENTER-EXITED-<status>`.
    pub fn start(home: &Home, args: &[&str]) -> Tmux {
        let path =
            which("tmux").expect("tmux is needed for the enter tests (apt-get install tmux)");
        let dir = super::temp_dir();
        let socket = dir.path().join("tmux.sock");
        let cmd = home.command();
        let mut line = String::new();
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                line.push_str(&format!(
                    "{}={} ",
                    k.to_string_lossy(),
                    shell_quote(&v.to_string_lossy())
                ));
            }
        }
        line.push_str(&shell_quote(&super::tether_bin().to_string_lossy()));
        for a in args {
            line.push(' ');
            line.push_str(&shell_quote(a));
        }
        let script = format!("env TERM=xterm {line}; echo ENTER-EXITED-$?; sleep 600");
        let ok = Command::new(&path)
            .arg("-S")
            .arg(&socket)
            .args([
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                "100",
                "-y",
                "30",
            ])
            .arg(script)
            .status()
            .expect("start tmux");
        assert!(ok.success(), "tmux new-session failed");
        Tmux { _dir: dir, socket }
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux")
    }

    /// Types `keys` (tmux key names, e.g. "Enter", "C-c", or literal text).
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        assert!(self.tmux(&args).status.success());
    }

    /// Types a line and Enter.
    pub fn line(&self, text: &str) {
        let args = ["send-keys", "-t", "t", "-l", text];
        assert!(self.tmux(&args).status.success());
        self.keys(&["Enter"]);
    }

    /// Types `text` without Enter (no key names: every character as itself).
    pub fn text(&self, text: &str) {
        let args = ["send-keys", "-t", "t", "-l", text];
        assert!(self.tmux(&args).status.success());
    }

    /// Pastes `text` as a terminal does: in one piece, newlines as Enter (`\r`), and with
    /// `bracketed`, inside the bracketed-paste markers when the program asked for them.
    pub fn paste(&self, text: &str, bracketed: bool) {
        let file = self._dir.path().join("paste");
        std::fs::write(&file, text).unwrap();
        let file = file.to_str().unwrap();
        assert!(
            self.tmux(&["load-buffer", "-b", "p", file])
                .status
                .success()
        );
        let mut args = vec!["paste-buffer", "-d", "-b", "p", "-t", "t"];
        if bracketed {
            args.push("-p");
        }
        assert!(self.tmux(&args).status.success());
    }

    /// Everything the pane showed, scrolled-off lines included.
    pub fn history(&self) -> String {
        let out = self.tmux(&["capture-pane", "-t", "t", "-p", "-S", "-", "-J"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-t", "t", "-p"]).stdout).into_owned()
    }

    /// Waits until the screen shows `text`, and returns the screen.
    #[track_caller]
    pub fn wait_for(&self, text: &str) -> String {
        let mut last = String::new();
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(Duration::from_secs(20), text, || {
                last = self.screen();
                last.contains(text)
            })
        }));
        if found.is_err() {
            panic!("the screen never showed {text:?}; it shows:\n{last}");
        }
        last
    }

    /// Waits until `text` has appeared `n` times in the pane (scrolled-off lines included).
    #[track_caller]
    pub fn wait_count(&self, text: &str, n: usize) -> String {
        let mut last = String::new();
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(Duration::from_secs(20), text, || {
                last = self.history();
                last.matches(text).count() >= n
            })
        }));
        if found.is_err() {
            panic!("the screen never showed {text:?} {n} times; it shows:\n{last}");
        }
        last
    }

    pub fn resize(&self, cols: u16, rows: u16) {
        let (c, r) = (cols.to_string(), rows.to_string());
        assert!(
            self.tmux(&["resize-window", "-t", "t", "-x", &c, "-y", &r])
                .status
                .success()
        );
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The path of `shell` (bash, dash, zsh); fails the test, naming the package, without it.
pub fn shell_path(shell: &str) -> String {
    ["/bin", "/usr/bin"]
        .iter()
        .map(|d| std::path::Path::new(d).join(shell))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{shell} is needed for this test (apt-get install {shell})"))
        .to_string_lossy()
        .into_owned()
}

/// `tether enter s` running in tmux, for a session `s` run by `shell` (bash, dash, zsh) on
/// this computer or, with `remote`, on the sshd harness's other computer (`tether-test`).
pub struct Entered {
    pub t: Tmux,
    /// The prompt's start, `[computer:s] `.
    pub prompt: String,
    pub client: Home,
    /// The other computer's home, for a remote session.
    pub far: Option<Home>,
    _sshd: Option<super::sshd::Sshd>,
}

impl Entered {
    /// `env` goes to every tether command of the client, so a local session starts with it.
    pub fn start(remote: bool, shell: &str, env: &[(&str, &str)]) -> Entered {
        let path = shell_path(shell);
        let (sshd, far, mut client, prompt) = if remote {
            let (sshd, far, client) = super::sshd::setup();
            let dir = far.path().join("configurations");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("sh.toml"), format!("engine = \"{path}\"\n")).unwrap();
            client
                .run(&["new", "tether-test", "--name", "s", "--configuration", "sh"])
                .success();
            far.note_session(&far.session("s"));
            (Some(sshd), Some(far), client, "[tether-test:s] ")
        } else {
            let client = Home::new().env("TETHER_SHELL", &path);
            (None, None, client, "[localhost:s] ")
        };
        for (k, v) in env {
            client = client.env(k, v);
        }
        if !remote {
            client.new_session("s", &[]);
        }
        let t = Tmux::start(&client, &["enter", "s"]);
        t.wait_for(prompt);
        Entered {
            t,
            prompt: prompt.to_string(),
            client,
            far,
            _sshd: sshd,
        }
    }

    /// A scratch directory on the session's side: the far home's for a remote session.
    pub fn session_scratch(&self) -> std::path::PathBuf {
        self.far.as_ref().unwrap_or(&self.client).scratch()
    }

    /// Waits until the prompt has been shown `n` times in all.
    #[track_caller]
    pub fn prompts(&self, n: usize) -> String {
        self.t.wait_count(&self.prompt, n)
    }
}
