//! A network namespace joined to this one by a veth pair, for tests that take a link down.
//! Needs root and `ip` (iproute2). Addresses are inside 10.231.0.0/16, which only exists
//! between the pair; everything is deleted on drop.

use std::process::Command;

use super::procs::{my_uid, require_program};

pub struct Netns {
    pub name: String,
    /// Our end of the pair (the one taken down and up).
    pub veth: String,
    /// The address inside the namespace.
    pub inner: String,
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {} failed", args.join(" "));
}

impl Netns {
    pub fn create() -> Netns {
        assert_eq!(
            my_uid(),
            0,
            "this test creates a network namespace, so it must run as root"
        );
        require_program("ip", "iproute2");
        // Unique within this test process too: tests share one process (tests/it).
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = (std::process::id().wrapping_mul(7).wrapping_add(n)) % 60_000;
        let name = format!("tether-t{id}");
        let veth = format!("tt{id}a");
        let peer = format!("tt{id}b");
        let (a, b) = (id / 250 % 250 + 1, id % 250 + 1);
        let outer = format!("10.231.{a}.{b}");
        let inner = format!("10.232.{a}.{b}");
        ip(&["netns", "add", &name]);
        let ns = Netns { name, veth, inner };
        ip(&[
            "link", "add", &ns.veth, "type", "veth", "peer", "name", &peer,
        ]);
        ip(&["link", "set", &peer, "netns", &ns.name]);
        ip(&["addr", "add", &format!("{outer}/32"), "dev", &ns.veth]);
        ip(&["link", "set", &ns.veth, "up"]);
        ip(&["route", "add", &format!("{}/32", ns.inner), "dev", &ns.veth]);
        let inside = |args: &[&str]| {
            let mut v = vec!["netns", "exec", &ns.name, "ip"];
            v.extend_from_slice(args);
            ip(&v);
        };
        inside(&["link", "set", "lo", "up"]);
        inside(&["addr", "add", &format!("{}/32", ns.inner), "dev", &peer]);
        inside(&["link", "set", &peer, "up"]);
        inside(&["route", "add", &format!("{outer}/32"), "dev", &peer]);
        ns
    }

    /// Takes our end of the link down or up.
    pub fn link(&self, up: bool) {
        ip(&["link", "set", &self.veth, if up { "up" } else { "down" }]);
        if up {
            // Bringing a link down drops its routes; put ours back.
            let _ = Command::new("ip")
                .args([
                    "route",
                    "replace",
                    &format!("{}/32", self.inner),
                    "dev",
                    &self.veth,
                ])
                .status();
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
