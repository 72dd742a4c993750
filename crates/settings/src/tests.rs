use super::*;
use std::os::unix::ffi::OsStringExt;

fn with(pairs: &[(&str, &str)]) -> Settings {
    Settings::from_vars(pairs.iter().copied())
}

/// The one warning `var=value` gives, which must leave `s` equal to the defaults otherwise.
fn only_warning(var: &'static str, value: &str) -> Warning {
    let s = with(&[(var, value)]);
    assert_eq!(s.warnings().len(), 1, "{var}={value:?}: {:?}", s.warnings());
    let w = s.warnings()[0].clone();
    assert_eq!((w.var, w.value.as_str()), (var, value));
    let mut s = s;
    s.warnings.clear();
    assert_eq!(s, Settings::default(), "{var}={value:?} changed a setting");
    w
}

#[test]
fn an_empty_environment_gives_the_defaults_and_no_warning() {
    let s = Settings::default();
    assert_eq!(s, with(&[]));
    assert!(s.warnings().is_empty());
    assert_eq!(s.home, None);
    assert!(!s.shared_area);
    assert_eq!(s.system_home, PathBuf::from("/var/lib/tether"));
    assert_eq!(
        s.system_configs,
        PathBuf::from("/etc/tether/configurations")
    );
    assert_eq!(s.log, None);
    assert_eq!(s.log_max_bytes, 8 << 20);
    assert_eq!(s.output_quota, 1 << 30);
    assert_eq!(s.output_memory, None);
    assert!(s.cgroup);
    assert_eq!(s.pool_max, 32);
    assert_eq!(s.pool_idle, Duration::from_secs(60));
    assert_eq!(s.max_connections, 4096);
    assert_eq!(s.max_connections_per_user, 1024);
    assert_eq!(s.max_sessions_per_user, 64);
    assert_eq!(s.max_jobs_per_user, 64);
    assert_eq!(s.min_idle_timeout, Duration::from_secs(60));
    assert_eq!(s.reconnect_timeout, Duration::from_secs(240));
    assert_eq!(s.connection_idle, Duration::from_secs(600));
    assert_eq!(s.hello_timeout, Duration::from_secs(60));
    assert_eq!((&s.shell, &s.ssh, &s.ssh_config), (&None, &None, &None));
    assert_eq!((&s.remote_exe, &s.remote_home), (&None, &None));
    assert_eq!((&s.exe, &s.host_exe), (&None, &None));
}

