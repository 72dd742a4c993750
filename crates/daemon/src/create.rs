//! Creating sessions on this computer: checking the request, reserving the name, and starting
//! the session's host.

use crate::configs::Config;
use crate::hosts;
use crate::server::{DEFAULT_IDLE_TIMEOUT_S, Daemon};
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

fn host_spec(
    daemon: &Daemon,
    (id, name): (u32, String),
    spec: &NewSession,
    cfg: &Config,
    idle: u64,
) -> HostSpec {
    // A client on another computer sends no environment: the session starts with this
    // computer's (the daemon's), as an ssh login would. The configuration's come on top.
    let mut env: Vec<(String, String)> = if spec.env.is_empty() {
        std::env::vars().collect()
    } else {
        spec.env.clone()
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
            .or_else(|| std::env::var("TETHER_SHELL").ok().filter(|s| !s.is_empty())),
        temporary: spec.temporary,
        output_quota: spec.output_quota.or(cfg.output_quota),
        drop_oldest: spec.drop_oldest || cfg.drop_oldest,
        holder: None,
        startup_script: cfg.startup_script.clone().filter(|_| !spec.no_profile),
        restricted: cfg.restricted.clone(),
    }
}

/// Starts a session host on this computer, held by `holder`.
pub(crate) async fn new_session(
    daemon: &Daemon,
    spec: NewSession,
    holder: &ClientId,
) -> Result<Vec<SessionInfo>, ErrorInfo> {
    let cfg = crate::configs::load(
        &daemon.paths,
        spec.configuration.as_deref().unwrap_or("default"),
    )?;
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
        let mut hs = host_spec(daemon, (id, name), &spec, &cfg, idle);
        hs.holder = Some(holder.clone());
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
            Ok(vec![info])
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
