//! A system daemon for one test (`tether --system daemon start` as root), its tree, its
//! configurations and the user accounts the test makes, all removed at the end; plus a raw
//! frame client that runs as one of those users.
//!
//! These tests need root: they create users (useradd, from the `passwd` package) and run
//! commands as them (setpriv, from `util-linux`; python3 for the raw client).

mod pair;
mod raw;
pub use pair::*;
pub use raw::*;

use super::*;
use serde_json::Value;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// useradd and userdel lock /etc/passwd: one at a time.
static ACCOUNTS: Mutex<()> = Mutex::new(());

pub fn require_root_and_tools() {
    assert!(
        nix::unistd::getuid().is_root(),
        "system-mode tests create users and start a root daemon: run them as root"
    );
    for (tool, package) in [
        ("useradd", "passwd"),
        ("groupadd", "passwd"),
        ("setpriv", "util-linux"),
        ("/usr/bin/python3", "python3"),
    ] {
        // Found as another user would find it (root's PATH may have private shims).
        let found = Command::new("sh")
            .args([
                "-c",
                &format!("PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v {tool}"),
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "{tool} is missing: install the {package} package");
    }
}

/// A user account made for one test; its [`System`] deletes it at the end (after the
/// sessions running as it are gone: `userdel` refuses an account that still runs processes).
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    /// The user's own TETHER_HOME (its client identity).
    pub client: PathBuf,
}

/// A group made for one test; deleted with its [`System`], after the users.
pub struct Group(pub String);

pub fn unique(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("tt{}{tag}{n}", std::process::id() % 100_000)
}

/// One test's system daemon: its tree, configurations and users.
pub struct System {
    pub tmp: tempfile::TempDir,
    pub sys_home: PathBuf,
    pub configs: PathBuf,
    env: Vec<(String, String)>,
    hosts: Mutex<Vec<u32>>,
    /// Accounts and groups this test made, deleted in this order at the end.
    users: Mutex<Vec<(String, u32)>>,
    groups: Mutex<Vec<String>>,
    /// The binary under test, linked into the test's directory: users must be able to run it
    /// (the session leader of a restricted session is this program), wherever the checkout is.
    pub exe: PathBuf,
}

impl System {
    pub fn new(env: &[(&str, &str)]) -> System {
        require_root_and_tools();
        let tmp = temp_dir();
        // Users pass through the test's directory to reach the socket (as through /var/lib).
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let configs = tmp.path().join("conf");
        std::fs::create_dir_all(&configs).unwrap();
        let exe = tmp.path().join("tether");
        if std::fs::hard_link(tether_bin(), &exe).is_err() {
            std::fs::copy(tether_bin(), &exe).unwrap();
        }
        System {
            exe,
            sys_home: tmp.path().join("sys"),
            configs,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tmp,
            hosts: Mutex::new(Vec::new()),
            users: Mutex::new(Vec::new()),
            groups: Mutex::new(Vec::new()),
        }
    }

    pub fn group(&self, tag: &str) -> Group {
        let name = unique(tag);
        let _g = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
        let out = Command::new("groupadd").arg(&name).output().unwrap();
        assert!(out.status.success(), "groupadd {name}: {out:?}");
        self.groups.lock().unwrap().push(name.clone());
        Group(name)
    }

    pub fn user(&self, tag: &str, groups: &[&Group]) -> User {
        let name = unique(tag);
        let home = self.tmp.path().join(format!("home-{name}"));
        let mut c = Command::new("useradd");
        c.args(["-m", "-s", "/bin/sh", "-d"]).arg(&home);
        if !groups.is_empty() {
            let g: Vec<&str> = groups.iter().map(|g| g.0.as_str()).collect();
            c.args(["-G", &g.join(",")]);
        }
        c.arg(&name);
        let out = {
            let _g = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
            c.output().unwrap()
        };
        assert!(out.status.success(), "useradd {name}: {out:?}");
        let u = nix::unistd::User::from_name(&name).unwrap().unwrap();
        self.users
            .lock()
            .unwrap()
            .push((name.clone(), u.uid.as_raw()));
        User {
            client: home.join("tether-client"),
            name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home,
        }
    }

    pub fn config(&self, name: &str, text: &str) {
        std::fs::write(self.configs.join(format!("{name}.toml")), text).unwrap();
    }

    /// The system daemon's socket.
    pub fn socket(&self) -> PathBuf {
        self.sys_home.join("daemon.sock")
    }

    /// A user's area of the tree (`users/<uid>`).
    pub fn area(&self, user: &User) -> PathBuf {
        self.sys_home.join("users").join(user.uid.to_string())
    }

    /// A directory in the test's tree that everybody may write (mode 1777, like /tmp).
    pub fn shared_dir(&self, name: &str) -> PathBuf {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        dir
    }

