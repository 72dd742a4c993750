//! Creating sessions on this computer: checking the request, reserving the name, and starting
//! the session's host.

use super::configs::Config;
use super::hosts;
use crate::account::Account;
use crate::state::{DEFAULT_IDLE_TIMEOUT_S, Daemon};
use tether_engine::HostSpec;
use tether_proto::{ClientId, ErrorInfo, ErrorKind, NewSession, SessionInfo, State};

pub(crate) fn idle_timeout(daemon: &Daemon, asked: Option<u64>) -> Result<u64, ErrorInfo> {
    match asked {
        None => Ok(DEFAULT_IDLE_TIMEOUT_S),
        Some(0) => Ok(0),
        Some(s) if s < daemon.min_idle => Err(ErrorInfo::new(
            ErrorKind::Usage,
            format!(
                "idle timeout {s}s is below the minimum of {}s (0 means never)",
                daemon.min_idle
            ),
        )),
        Some(s) => Ok(s),
    }
}

/// Who may use configuration `cfg`, and as whom its sessions run (`None`: as the daemon's
/// own user). A system daemon runs them as the connection's user, or as the configuration's
/// `run_as` account for the users it allows; a per-user daemon only as itself.
fn runs_as(daemon: &Daemon, cfg: &Config) -> Result<Option<Account>, ErrorInfo> {
    let denied = |why: String| {
        ErrorInfo::new(
            ErrorKind::Permission,
            format!("configuration {}: {why}", cfg.name),
        )
    };
    let user = match &daemon.system {
        Some(role) => role.account.clone(),
        None if cfg.run_as.is_none()
            && cfg.allowed_users.is_empty()
            && cfg.allowed_groups.is_empty() =>
        {
            return Ok(None);
        }
        None => Account::current().map_err(denied)?,
    };
    if (!cfg.allowed_users.is_empty() || !cfg.allowed_groups.is_empty())
        && !cfg.allowed_users.contains(&user.name)
        && !cfg.allowed_groups.iter().any(|g| user.in_group(g))
    {
        return Err(denied(format!(
            "user {} is not allowed to use it",
            user.name
        )));
    }
    match (&cfg.run_as, daemon.system.is_some()) {
        (None, true) => Ok(Some(user)),
        (None, false) => Ok(None),
        (Some(name), true) => Account::by_name(name)
            .map(Some)
            .map_err(|e| denied(format!("run_as: {e}"))),
        (Some(name), false) if *name == user.name => Ok(None),
        (Some(name), false) => Err(denied(format!(
            "its sessions run as {name}, which needs the system daemon \
             (as root: tether daemon start --system; then tether --system …)"
        ))),
    }
}

