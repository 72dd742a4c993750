//! Two users of one system daemon: alice, whose session the tests attack, and bob, who
//! attacks it.

use super::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tether_proto::Response;

/// Alice with two sessions, `pad` then `vault` (so `vault` is Id 2, and has `x=42` set), and
/// Bob with one, `mine` (Id 1): no word of Alice's, name, Id or instance id, names anything
/// of Bob's by accident.
pub struct Pair {
    pub sys: System,
    pub alice: User,
    pub bob: User,
    /// Alice's `vault`.
    pub iid: String,
    /// Bob's `mine`.
    pub bob_iid: String,
    pub daemon: u32,
}

pub fn pair(env: &[(&str, &str)]) -> Pair {
    let sys = System::new(env);
    let alice = sys.user("a", &[]);
    let bob = sys.user("b", &[]);
    sys.start();
    sys.new_session(&alice, "pad", &[]);
    let vault = sys.new_session(&alice, "vault", &[]);
    assert_eq!(vault["id"], 2, "{vault}");
    sys.invoke(&alice, "vault", "x=42").success();
    let mine = sys.new_session(&bob, "mine", &[]);
    assert_eq!(mine["id"], 1, "{mine}");
    let iid = vault["instance_id"].as_str().unwrap().to_owned();
    let bob_iid = mine["instance_id"].as_str().unwrap().to_owned();
    let daemon = sys.daemon_pid();
    Pair {
        sys,
        alice,
        bob,
        iid,
        bob_iid,
        daemon,
    }
}

impl Pair {
    /// Alice's session is still Opened and still has her variable; the daemon is the same.
    #[track_caller]
    pub fn assert_whole(&self) {
        let s = self.sys.session(&self.alice, "vault");
        assert_eq!(s["state"], "Opened", "alice's session was harmed: {s}");
        self.sys
            .invoke(&self.alice, "vault", "echo \"x=$x\"")
            .success()
            .stdout_is("x=42\n");
        assert_eq!(
            self.sys.daemon_pid(),
            self.daemon,
            "the system daemon died or restarted"
        );
    }

    /// Bob plants a copy of Alice's session record in his own session's `jobs` directory
    /// (which his shell may write), its instance id replaced by a path to her session; the
    /// word `<bob's iid>/jobs/x` then names that file as a record.
    pub fn plant_record(&self) -> String {
        let alice_area = self.sys.area(&self.alice);
        let record = alice_area.join("hosts").join(format!("{}.json", self.iid));
        let mut meta: Value =
            serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
        let steer = format!("../../{}/hosts/{}", self.alice.uid, self.iid);
        assert!(
            meta.pointer("/info/instance_id").is_some(),
            "no info.instance_id in {meta}"
        );
        meta["info"]["instance_id"] = Value::String(steer);
        let planted = self
            .sys
            .area(&self.bob)
            .join("hosts")
            .join(&self.bob_iid)
            .join("jobs")
            .join("x.json");
        self.sys
            .as_user(
                &self.bob,
                &[
                    "invoke",
                    "-s",
                    "mine",
                    "--arg",
                    &meta.to_string(),
                    "--arg",
                    planted.to_str().unwrap(),
                    "--",
                    "printf '%s' \"$1\" > \"$2\"",
                ],
            )
            .success();
        assert_eq!(owner(&planted), self.bob.uid, "bob's file was not written");
        format!("{}/jobs/x", self.bob_iid)
    }
}

/// Frames that mean something ran or something of a session was shown.
pub fn ran_or_showed(frames: &[Response], iid: &str) -> Option<String> {
    frames.iter().find_map(|f| match f {
        Response::Started { .. } | Response::Output { .. } | Response::Exit(_) => {
            Some(format!("{f:?}"))
        }
        Response::Sessions(v) if v.iter().any(|s| s.instance_id == iid) => {
            Some(format!("alice's session shown: {f:?}"))
        }
        Response::SessionJobData(_) => Some(format!("{f:?}")),
        _ => None,
    })
}

/// Files that appear in `dir` within ~2 s (commands that ran and wrote their uid there),
/// with what they hold; empty when none does.
pub fn markers_in(dir: &Path) -> Vec<String> {
    let list = || -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    while list().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // A marker's command may still be writing it: a moment for its line.
    let deadline = Instant::now() + Duration::from_secs(2);
    let complete = |p: &PathBuf| std::fs::read_to_string(p).is_ok_and(|s| s.ends_with('\n'));
    while !list().iter().all(complete) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    list()
        .iter()
        .map(|p| {
            let who = std::fs::read_to_string(p).unwrap_or_default();
            format!("{} (written by uid {})", p.display(), who.trim())
        })
        .collect()
}
