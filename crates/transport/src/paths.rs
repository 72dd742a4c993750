//! Where a daemon keeps its state and sockets.
//!
//! Everything lives under `TETHER_HOME` (SPEC §4). Unix socket paths are limited to ~108 bytes,
//! so when `TETHER_HOME` is long the sockets move to a short private directory under the system
//! temp dir whose name is derived from the home path: client and daemon compute the same place
//! without talking to each other.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Longest socket path we create (sun_path is 108 bytes on Linux, 104 on macOS, NUL included).
const MAX_SOCKET_PATH: usize = 100;
/// Room needed below the socket dir for `hosts/<uuid>.sock`.
const HOST_SOCKET_SUFFIX: usize = "/hosts/00000000-0000-0000-0000-000000000000.sock".len();

/// The resolved locations for one `TETHER_HOME`.
#[derive(Debug, Clone)]
pub struct Paths {
    /// State: metadata, FIFOs, logs, pid and lock files.
    pub home: PathBuf,
    /// Sockets: `home` itself when short enough, else a private short directory.
    pub run: PathBuf,
    /// Part of a system daemon's tree (`tether daemon start --system`): the directories on the
    /// way to a session's FIFOs are 0711 (others may pass through, never list), because the
    /// session's shell runs as its owner while the tree belongs to root.
    pub shared: bool,
}

/// Where a system daemon keeps its state unless `TETHER_SYSTEM_HOME` says otherwise.
pub const SYSTEM_HOME: &str = tether_settings::DEFAULT_SYSTEM_HOME;
/// Where a system daemon reads configurations unless `TETHER_SYSTEM_CONFIGS` says otherwise.
pub const SYSTEM_CONFIGS: &str = tether_settings::DEFAULT_SYSTEM_CONFIGS;

impl Paths {
    /// Resolves `TETHER_HOME` (this process's [`tether_settings`]), else
    /// `$XDG_STATE_HOME/tether` or `~/.local/state/tether`. `HOME` and `XDG_STATE_HOME` are
    /// the user's environment, not tether settings: they are read here, when needed.
    pub fn from_env() -> std::io::Result<Paths> {
        let settings = tether_settings::get();
        let home = if let Some(h) = &settings.home {
            h.clone()
        } else if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|h| !h.is_empty()) {
            PathBuf::from(x).join("tether")
        } else {
            let home = std::env::var_os("HOME")
                .ok_or_else(|| std::io::Error::other("neither TETHER_HOME nor HOME is set"))?;
            PathBuf::from(home).join(".local/state/tether")
        };
        let mut paths = Paths::for_home(home);
        // A session host of a system daemon is told so (it runs in one user's area).
        paths.shared = settings.shared_area;
        Ok(paths)
    }

    /// The system daemon's tree (`TETHER_SYSTEM_HOME`, else [`SYSTEM_HOME`]).
    pub fn system() -> Paths {
        let mut paths = Paths::for_home(tether_settings::get().system_home.clone());
        paths.shared = true;
        paths
    }

    /// The system daemon's configuration directory (`TETHER_SYSTEM_CONFIGS`, else
    /// [`SYSTEM_CONFIGS`]).
    pub fn system_configs() -> PathBuf {
        tether_settings::get().system_configs.clone()
    }

    /// One user's area inside a system daemon's tree: that user's sessions, kept apart from
    /// every other user's. It belongs to root like the rest of the tree.
    pub fn area(&self, uid: u32) -> Paths {
        let mut paths = Paths::for_home(self.home.join("users").join(uid.to_string()));
        paths.shared = true;
        paths
    }

    /// Locations for an explicit home directory.
    pub fn for_home(home: PathBuf) -> Paths {
        let home = std::path::absolute(&home).unwrap_or(home);
        let fits = home.as_os_str().len() + HOST_SOCKET_SUFFIX <= MAX_SOCKET_PATH;
        let run = if fits {
            home.clone()
        } else {
            let uid = nix::unistd::getuid().as_raw();
            std::env::temp_dir()
                .join(format!("tether-{uid}"))
                .join(format!(
                    "{:016x}",
                    fnv1a(home.as_os_str().as_encoded_bytes())
                ))
        };
        Paths {
            home,
            run,
            shared: false,
        }
    }

    pub fn daemon_socket(&self) -> PathBuf {
        self.run.join("daemon.sock")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.home.join("daemon.pid")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.home.join("daemon.lock")
    }
    pub fn log_file(&self) -> PathBuf {
        self.home.join("daemon.log")
    }
    /// Directory of session host metadata (`<instance>.json`) and per-session FIFO dirs.
    pub fn hosts_dir(&self) -> PathBuf {
        self.home.join("hosts")
    }
    pub fn host_socket(&self, instance_id: &str) -> PathBuf {
        let id = checked(instance_id);
        self.run.join("hosts").join(format!("{id}.sock"))
    }
    pub fn host_meta(&self, instance_id: &str) -> PathBuf {
        let id = checked(instance_id);
        self.hosts_dir().join(format!("{id}.json"))
    }
    /// Where the daemon links a local session's name to its instance id
    /// (`names/<name>` → `<instance id>`), so a CLI call can reach the host without asking the
    /// daemon. `None` for words that are not plain names (ids, `.` and `..`).
    pub fn name_link(&self, name: &str) -> Option<PathBuf> {
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && !name.bytes().all(|b| b.is_ascii_digit())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        plain.then(|| self.home.join("names").join(name))
    }
    pub fn host_fifo_dir(&self, instance_id: &str) -> PathBuf {
        self.hosts_dir().join(checked(instance_id))
    }

    /// Creates the home, run and hosts directories, private to the user (0700); in a system
    /// daemon's tree, the home, its parents up to the tree and `hosts` are 0711 instead, so that
    /// a session's shell can reach its FIFOs by path (and nothing can be listed).
    pub fn ensure_dirs(&self) -> std::io::Result<()> {
        let pass = if self.shared { 0o711 } else { 0o700 };
        if self.shared
            && let Some(users) = self.home.parent().filter(|p| p.ends_with("users"))
        {
            owned_dir(users.parent().unwrap_or(users), 0o711)?;
            owned_dir(users, 0o711)?;
        }
        owned_dir(&self.home, pass)?;
        if self.run != self.home {
            if let Some(parent) = self.run.parent() {
                private_dir(parent)?;
            }
            private_dir(&self.run)?;
        }
        owned_dir(&self.hosts_dir(), pass)?;
        if self.run != self.home {
            private_dir(&self.run.join("hosts"))?;
        }
        Ok(())
    }
}