fn host_spec(
    daemon: &Daemon,
    (id, name): (u32, String),
    spec: &NewSession,
    cfg: &Config,
    (idle, run_as): (u64, Option<&Account>),
) -> HostSpec {
    // A client on another computer sends no environment: the session starts with this
    // computer's (the daemon's), as an ssh login would. A system daemon's session starts with
    // its account's login environment. The configuration's come on top.
    let mut env: Vec<(String, String)> = match run_as {
        Some(account) => account.login_env(&spec.env),
        None if spec.env.is_empty() => std::env::vars().collect(),
        None => spec.env.clone(),
    };
    for (k, v) in &cfg.environment {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    HostSpec {
        id,
        name,
        instance_id: uuid::Uuid::new_v4().to_string(),
        configuration_name: cfg.name.clone(),
        computer_name: "localhost".into(),
        owner: daemon.owner.clone(),
        idle_timeout_s: idle,
        env,
        cwd: cfg.working_directory.clone().or_else(|| spec.cwd.clone()),
        shell: cfg
            .shell
            .clone()
            .or_else(|| tether_settings::get().shell.clone()),
        temporary: spec.temporary,
        output_quota: spec.output_quota.or(cfg.output_quota),
        // The user's explicit `--output-mode` wins over the configuration's, either way.
        drop_oldest: spec
            .output_mode
            .map_or(cfg.drop_oldest, |m| m == tether_proto::OutputMode::Drop),
        holder: None,
        startup_script: cfg.startup_script.clone().filter(|_| !spec.no_profile),
        restricted: cfg.restricted.clone(),
        run_as: run_as.map(Account::run_as),
        pooled: false,
        owner_uid: daemon.system.as_ref().map(|r| r.account.uid),
    }
}

/// Starts a session host on this computer, held by `holder`.
pub(crate) async fn new_session(
    daemon: &Daemon,
    spec: NewSession,
    holder: &ClientId,
) -> Result<Vec<SessionInfo>, ErrorInfo> {
    start(daemon, spec, holder, false)
        .await
        .map(|(info, _)| vec![info])
}

/// Starts a temporary session's host; with `pool`, a spare ([`super::pool`]) when the
/// configuration allows one. Returns the session and whether it is a spare.
pub(crate) async fn new_temporary(
    daemon: &Daemon,
    spec: NewSession,
    holder: &ClientId,
    pool: bool,
) -> Result<(SessionInfo, bool), ErrorInfo> {
    start(daemon, spec, holder, pool).await
}

async fn start(
    daemon: &Daemon,
    spec: NewSession,
    holder: &ClientId,
    pool: bool,
) -> Result<(SessionInfo, bool), ErrorInfo> {
    let cfg = super::configs::load(
        &daemon.config_dir(),
        spec.configuration.as_deref().unwrap_or("default"),
    )?;
    if let Some(dir) = cfg
        .working_directory
        .as_deref()
        .filter(|d| !std::path::Path::new(d).is_dir())
    {
        return Err(ErrorInfo::new(
            ErrorKind::Usage,
            format!(
                "configuration {}: working_directory {dir} is not a directory on this computer",
                cfg.name
            ),
        ));
    }
    let account = runs_as(daemon, &cfg)?;
    let idle = idle_timeout(daemon, spec.idle_timeout_s.or(cfg.idle_timeout_s))?;
    let hs = {
        let mut reg = daemon.registry.lock().await;
        if let Some(name) = &spec.name {
            tether_proto::validate_name(name)?;
            if reg.name_taken(name) {
                return Err(ErrorInfo::new(
                    ErrorKind::Usage,
                    format!("a session named {name} already exists"),
                ));
            }
        }
        if daemon.system.is_some() {
            let live = reg
                .sessions
                .values()
                .filter(|m| {
                    matches!(
                        m.info.state,
                        State::Opening | State::Opened | State::Disconnected
                    )
                })
                .count();
            let max = crate::limits::sessions_per_user();
            if live >= max {
                return Err(ErrorInfo::new(
                    ErrorKind::Busy,
                    format!(
                        "user {} has {live} sessions, the limit per user \
                         (TETHER_MAX_SESSIONS_PER_USER={max}); remove one first",
                        daemon.owner
                    ),
                ));
            }
        }
        if let Some(max) = cfg.max_sessions_per_user {
            let live = reg
                .sessions
                .values()
                .filter(|m| m.info.configuration_name == cfg.name)
                .filter(|m| {
                    matches!(
                        m.info.state,
                        State::Opening | State::Opened | State::Disconnected
                    )
                })
                .count();
            if live >= max as usize {
                return Err(ErrorInfo::new(
                    ErrorKind::Busy,
                    format!(
                        "configuration {} allows at most {max} sessions per user; remove one first",
                        cfg.name
                    ),
                ));
            }
        }
        let id = reg.allocate_id();
        let name = spec.name.clone().unwrap_or_else(|| format!("Session{id}"));
        let mut hs = host_spec(daemon, (id, name), &spec, &cfg, (idle, account.as_ref()));
        hs.holder = Some(holder.clone());
        hs.pooled = pool
            && spec.temporary
            && cfg.restricted.is_none()
            && cfg.max_sessions_per_user.is_none();
        if hs.pooled {
            // The pool closes a spare after its idle time; this is only the backstop for a
            // daemon that died.
            hs.idle_timeout_s = 2 * crate::state::pool::idle().as_secs();
        }
        // Reserve the name while the host starts.
        reg.insert(placeholder(&hs));
        hs
    };
    let started = hosts::spawn_host(&daemon.paths, &hs).await;
    let mut reg = daemon.registry.lock().await;
    match started {
        Ok(meta) => {
            let info = meta.info.clone();
            reg.insert(meta);
            Ok((info, hs.pooled))
        }
        Err(e) => {
            reg.sessions.remove(&hs.instance_id);
            Err(e)
        }
    }
}

fn placeholder(hs: &HostSpec) -> tether_engine::HostMeta {
    tether_engine::HostMeta {
        info: SessionInfo {
            id: hs.id,
            name: hs.name.clone(),
            instance_id: hs.instance_id.clone(),
            computer_name: hs.computer_name.clone(),
            computer_type: "local".into(),
            configuration_name: hs.configuration_name.clone(),
            state: State::Opening,
            availability: tether_proto::Availability::None,
            owner: hs.owner.clone(),
            idle_timeout_s: hs.idle_timeout_s,
            created_on: String::new(),
            disconnected_on: None,
            expires_on: None,
            reason: None,
            host_pid: 0,
            held_by: hs.holder.clone(),
            jobs: 0,
        },
        temporary: hs.temporary,
        shell_pid: 0,
    }
}
