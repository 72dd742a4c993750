//! What a daemon tells a new session host, and what a host records about itself on disk.

use serde::{Deserialize, Serialize};
use std::path::Path;
use tether_proto::SessionInfo;

/// Parameters of one session host, passed by the daemon as one JSON line on the host's stdin.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct HostSpec {
    pub id: u32,
    pub name: String,
    pub instance_id: String,
    pub configuration_name: String,
    pub computer_name: String,
    pub owner: String,
    /// 0 = never.
    pub idle_timeout_s: u64,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    /// Shell program; `None` picks bash, else /bin/sh.
    pub shell: Option<String>,
    pub temporary: bool,
    /// Kept-output quota in bytes (`None`: `TETHER_OUTPUT_QUOTA`, else 1 GiB).
    #[serde(default)]
    pub output_quota: Option<u64>,
    /// `drop` output mode: at the quota the oldest kept output goes, not the command's pace.
    #[serde(default)]
    pub drop_oldest: bool,
    /// The client that made it (`None`: the daemon's own).
    #[serde(default)]
    pub holder: Option<tether_proto::ClientId>,
    /// Sourced by the shell when it starts (the configuration's start-up script).
    #[serde(default)]
    pub startup_script: Option<String>,
    /// The restricted engine's rules: no shell, only these commands.
    #[serde(default)]
    pub restricted: Option<crate::restricted::Rules>,
    /// The account the shell runs as (a system daemon's sessions); `None`: the host's own.
    #[serde(default)]
    pub run_as: Option<RunAs>,
    /// A spare for temporary invocations (with `temporary`): each runs in a subshell of the
    /// pristine shell, so none sees another's state, and the host goes back to its daemon's
    /// pool afterwards instead of closing. A fork replaces a host and a shell per invocation.
    #[serde(default)]
    pub pooled: bool,
    /// The uid of the user the session belongs to, when that is not the host's own (a system
    /// daemon's sessions). Besides the host's own uid (its daemon's), only this user's
    /// connections may be handed to the host: whatever a daemon gets wrong, a session never
    /// serves a stranger.
    #[serde(default)]
    pub owner_uid: Option<u32>,
}

/// An account a session's shell runs as, resolved by the daemon (from the passwd and group
/// databases) before the host starts.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (as `initgroups` would set them).
    pub groups: Vec<u32>,
    pub home: String,
}

/// The host's record of itself, `hosts/<instance>.json`, rewritten atomically on every state
/// change. It is how a new daemon adopts sessions after the old one died, and how a Broken or
/// Closed session stays listed after its host has exited.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct HostMeta {
    pub info: SessionInfo,
    pub temporary: bool,
    pub shell_pid: u32,
}

impl HostMeta {
    /// Writes via a temp file and rename, so readers never see half a record.
    pub fn store(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let data = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        tether_transport::paths::write_private(&tmp, &data)?;
        std::fs::rename(&tmp, path).map_err(tether_transport::at(path))
    }

    /// Reads a record; a corrupt one is an error for the caller to report, not a panic.
    ///
    /// A record is only believed where it was written: at `<instance id>.json`, naming that
    /// same instance id, which must be a UUID. Every path the daemon later builds from it (the
    /// host's socket, its directory) then stays inside the area the record was read from,
    /// whatever file someone managed to place elsewhere.
    pub fn load(path: &Path) -> std::io::Result<HostMeta> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        const MAX: u64 = 1024 * 1024;
        let bad = |why: &str| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {why}", path.display()),
            )
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(tether_transport::at(path))?;
        if !file
            .metadata()
            .map_err(tether_transport::at(path))?
            .is_file()
        {
            return Err(bad("not a regular file"));
        }
        let mut data = Vec::new();
        file.take(MAX + 1)
            .read_to_end(&mut data)
            .map_err(tether_transport::at(path))?;
        if data.len() as u64 > MAX {
            return Err(bad("session record is implausibly large"));
        }
        let meta: HostMeta = serde_json::from_slice(&data).map_err(|e| bad(&e.to_string()))?;
        let stem = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"));
        if !tether_proto::is_instance_id(&meta.info.instance_id)
            || stem != Some(meta.info.instance_id.as_str())
        {
            return Err(bad("the record does not name the session it is stored for"));
        }
        Ok(meta)
    }
}

/// Picks the shell: bash where it exists, else /bin/sh (SPEC: "bash; /bin/sh where bash is absent").
pub fn default_shell() -> String {
    for candidate in ["/bin/bash", "/usr/bin/bash", "/usr/local/bin/bash"] {
        if Path::new(candidate).exists() {
            return candidate.to_string();
        }
    }
    "/bin/sh".to_string()
}