#[test]
fn every_variable_is_read() {
    let s = with(&[
        ("TETHER_HOME", "/h"),
        ("TETHER_SHARED_AREA", "1"),
        ("TETHER_SYSTEM_HOME", "/sys"),
        ("TETHER_SYSTEM_CONFIGS", "/cfg"),
        ("TETHER_LOG", "tether_daemon=debug,info"),
        ("TETHER_LOG_MAX_BYTES", "4096"),
        ("TETHER_OUTPUT_QUOTA", "1000"),
        ("TETHER_OUTPUT_MEMORY", "0"),
        ("TETHER_CGROUP", "0"),
        ("TETHER_POOL_MAX", "0"),
        ("TETHER_POOL_IDLE", "5"),
        ("TETHER_MAX_CONNECTIONS", "8"),
        ("TETHER_MAX_CONNECTIONS_PER_USER", "3"),
        ("TETHER_MAX_SESSIONS_PER_USER", "2"),
        ("TETHER_MAX_JOBS_PER_USER", "1"),
        ("TETHER_MIN_IDLE_TIMEOUT", "0"),
        ("TETHER_RECONNECT_TIMEOUT", "7"),
        ("TETHER_CONNECTION_IDLE", "9"),
        ("TETHER_HELLO_TIMEOUT_MS", "250"),
        ("TETHER_SHELL", "/bin/dash"),
        ("TETHER_SSH", "myssh"),
        ("TETHER_SSH_CONFIG", "/c"),
        ("TETHER_TRANSPORT", "Native"),
        ("TETHER_REMOTE_EXE", "/opt/tether"),
        ("TETHER_REMOTE_HOME", "/far"),
        ("TETHER_EXE", "/x/tether"),
        ("TETHER_HOST_EXE", "/x/host"),
        ("UNRELATED", "ignored"),
    ]);
    assert!(s.warnings().is_empty(), "{:?}", s.warnings());
    assert_eq!(s.home, Some(PathBuf::from("/h")));
    assert!(s.shared_area);
    assert_eq!(s.system_home, PathBuf::from("/sys"));
    assert_eq!(s.system_configs, PathBuf::from("/cfg"));
    assert_eq!(s.log.as_deref(), Some("tether_daemon=debug,info"));
    assert_eq!(s.log_max_bytes, 4096);
    assert_eq!(s.output_quota, 1000);
    assert_eq!(s.output_memory, Some(0));
    assert!(!s.cgroup);
    assert_eq!(s.pool_max, 0);
    assert_eq!(s.pool_idle, Duration::from_secs(5));
    assert_eq!(s.max_connections, 8);
    assert_eq!(s.max_connections_per_user, 3);
    assert_eq!(s.max_sessions_per_user, 2);
    assert_eq!(s.max_jobs_per_user, 1);
    assert_eq!(s.min_idle_timeout, Duration::ZERO);
    assert_eq!(s.reconnect_timeout, Duration::from_secs(7));
    assert_eq!(s.connection_idle, Duration::from_secs(9));
    assert_eq!(s.hello_timeout, Duration::from_millis(250));
    assert_eq!(s.shell.as_deref(), Some("/bin/dash"));
    assert_eq!(s.ssh.as_deref(), Some("myssh"));
    assert_eq!(s.ssh_config.as_deref(), Some("/c"));
    assert_eq!(s.transport, tether_proto::Transport::Native);
    assert_eq!(s.remote_exe.as_deref(), Some("/opt/tether"));
    assert_eq!(s.remote_home.as_deref(), Some("/far"));
    assert_eq!(s.exe, Some(PathBuf::from("/x/tether")));
    assert_eq!(s.host_exe, Some(PathBuf::from("/x/host")));
}

#[test]
fn sizes_take_k_m_g_only_where_they_did() {
    for (v, n) in [
        ("512", 512),
        ("8K", 8 << 10),
        (" 3m ", 3 << 20),
        ("1G", 1 << 30),
    ] {
        assert_eq!(with(&[("TETHER_LOG_MAX_BYTES", v)]).log_max_bytes, n, "{v}");
    }
    // The output sizes are plain bytes.
    only_warning("TETHER_OUTPUT_QUOTA", "1M");
    only_warning("TETHER_OUTPUT_MEMORY", "1M");
    only_warning("TETHER_LOG_MAX_BYTES", "0");
    only_warning("TETHER_LOG_MAX_BYTES", "lots");
}

#[test]
fn an_unknown_transport_is_the_default_with_a_warning() {
    // (only_warning also checks that every setting kept its default.)
    only_warning("TETHER_TRANSPORT", "russh");
    assert_eq!(with(&[]).transport, tether_proto::Transport::Ssh);
    let s = with(&[("TETHER_TRANSPORT", " SSH ")]);
    assert_eq!(s.transport, tether_proto::Transport::Ssh);
}

#[test]
fn durations_in_their_units() {
    let idle = |v| with(&[("TETHER_CONNECTION_IDLE", v)]).connection_idle;
    assert_eq!(idle("90"), Duration::from_secs(90));
    assert_eq!(idle("90s"), Duration::from_secs(90));
    assert_eq!(idle("10m"), Duration::from_secs(600));
    assert_eq!(idle("1h 30m"), Duration::from_secs(5400));
    only_warning("TETHER_CONNECTION_IDLE", "soon");
    // Whole seconds only for the others.
    only_warning("TETHER_RECONNECT_TIMEOUT", "10m");
    only_warning("TETHER_POOL_IDLE", "1.5");
    only_warning("TETHER_MIN_IDLE_TIMEOUT", "-1");
    only_warning("TETHER_HELLO_TIMEOUT_MS", "1s");
    // A spare is kept at least a second.
    assert_eq!(
        with(&[("TETHER_POOL_IDLE", "0")]).pool_idle,
        Duration::from_secs(1)
    );
}

