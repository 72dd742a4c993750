//! User accounts, from the passwd and group databases: who a system daemon's view serves, who
//! a configuration's `run_as` runs as, who may read a configuration.
//!
//! A leaf: it imports nothing else of the crate, so both the shared state (a view's
//! [`Role`](crate::state::Role)) and the local role may use it.

use tether_engine::RunAs;

/// A user account, from the passwd and group databases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Every group the account is in, its primary group included.
    pub groups: Vec<u32>,
    pub home: String,
    pub shell: String,
}

impl Account {
    pub fn by_uid(uid: u32) -> Result<Account, String> {
        match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
            Ok(Some(u)) => Ok(Account::from_user(u)),
            Ok(None) => Err(format!("uid {uid} has no account on this computer")),
            Err(e) => Err(format!("looking up uid {uid}: {e}")),
        }
    }

    pub fn by_name(name: &str) -> Result<Account, String> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Ok(Account::from_user(u)),
            Ok(None) => Err(format!("account {name} does not exist")),
            Err(e) => Err(format!("looking up account {name}: {e}")),
        }
    }

    /// The account this process runs as (a per-user daemon's user).
    pub fn current() -> Result<Account, String> {
        Account::by_uid(nix::unistd::getuid().as_raw())
    }

    fn from_user(u: nix::unistd::User) -> Account {
        let groups = supplementary(&u);
        Account {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            groups,
            home: u.dir.to_string_lossy().into_owned(),
            shell: u.shell.to_string_lossy().into_owned(),
        }
    }

    /// What a session host needs to run a shell as this account.
    pub fn run_as(&self) -> RunAs {
        RunAs {
            name: self.name.clone(),
            uid: self.uid,
            gid: self.gid,
            groups: self.groups.clone(),
            home: self.home.clone(),
        }
    }

    /// Whether the account is in group `name` (as its primary group or a supplementary one).
    pub fn in_group(&self, name: &str) -> bool {
        match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => self.groups.contains(&g.gid.as_raw()) || g.mem.contains(&self.name),
            _ => false,
        }
    }

    /// The environment a login of this account starts with (what `login` and sshd set), plus
    /// the client's terminal and locale settings. Nothing else of the client's comes through:
    /// variables such as `LD_PRELOAD` must not reach a shell that runs as another account or
    /// under a restricted configuration.
    pub fn login_env(&self, client: &[(String, String)]) -> Vec<(String, String)> {
        let path = if self.uid == 0 {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        } else {
            "/usr/local/bin:/usr/bin:/bin"
        };
        let mut env = vec![
            ("HOME".to_string(), self.home.clone()),
            ("USER".to_string(), self.name.clone()),
            ("LOGNAME".to_string(), self.name.clone()),
            ("SHELL".to_string(), self.shell.clone()),
            ("PATH".to_string(), path.to_string()),
        ];
        let passed = |k: &str| {
            matches!(k, "TERM" | "LANG" | "TZ" | "COLORTERM" | "LANGUAGE") || k.starts_with("LC_")
        };
        env.extend(client.iter().filter(|(k, _)| passed(k)).cloned());
        env
    }
}

#[cfg(not(any(target_os = "macos", target_os = "ios")))]
fn supplementary(u: &nix::unistd::User) -> Vec<u32> {
    let Ok(name) = std::ffi::CString::new(u.name.as_bytes()) else {
        return vec![u.gid.as_raw()];
    };
    match nix::unistd::getgrouplist(&name, u.gid) {
        Ok(g) => g.into_iter().map(|g| g.as_raw()).collect(),
        Err(_) => vec![u.gid.as_raw()],
    }
}

/// Apple platforms have no usable getgrouplist in nix: the primary group only.
#[cfg(any(target_os = "macos", target_os = "ios"))]
fn supplementary(u: &nix::unistd::User) -> Vec<u32> {
    vec![u.gid.as_raw()]
}
