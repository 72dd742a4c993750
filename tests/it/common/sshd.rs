//! A real OpenSSH server for tests: started on a free 127.0.0.1 port with throw-away host and
//! client keys, and an ssh_config whose aliases `tether-test` and [`ALIASES`] reach it. Stopped
//! (by pid) on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

use super::procs::{require_program, wait_until};

/// More names for the same sshd, to play several computers (each is its own connection).
pub const ALIASES: [&str; 8] = [
    "tether-1", "tether-2", "tether-3", "tether-4", "tether-5", "tether-6", "tether-7", "tether-8",
];

pub struct Sshd {
    dir: TempDir,
    child: std::process::Child,
    pub port: u16,
}

impl Sshd {
    /// Starts sshd; fails the test, naming the Debian package, if ssh or sshd is missing.
    pub fn start() -> Sshd {
        Sshd::start_at(None, "127.0.0.1")
    }

    /// Starts sshd listening on `addr`, inside network namespace `netns` when given (run
    /// with `ip netns exec`, which execs sshd, so the child's pid is sshd's).
    pub fn start_at(netns: Option<&str>, addr: &str) -> Sshd {
        require_program("ssh", "openssh-client");
        require_program("ssh-keygen", "openssh-client");
        let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| panic!("this test needs sshd: apt-get install openssh-server"));
        let dir = tempfile::Builder::new()
            .prefix("tether-sshd.")
            .tempdir()
            .unwrap();
        let d = dir.path();
        for key in ["host_key", "client_key"] {
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", ""])
                .arg("-f")
                .arg(d.join(key))
                .status()
                .unwrap();
            assert!(st.success(), "ssh-keygen failed");
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        // sshd reads authorized_keys with the logging-in user's rights: let a second test user
        // (tests/it/ownership.rs) reach it. The directory stays unlistable; private keys stay 0600.
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |m| std::fs::Permissions::from_mode(m);
            std::fs::set_permissions(d, mode(0o711)).unwrap();
            std::fs::set_permissions(d.join("authorized_keys"), mode(0o644)).unwrap();
        }
        let port = free_port();
        let user = whoami();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress {addr}\nHostKey {hk}\nAuthorizedKeysFile {ak}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\n\
                 UsePAM no\nPidFile {pid}\nLogLevel ERROR\n\
                 # One sshd stands for many computers: tests open many handshakes at once.\n\
                 MaxStartups 200\n",
                hk = d.join("host_key").display(),
                ak = d.join("authorized_keys").display(),
                pid = d.join("sshd.pid").display(),
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("ssh_config"),
            format!(
                "Host tether-test {aliases}\n  HostName {addr}\n  Port {port}\n  User {user}\n  \
                 IdentityFile {ck}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  \
                 UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n",
                ck = d.join("client_key").display(),
                aliases = ALIASES.join(" "),
            ),
        )
        .unwrap();
        // sshd wants its privilege-separation directory to exist.
        let _ = std::fs::create_dir_all("/run/sshd");
        // -D keeps sshd in the foreground as our child, so its pid is known without a pid file.
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, sshd]);
                c
            }
            None => Command::new(sshd),
        };
        let mut child = cmd
            .arg("-D")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .arg("-E")
            .arg(d.join("sshd.log"))
            .spawn()
            .unwrap();
        wait_until(Duration::from_secs(20), "sshd accepts connections", || {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("sshd exited with {st}: {}", log(d));
            }
            std::net::TcpStream::connect((addr, port)).is_ok()
        });
        Sshd { dir, child, port }
    }

    /// An ssh alias whose key is pinned, in authorized_keys, to `tether bridge
    /// --configuration NAME` for `remote`'s home (an ssh forced command).
    pub fn pinned_alias(&self, remote: &super::Home, configuration: &str) -> String {
        let d = self.dir.path();
        let (key, public) = new_key(&d.join(format!("pinned_{configuration}")));
        let forced = format!(
            "command=\"env TETHER_HOME={home} {exe} bridge --configuration {configuration}\",no-pty {public}",
            home = remote.path().display(),
            exe = super::tether_bin().display(),
        );
        let ak = d.join("authorized_keys");
        let mut keys = std::fs::read_to_string(&ak).unwrap();
        keys.push_str(&forced);
        std::fs::write(&ak, keys).unwrap();
        let alias = format!("tether-pinned-{configuration}");
        let mut cfg = std::fs::read_to_string(self.config()).unwrap();
        // Host blocks match in order: this one goes first.
        let port = self.port;
        cfg = format!(
            "Host {alias}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  IdentityFile {k}\n  \
             IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  \
             LogLevel ERROR\n  BatchMode yes\n{cfg}",
            user = whoami(),
            k = key.display(),
        );
        std::fs::write(self.config(), cfg).unwrap();
        alias
    }

    /// The private key that `tether-test` and [`ALIASES`] log in with (for `ssh-add`).
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// An ssh alias `name` for this sshd that names no key file: it logs in only with a key
    /// from the ssh agent (`SSH_AUTH_SOCK`) holding [`Sshd::client_key`].
    pub fn agent_alias(&self, name: &str) -> String {
        self.prepend_host(&format!(
            "Host {name}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  \
             IdentitiesOnly no\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  \
             LogLevel ERROR\n  BatchMode yes\n",
            port = self.port,
            user = whoami(),
        ));
        name.to_string()
    }

    /// An ssh alias `name` whose own key is tied, in authorized_keys, to the forced command
    /// `command` (which finds the client's command in `SSH_ORIGINAL_COMMAND`).
    pub fn forced_alias(&self, name: &str, command: &str) -> String {
        let d = self.dir.path();
        let (key, public) = new_key(&d.join(format!("forced_{name}")));
        let ak = d.join("authorized_keys");
        let mut keys = std::fs::read_to_string(&ak).unwrap();
        keys.push_str(&format!("command=\"{command}\",no-pty {public}"));
        std::fs::write(&ak, keys).unwrap();
        self.prepend_host(&format!(
            "Host {name}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  IdentityFile {k}\n  \
             IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  \
             LogLevel ERROR\n  BatchMode yes\n",
            port = self.port,
            user = whoami(),
            k = key.display(),
        ));
        name.to_string()
    }

    /// Puts a Host block first in the ssh_config (blocks match in order).
    fn prepend_host(&self, block: &str) {
        let cfg = std::fs::read_to_string(self.config()).unwrap();
        std::fs::write(self.config(), format!("{block}{cfg}")).unwrap();
    }

    /// The listening sshd's pid (each connection is served by a child of it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }

    /// A client home whose commands reach `remote` through this sshd as `tether-test`.
    pub fn client_for(&self, remote: &super::Home) -> super::Home {
        super::Home::new()
            .env("TETHER_SSH_CONFIG", self.config().to_str().unwrap())
            .env("TETHER_REMOTE_EXE", super::tether_bin().to_str().unwrap())
            .env("TETHER_REMOTE_HOME", remote.path().to_str().unwrap())
    }
}

/// An sshd, the "remote" home behind it, and a client home that reaches it (returned in that
/// order so the client is dropped, and its daemon stopped, first).
pub fn setup() -> (Sshd, super::Home, super::Home) {
    let sshd = Sshd::start();
    let remote = super::Home::new();
    let client = sshd.client_for(&remote);
    (sshd, remote, client)
}

/// Makes session `name` on the harness's computer (`tether-test`) from `client`, with `extra`
/// arguments to `new`, and has `remote` stop it at the end of the test.
pub fn far_session(client: &super::Home, remote: &super::Home, name: &str, extra: &[&str]) {
    let mut args = vec!["new", "tether-test", "--name", name];
    args.extend_from_slice(extra);
    client.run(&args).success();
    remote.note_session(&remote.session(name));
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log(d: &Path) -> String {
    std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default()
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A throw-away ed25519 key at `key`: its path and its public line.
fn new_key(key: &std::path::Path) -> (PathBuf, String) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", ""])
        .arg("-f")
        .arg(key)
        .status()
        .unwrap();
    assert!(st.success(), "ssh-keygen failed");
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key.to_path_buf(), public)
}