/// Where a word that is not an instance id leads: a name no host ever uses, inside the area.
/// Requests are validated where they enter (`tether_proto::validate_word`); this is the last
/// line, so that no path built here can ever leave the area, whatever reached it.
const NOT_AN_INSTANCE: &str = "not-an-instance-id";

fn checked(instance_id: &str) -> &str {
    if tether_proto::is_instance_id(instance_id) {
        instance_id
    } else {
        tracing::warn!("refused to build a path from {instance_id:?}");
        NOT_AN_INSTANCE
    }
}

/// Creates `dir` (and parents) with mode 0700, and refuses one that another user owns or that
/// others can enter: in a shared temp dir that would let them reach our sockets.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    owned_dir(dir, 0o700)
}

/// Creates `dir` (and parents) with exactly `mode`, refusing one that another user owns.
pub fn owned_dir(dir: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(crate::at(dir))?;
    let meta = std::fs::symlink_metadata(dir).map_err(crate::at(dir))?;
    let uid = nix::unistd::getuid().as_raw();
    if !meta.is_dir() || meta.uid() != uid {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{} is not a directory owned by uid {uid}", dir.display()),
        ));
    }
    if meta.mode() & 0o777 != mode {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .map_err(crate::at(dir))?;
    }
    Ok(())
}

/// Writes a whole file readable only by its owner (0600), whatever the umask.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(crate::at(path))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| f.write_all(data))
        .map_err(crate::at(path))
}

/// FNV-1a: a stable, dependency-free hash for naming the short socket directory. Collisions
/// only matter between two homes of the same user, and the directory is private anyway.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_errors_name_the_file() {
        let missing = Path::new("/nonexistent-tether-dir/record.json");
        let e = write_private(missing, b"x").unwrap_err();
        assert!(
            e.to_string()
                .contains("/nonexistent-tether-dir/record.json"),
            "{e}"
        );
        let file = std::env::temp_dir().join(format!("tether-not-a-dir-{}", std::process::id()));
        std::fs::write(&file, "").unwrap();
        let e = private_dir(&file.join("sub")).unwrap_err();
        let _ = std::fs::remove_file(&file);
        assert!(e.to_string().contains(&*file.to_string_lossy()), "{e}");
    }

    #[test]
    fn short_home_keeps_sockets_inside() {
        let p = Paths::for_home(PathBuf::from("/tmp/x"));
        assert_eq!(p.run, PathBuf::from("/tmp/x"));
        assert_eq!(p.daemon_socket(), PathBuf::from("/tmp/x/daemon.sock"));
    }

    #[test]
    fn long_home_moves_sockets_to_a_short_stable_dir() {
        let long = PathBuf::from(format!("/tmp/{}", "d".repeat(200)));
        let a = Paths::for_home(long.clone());
        let b = Paths::for_home(long);
        assert_eq!(a.run, b.run);
        assert!(
            a.host_socket("00000000-0000-0000-0000-000000000000")
                .as_os_str()
                .len()
                <= 107
        );
        let other = Paths::for_home(PathBuf::from(format!("/tmp/{}", "e".repeat(200))));
        assert_ne!(a.run, other.run);
    }
}
