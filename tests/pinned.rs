//! ssh forced commands (SPEC §3.19, issue 6 point 4): a key whose authorized_keys line forces
//! `tether bridge --configuration ops` reaches that configuration and nothing else, not even
//! the listing of other configurations' sessions. Through the sshd harness.

mod common;
use common::sshd::setup;
use common::*;

#[test]
fn a_pinned_key_reaches_one_configuration_and_nothing_else() {
    let (sshd, remote, client) = setup();
    remote.run(&["daemon", "start"]).success();
    let dir = remote.path().join("configurations");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("ops.toml"),
        "engine = \"restricted\"\n[[allow]]\ncommand = \"echo\"\nrest = \"re:[a-z ]*\"\n",
    )
    .unwrap();
    // A session of another configuration, made with the ordinary key.
    client
        .run(&["new", "tether-test", "--name", "open"])
        .success();
    remote.note_session(&remote.session("open"));

    let pinned = sshd.pinned_alias(&remote, "ops");
    let pc = sshd.client_for(&remote);
    let s = pc.run(&["new", &pinned, "--name", "p", "--json"]).success();
    assert_eq!(single_session(&s)["configuration_name"], "ops");
    remote.note_session(&remote.session("p"));
    pc.invoke("p", "echo pinned")
        .success()
        .stdout_is("pinned\n");
    pc.invoke("p", "id")
        .code_is(6)
        .clear_error("not allowed in configuration ops", 1);
    // Only this configuration's sessions are visible or reachable.
    let listed = pc
        .run(&["get", "--computer", &pinned, "--json"])
        .success()
        .json();
    let names: Vec<String> = names(listed.as_array().unwrap());
    assert_eq!(names, ["p"], "{listed}");
    pc.run(&["connect", "--computer", &pinned, "--name", "open"])
        .code_is(3)
        .clear_error("no session named open", 1);
    pc.run(&["new", &pinned, "--configuration", "default"])
        .code_is(6)
        .clear_error("limited to configuration ops", 1);
    let configs = pc
        .run(&["config", "list", "--computer", &pinned, "--json"])
        .success()
        .json();
    assert_eq!(configs.as_array().map(|c| c.len()), Some(1), "{configs}");
    assert_eq!(configs[0]["name"], "ops");
    // A temporary session through the pinned key has that configuration too.
    pc.run(&["invoke", "--computer", &pinned, "echo temporary"])
        .success()
        .stdout_is("temporary\n");
    pc.run(&["invoke", "--computer", &pinned, "id"])
        .code_is(6)
        .clear_error("not allowed", 1);
    // The other session is untouched, and the ordinary key still sees both.
    client
        .invoke("open", "echo $((1+1))")
        .success()
        .stdout_is("2\n");
    let all = client
        .run(&["get", "--computer", "tether-test", "--json"])
        .success()
        .json();
    assert_eq!(all.as_array().map(|a| a.len()), Some(2), "{all}");
}
