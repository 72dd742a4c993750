//! Who a client is. Sessions record the client they are connected to, so that a second client
//! cannot take over a session another one holds (SPEC §3.11, as `Connect-PSSession` refuses),
//! and a client that vanished can be told from one that only closed an idle link.
//!
//! A client is one `TETHER_HOME`: its id is made once, kept in `client-id` there, and survives
//! daemon restarts, so a client daemon that was killed and started again is the same client.

use crate::paths::{Paths, write_private};
use tether_proto::ClientId;

/// This home's client identity, made on first use. Two processes racing to make it agree,
/// because the file is created exclusively and the loser reads the winner's.
pub fn client_identity(paths: &Paths) -> ClientId {
    let file = paths.home.join("client-id");
    let id = read_id(&file).unwrap_or_else(|| {
        let fresh = uuid::Uuid::new_v4().to_string();
        let tmp = paths.home.join(format!("client-id.{}", std::process::id()));
        let made =
            write_private(&tmp, fresh.as_bytes()).and_then(|()| std::fs::hard_link(&tmp, &file));
        let _ = std::fs::remove_file(&tmp);
        match made {
            Ok(()) => fresh,
            // Someone else made it first (or the home is read-only: an id for this run only).
            Err(_) => read_id(&file).unwrap_or(fresh),
        }
    });
    ClientId {
        label: format!("{}@{} #{}", user(), host(), &id[..8.min(id.len())]),
        id,
    }
}

fn read_id(file: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let id = text.trim();
    uuid::Uuid::parse_str(id).ok().map(|_| id.to_string())
}

fn user() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

fn host() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("tether-id-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let paths = Paths::for_home(dir.clone());
        let a = client_identity(&paths);
        let b = client_identity(&paths);
        assert_eq!(a, b);
        assert!(a.label.contains(&a.id[..8]), "{a:?}");
        std::fs::remove_dir_all(&dir).unwrap();
        let c = client_identity(&Paths::for_home(dir.clone()));
        assert_ne!(a.id, c.id, "a new home is a new client");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
