//! Logging in as ssh does with `BatchMode`: the agent's keys first (only those of the
//! configured identity files with `IdentitiesOnly`), then the identity files that need no
//! passphrase. Nothing ever prompts.

use super::Client;
use super::config::Resolved;
use crate::farside::err;
use russh::client::{AuthResult, Handle};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{PrivateKeyWithHashAlg, PublicKey};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tether_proto::{ErrorInfo, ErrorKind};

/// Agent keys tried at most (a server allows about six attempts anyway).
const MAX_AGENT_KEYS: usize = 16;
/// Largest key file read.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// The agent to use: `IdentityAgent` if the configuration names one, else the caller's.
pub fn agent_path(cfg: &Resolved, caller: Option<&str>) -> Option<PathBuf> {
    match &cfg.identity_agent {
        None => None,
        Some(Some(p)) => Some(p.clone()),
        Some(None) => caller.filter(|s| !s.is_empty()).map(PathBuf::from),
    }
}

fn public_of(file: &Path) -> Option<PublicKey> {
    let mut name = file.as_os_str().to_owned();
    name.push(".pub");
    let text = read_small(Path::new(&name))?;
    PublicKey::from_openssh(text.trim()).ok()
}

fn read_small(file: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(file)
        .ok()?
        .take(MAX_KEY_FILE)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// Authenticates `h` as `cfg.user`, or says in one line what was tried.
pub async fn login(
    h: &mut Handle<Client>,
    c: &str,
    cfg: &Resolved,
    agent: Option<&Path>,
) -> Result<(), ErrorInfo> {
    let mut notes: Vec<String> = Vec::new();
    let file_keys: Vec<PublicKey> = cfg
        .identity_files
        .iter()
        .filter_map(|f| public_of(f))
        .collect();
    let rsa_hash = h.best_supported_rsa_hash().await.ok().flatten().flatten();
    if let Some(path) = agent {
        match AgentClient::connect_uds(path).await {
            Err(e) => notes.push(format!("ssh agent {}: {e}", path.display())),
            Ok(mut client) => {
                let ids = client.request_identities().await.unwrap_or_default();
                let mut tried = 0;
                for id in ids.into_iter().take(MAX_AGENT_KEYS) {
                    let AgentIdentity::PublicKey { key, .. } = id else {
                        continue;
                    };
                    if cfg.identities_only
                        && !file_keys.iter().any(|k| k.key_data() == key.key_data())
                    {
                        continue;
                    }
                    tried += 1;
                    let hash = key.algorithm().is_rsa().then_some(rsa_hash).flatten();
                    match h
                        .authenticate_publickey_with(&cfg.user, key, hash, &mut client)
                        .await
                    {
                        Ok(AuthResult::Success) => return Ok(()),
                        Ok(AuthResult::Failure { .. }) => {}
                        Err(e) => tracing::debug!("{c}: agent key: {e}"),
                    }
                }
                notes.push(format!("{tried} key(s) of ssh agent {}", path.display()));
            }
        }
    } else {
        notes.push("no ssh agent".into());
    }
    for file in &cfg.identity_files {
        let Some(text) = read_small(file) else {
            continue; // the defaults that do not exist
        };
        let key = match russh::keys::decode_secret_key(&text, None) {
            Ok(k) => k,
            Err(russh::keys::Error::KeyIsEncrypted) => {
                notes.push(format!(
                    "{} needs a passphrase (add it to the agent)",
                    file.display()
                ));
                continue;
            }
            Err(e) => {
                notes.push(format!("{}: {e}", file.display()));
                continue;
            }
        };
        let hash = key.algorithm().is_rsa().then_some(rsa_hash).flatten();
        let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
        match h.authenticate_publickey(&cfg.user, key).await {
            Ok(AuthResult::Success) => return Ok(()),
            Ok(AuthResult::Failure { .. }) => notes.push(format!("{} refused", file.display())),
            Err(e) => notes.push(format!("{}: {e}", file.display())),
        }
    }
    Err(err(
        ErrorKind::Connection,
        c,
        format!(
            "{}@{}: Permission denied (publickey; native transport tried {})",
            cfg.user,
            cfg.hostname,
            if notes.is_empty() {
                "no key".to_string()
            } else {
                notes.join(", ")
            }
        ),
    ))
}