#[test]
fn limits_must_be_more_than_zero_where_they_had_to_be() {
    for var in [
        "TETHER_MAX_CONNECTIONS",
        "TETHER_MAX_CONNECTIONS_PER_USER",
        "TETHER_MAX_SESSIONS_PER_USER",
        "TETHER_MAX_JOBS_PER_USER",
        "TETHER_OUTPUT_QUOTA",
    ] {
        let w = only_warning(var, "0");
        assert_eq!(w.expected, POSITIVE);
        only_warning(var, "x");
    }
    // 0 spares turns them off; 0 bytes in memory spools everything.
    assert!(with(&[("TETHER_POOL_MAX", "0")]).warnings().is_empty());
    only_warning("TETHER_POOL_MAX", "-1");
}

#[test]
fn the_per_user_connections_follow_the_cap() {
    let s = with(&[("TETHER_MAX_CONNECTIONS", "100")]);
    assert_eq!(s.max_connections_per_user, 25);
    let s = with(&[("TETHER_MAX_CONNECTIONS", "2")]);
    assert_eq!(s.max_connections_per_user, 1);
    let s = with(&[("TETHER_MAX_CONNECTIONS", "bad")]);
    assert_eq!(s.max_connections_per_user, 1024);
}

#[test]
fn cgroups_are_turned_off_by_the_usual_words() {
    for v in ["0", "off", "No", " FALSE "] {
        let s = with(&[("TETHER_CGROUP", v)]);
        assert!(!s.cgroup && s.warnings().is_empty(), "{v}");
    }
    for v in ["", "1", "on", "yes", "true"] {
        let s = with(&[("TETHER_CGROUP", v)]);
        assert!(s.cgroup && s.warnings().is_empty(), "{v}");
    }
    only_warning("TETHER_CGROUP", "disabled");
}

#[test]
fn empty_text_and_paths_are_unset_but_empty_programs_are_kept() {
    let s = with(&[
        ("TETHER_HOME", ""),
        ("TETHER_SYSTEM_HOME", ""),
        ("TETHER_SHELL", ""),
        ("TETHER_SSH", ""),
        ("TETHER_REMOTE_HOME", ""),
        ("TETHER_SHARED_AREA", "yes"),
    ]);
    assert!(s.warnings().is_empty());
    let mut defaults = Settings::default();
    defaults.warnings.clear();
    assert_eq!(s, defaults);
    // An empty program is no program, as for every other variable: the default is used.
    let s = with(&[
        ("TETHER_EXE", ""),
        ("TETHER_HOST_EXE", ""),
        ("TETHER_LOG", ""),
    ]);
    assert_eq!((s.exe.as_ref(), s.host_exe.as_ref()), (None, None));
    assert_eq!(s.log.as_deref(), Some(""));
}

#[test]
fn text_that_is_not_utf8_is_a_warning_and_paths_keep_their_bytes() {
    let bad = || OsString::from_vec(vec![b'/', 0xff]);
    let s = Settings::from_os_vars([
        (OsString::from("TETHER_SHELL"), bad()),
        (OsString::from("TETHER_POOL_MAX"), bad()),
        (OsString::from("TETHER_HOME"), bad()),
    ]);
    let vars: Vec<_> = s.warnings().iter().map(|w| w.var).collect();
    assert_eq!(vars, ["TETHER_POOL_MAX", "TETHER_SHELL"]);
    assert_eq!(s.shell, None);
    assert_eq!(s.pool_max, 32);
    assert_eq!(s.home, Some(PathBuf::from(bad())));
}

#[test]
fn a_warning_names_the_variable_and_the_value() {
    let w = only_warning("TETHER_POOL_MAX", "lots");
    assert_eq!(
        w.to_string(),
        "ignoring TETHER_POOL_MAX=\"lots\": expected a whole number; the default applies"
    );
}

#[test]
fn every_name_is_listed_once() {
    let mut all = vars::ALL.to_vec();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), vars::ALL.len());
    assert!(all.iter().all(|v| v.starts_with("TETHER_")));
}

#[test]
fn the_table_in_the_docs_has_every_variable() {
    let doc = include_str!("../../../docs/CONFIGURATION.md");
    let table = &doc[doc.find("## Environment variables").expect("the section")..];
    for var in vars::ALL {
        assert!(
            table.contains(&format!("| `{var}` |")),
            "docs/CONFIGURATION.md has no row for {var}"
        );
    }
}