    pub fn root_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        c.env("TETHER_SYSTEM_HOME", &self.sys_home)
            .env("TETHER_SYSTEM_CONFIGS", &self.configs)
            .env("TETHER_HOME", self.tmp.path().join("root-client"))
            .arg("--system")
            .args(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    pub fn start(&self) {
        run_command(self.root_cmd(&["daemon", "start"]), None, CMD_TIMEOUT).success();
    }

    /// The system daemon's pid, from `--system daemon status --json`.
    #[track_caller]
    pub fn daemon_pid(&self) -> u32 {
        let out = run_command(
            self.root_cmd(&["daemon", "status", "--json"]),
            None,
            CMD_TIMEOUT,
        )
        .success();
        let pid = out.json()["pid"].as_u64();
        pid.unwrap_or_else(|| panic!("daemon status --json has no pid:\n{out}")) as u32
    }

    /// `tether --system ARGS…` as `user`, with a login-like environment.
    fn user_cmd(&self, user: &User, args: &[&str]) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", user.uid))
            .arg(format!("--regid={}", user.gid))
            .arg("--init-groups")
            .arg(&self.exe)
            .arg("--system")
            .args(args)
            .current_dir("/")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &user.home)
            .env("TETHER_HOME", &user.client)
            .env("TETHER_SYSTEM_HOME", &self.sys_home)
            .env("LD_PRELOAD", "/nonexistent/evil.so");
        c
    }

    /// `tether --system ARGS…` as `user`, with a login-like environment.
    pub fn as_user(&self, user: &User, args: &[&str]) -> Out {
        run_command(self.user_cmd(user, args), None, CMD_TIMEOUT)
    }

    /// As [`System::as_user`], in the background (stdout and stderr to files in the test's
    /// directory).
    pub fn spawn_as_user(&self, user: &User, args: &[&str], tag: &str) -> Background {
        let stdout_path = self.tmp.path().join(format!("{tag}.stdout"));
        let stderr_path = self.tmp.path().join(format!("{tag}.stderr"));
        let mut c = self.user_cmd(user, args);
        c.stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_path).unwrap())
            .stderr(std::fs::File::create(&stderr_path).unwrap());
        let desc = format!("tether --system {} (as {})", args.join(" "), user.name);
        Background {
            child: c.spawn().expect("spawn tether as a user"),
            stdout_path,
            stderr_path,
            desc,
        }
    }

    pub fn sessions(&self, user: &User) -> Vec<Value> {
        let list = self.as_user(user, &["get", "--json"]).success().json();
        let list = list.as_array().unwrap().clone();
        for s in &list {
            let pid = host_pid(s);
            if pid > 1 {
                self.hosts.lock().unwrap().push(pid);
            }
        }
        list
    }

    /// The session named `name` in `user`'s listing; panics when it is not there.
    #[track_caller]
    pub fn session(&self, user: &User, name: &str) -> Value {
        let all = self.sessions(user);
        all.iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{} has no session {name}: {all:#?}", user.name))
    }

    pub fn new_session(&self, user: &User, name: &str, extra: &[&str]) -> Value {
        let mut args = vec!["new", "--name", name, "--json"];
        args.extend_from_slice(extra);
        let s = single_session(&self.as_user(user, &args).success());
        self.hosts.lock().unwrap().push(host_pid(&s));
        s
    }

    /// `job start -s SESSION SCRIPT` as `user`; returns the job's id.
    pub fn session_job(&self, user: &User, session: &str, script: &str) -> String {
        let started = self
            .as_user(
                user,
                &["job", "start", "-s", session, "--json", "--", script],
            )
            .success()
            .json();
        let id = started[0]["id"].as_u64().or(started["id"].as_u64());
        id.expect("job start --json gives the job's id").to_string()
    }

    pub fn invoke(&self, user: &User, session: &str, script: &str) -> Out {
        self.as_user(user, &["invoke", "-s", session, "--", script])
    }

    /// Session hosts serving `user`'s area (a live `tether __host` whose TETHER_HOME is it).
    pub fn host_processes(&self, user: &User) -> Vec<u32> {
        let area = self.area(user);
        hosts_under(|home| Path::new(home) == area)
    }
}

/// Live `tether __host` processes whose TETHER_HOME passes `pick`.
fn hosts_under(pick: impl Fn(&str) -> bool) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| pid_alive(*pid) && cmdline(*pid).contains("__host"))
        .filter(|pid| {
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            env.split(|b| *b == 0).any(|kv| {
                std::str::from_utf8(kv)
                    .ok()
                    .and_then(|kv| kv.strip_prefix("TETHER_HOME="))
                    .is_some_and(&pick)
            })
        })
        .collect()
}

/// Live processes whose real uid is one of `uids`.
fn processes_of(uids: &[u32]) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| pid_alive(*pid))
        .filter(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok());
            uid.is_some_and(|u| uids.contains(&u))
        })
        .collect()
}

impl Drop for System {
    fn drop(&mut self) {
        let _ = try_run_command(self.root_cmd(&["daemon", "stop"]), None, CMD_TIMEOUT);
        // Stopping the system daemon leaves sessions running (they are adopted by the next
        // one): this test's are ended here, by the pids it saw, and then any other host of
        // this test's own tree (sessions made by raw frames are not in `hosts`).
        let mut pids = self.hosts.lock().unwrap().clone();
        let tree = self.sys_home.clone();
        pids.extend(hosts_under(|home| Path::new(home).starts_with(&tree)));
        for pid in pids {
            if is_tether_process(pid) {
                let _ = send_signal(pid, "TERM");
                wait_gone(pid, "a session host of the test");
            }
        }
        // A command still running in a session whose host is gone (a shell reads its end of
        // input only between commands) ends here, by pid: nothing outlives its account.
        let uids: Vec<u32> = self.users.lock().unwrap().iter().map(|u| u.1).collect();
        for pid in processes_of(&uids) {
            let _ = send_signal(pid, "KILL");
        }
        let _g = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
        for (name, _) in self.users.lock().unwrap().iter() {
            // The shells end with their hosts; -f covers one that is still on its way out.
            let out = Command::new("userdel").args(["-f", name]).output();
            if !out.as_ref().is_ok_and(|o| o.status.success()) {
                eprintln!("cleanup: userdel {name} failed: {out:?}");
            }
        }
        for name in self.groups.lock().unwrap().iter() {
            let _ = Command::new("groupdel").arg(name).output();
        }
    }
}

pub fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

pub fn owner(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().uid()
}
