//! Byte-exact golden frames for every message variant (issue 19): the wire format is a
//! contract with running session hosts and with other computers' daemons, so a change to any
//! message (a field added, removed, reordered or retyped, a variant moved) must be deliberate.
//! When one of these fails, the encoding changed: bump [`crate::PROTOCOL_VERSION`] (and, for
//! what session hosts speak, keep the old encoding readable; docs/PROTOCOL.md), then update
//! `golden.txt` with the new frames.
//!
//! Every sample fills its fields with distinct, non-default values where it can, so that
//! swapping two fields of one type is seen too.

use crate::*;

fn client() -> ClientId {
    ClientId {
        id: "c1".into(),
        label: "lab".into(),
    }
}

fn remote() -> RemoteTarget {
    RemoteTarget {
        computer: "db1".into(),
        transport: Transport::Native,
        ..Default::default()
    }
}

fn invoke_spec() -> InvokeSpec {
    InvokeSpec {
        session: "s".into(),
        script: "echo hi".into(),
        args: vec!["a".into()],
        stdin: true,
        timeout_ms: Some(5),
        wait_timeout_ms: Some(6),
        env: vec![("K".into(), "V".into())],
        cwd: Some("/d".into()),
        acked: true,
        tty: Some(TtySpec {
            term: "xterm".into(),
            rows: 24,
            cols: 80,
        }),
        client: Some(client()),
        ..Default::default()
    }
}

fn list() -> SessionList {
    SessionList {
        sessions: vec!["a".into(), "b".into()],
        remote: Some(remote()),
        keep: true,
    }
}

fn query() -> JobQuery {
    JobQuery {
        ids: vec![3, 4],
        any: true,
        timeout_ms: Some(7),
        keep: true,
        ..Default::default()
    }
}

fn info() -> SessionInfo {
    SessionInfo {
        id: 1,
        name: "web".into(),
        instance_id: "00000000-0000-4000-8000-000000000001".into(),
        computer_name: "localhost".into(),
        computer_type: "local".into(),
        configuration_name: "default".into(),
        state: State::Disconnected,
        availability: Availability::Busy,
        owner: "alice".into(),
        idle_timeout_s: 7200,
        created_on: "2026-01-01T00:00:00Z".into(),
        disconnected_on: Some("2026-01-01T00:00:01Z".into()),
        expires_on: None,
        reason: Some("r".into()),
        host_pid: 42,
        held_by: Some(client()),
        jobs: 2,
    }
}

/// One sample of every request variant, named.
pub(crate) fn requests() -> Vec<(&'static str, Request)> {
    use Request::*;
    vec![
        (
            "Hello",
            Hello {
                version: 6,
                agent: "t".into(),
                client: Some(client()),
            },
        ),
        (
            "New",
            New(NewSession {
                name: Some("n".into()),
                idle_timeout_s: Some(9),
                temporary: true,
                output_mode: Some(OutputMode::Drop),
                ..Default::default()
            }),
        ),
        (
            "Get",
            Get(SessionFilter {
                name_glob: Some("w*".into()),
                ..Default::default()
            }),
        ),
        (
            "Remove",
            Remove(RemoveSpec {
                sessions: vec!["x".into()],
                all: true,
            }),
        ),
        ("Invoke", Invoke(invoke_spec())),
        ("Stdin", Stdin(vec![0, 1, 255])),
        ("StdinEof", StdinEof),
        ("Cancel", Cancel),
        ("DaemonStatus", DaemonStatus),
        ("DaemonStop", DaemonStop),
        ("HostInfo", HostInfo),
        ("HostClose", HostClose),
        (
            "Handoff",
            Handoff {
                spec: invoke_spec(),
                prefix: vec![9, 8],
            },
        ),
        ("Disconnect", Disconnect(list())),
        ("Connect", Connect(list())),
        ("Receive", Receive(list())),
        ("HostDisconnect", HostDisconnect(client())),
        ("HostConnect", HostConnect(client())),
        (
            "HandoffReceive",
            HandoffReceive {
                prefix: vec![1],
                from: Some(10),
                acked: true,
                client: client(),
                keep_stdin: false,
                keep: true,
            },
        ),
        (
            "Resume",
            Resume {
                session: "s".into(),
                from: 300,
                keep_stdin: true,
                keep: false,
            },
        ),
        ("Ack", Ack(1 << 40)),
        ("Presence", Presence),
        ("Goodbye", Goodbye),
        ("HostClientGone", HostClientGone(client())),
        (
            "Resize",
            Resize {
                rows: 50,
                cols: 132,
            },
        ),
        (
            "JobStart",
            JobStart(crate::JobStart {
                command: "c".into(),
                children: vec![JobChild {
                    location: "here".into(),
                    spec: invoke_spec(),
                }],
                in_session: true,
            }),
        ),
        ("JobList", JobList(query())),
        ("JobWait", JobWait(query())),
        ("JobReceive", JobReceive(query())),
        ("JobStop", JobStop(query())),
        ("JobRemove", JobRemove(query())),
        (
            "SessionJob",
            SessionJob(crate::SessionJob {
                session: "s".into(),
                job: "j".into(),
                action: SessionJobAction::Read {
                    out_from: 1,
                    err_from: 2,
                },
            }),
        ),
        (
            "Configs",
            Configs(ConfigQuery {
                name: Some("c".into()),
                remote: Some(remote()),
            }),
        ),
        ("Pin", Pin("build".into())),
        ("HostPoolWatch", HostPoolWatch),
        (
            "Bridged",
            Bridged {
                agent: Some("/tmp/a".into()),
            },
        ),
        ("Abandon", Abandon),
        ("HandoffClient", HandoffClient { resumes: true }),
        ("Lend", Lend { invocation: 300 }),
        ("Returned", Returned),
        (
            "LendStdin",
            LendStdin {
                invocation: 300,
                after: 1 << 20,
            },
        ),
        ("GiveStdin", GiveStdin { token: 301 }),
        ("StdinGiven", StdinGiven),
        (
            "Aside",
            Aside {
                session: "s9".into(),
                invocation: 303,
                what: crate::Aside::Cancel,
            },
        ),
        (
            "HostAside",
            HostAside {
                client: client(),
                invocation: 304,
                what: crate::Aside::Ack(305),
            },
        ),
    ]
}

/// One sample of every response variant, named.
pub(crate) fn responses() -> Vec<(&'static str, Response)> {
    use Response::*;
    vec![
        (
            "Hello",
            Hello {
                version: 6,
                pid: 77,
            },
        ),
        ("Sessions", Sessions(vec![info()])),
        (
            "Started",
            Started {
                invocation: 5,
                session: "i".into(),
                from: 6,
                stdin_from: Some(7),
            },
        ),
        (
            "Output",
            Output {
                stream: Stream::Stderr,
                data: vec![0, 255],
            },
        ),
        (
            "Exit",
            Exit(ExitInfo {
                code: 3,
                timed_out: true,
                cancelled: false,
                broken: Some("b".into()),
                cwd: Some("/w".into()),
                typeahead: b"ls\r".to_vec(),
                stdin_taken: Some(9),
            }),
        ),
        ("Ok", Ok),
        (
            "Status",
            Status(crate::DaemonStatus {
                pid: 1,
                sessions: 2,
                ..Default::default()
            }),
        ),
        ("Error", Error(ErrorInfo::new(ErrorKind::Busy, "busy"))),
        ("Notice", Notice("n".into())),
        (
            "Jobs",
            Jobs(vec![JobInfo {
                id: 1,
                name: "j".into(),
                state: "Running".into(),
                has_more_data: true,
                location: "l".into(),
                command: "c".into(),
                children: vec![ChildJobInfo {
                    id: 2,
                    location: "m".into(),
                    state: "Completed".into(),
                    has_more_data: false,
                    exit_code: Some(0),
                    reason: None,
                }],
            }]),
        ),
        (
            "JobOutput",
            JobOutput(vec![JobChunk {
                job: 1,
                location: "l".into(),
                stream: Stream::Stdout,
                data: vec![65],
            }]),
        ),
        (
            "SessionJobData",
            SessionJobData(crate::SessionJobData {
                out: vec![1],
                err: vec![2],
                exit: Some(3),
            }),
        ),
        (
            "Configs",
            Configs(vec![ConfigInfo {
                name: "c".into(),
                file: "f".into(),
                engine: "bash".into(),
                error: None,
                text: "t".into(),
            }]),
        ),
        ("Lent", Lent),
        ("Reclaim", Reclaim),
        ("Relayed", Relayed { token: 302 }),
    ]
}

/// Every variant's name, by an exhaustive match: a new variant does not compile until it is
/// named here, and then the golden test asks for its sample.
fn request_name(r: &Request) -> &'static str {
    use Request::*;
    match r {
        Hello { .. } => "Hello",
        New(_) => "New",
        Get(_) => "Get",
        Remove(_) => "Remove",
        Invoke(_) => "Invoke",
        Stdin(_) => "Stdin",
        StdinEof => "StdinEof",
        Cancel => "Cancel",
        DaemonStatus => "DaemonStatus",
        DaemonStop => "DaemonStop",
        HostInfo => "HostInfo",
        HostClose => "HostClose",
        Handoff { .. } => "Handoff",
        Disconnect(_) => "Disconnect",
        Connect(_) => "Connect",
        Receive(_) => "Receive",
        HostDisconnect(_) => "HostDisconnect",
        HostConnect(_) => "HostConnect",
        HandoffReceive { .. } => "HandoffReceive",
        Resume { .. } => "Resume",
        Ack(_) => "Ack",
        Presence => "Presence",
        Goodbye => "Goodbye",
        HostClientGone(_) => "HostClientGone",
        Resize { .. } => "Resize",
        JobStart(_) => "JobStart",
        JobList(_) => "JobList",
        JobWait(_) => "JobWait",
        JobReceive(_) => "JobReceive",
        JobStop(_) => "JobStop",
        JobRemove(_) => "JobRemove",
        SessionJob(_) => "SessionJob",
        Configs(_) => "Configs",
        Pin(_) => "Pin",
        HostPoolWatch => "HostPoolWatch",
        Bridged { .. } => "Bridged",
        Abandon => "Abandon",
        HandoffClient { .. } => "HandoffClient",
        Lend { .. } => "Lend",
        Returned => "Returned",
        LendStdin { .. } => "LendStdin",
        GiveStdin { .. } => "GiveStdin",
        StdinGiven => "StdinGiven",
        Aside { .. } => "Aside",
        HostAside { .. } => "HostAside",
    }
}

fn response_name(r: &Response) -> &'static str {
    use Response::*;
    match r {
        Hello { .. } => "Hello",
        Sessions(_) => "Sessions",
        Started { .. } => "Started",
        Output { .. } => "Output",
        Exit(_) => "Exit",
        Ok => "Ok",
        Status(_) => "Status",
        Error(_) => "Error",
        Notice(_) => "Notice",
        Jobs(_) => "Jobs",
        JobOutput(_) => "JobOutput",
        SessionJobData(_) => "SessionJobData",
        Configs(_) => "Configs",
        Lent => "Lent",
        Reclaim => "Reclaim",
        Relayed { .. } => "Relayed",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `golden.txt`: one `request NAME HEX` or `response NAME HEX` line per variant.
const GOLDEN: &str = include_str!("golden.txt");

fn golden(kind: &str, name: &str) -> Option<&'static str> {
    GOLDEN.lines().find_map(|l| {
        let mut w = l.split(' ');
        (w.next() == Some(kind) && w.next() == Some(name)).then(|| w.next().unwrap_or(""))
    })
}

#[test]
fn every_variant_has_one_sample() {
    let names: Vec<_> = requests()
        .iter()
        .map(|(n, r)| {
            assert_eq!(*n, request_name(r), "sample named for another variant");
            *n
        })
        .collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "a request variant sampled twice");
    // Variant indices are 0.. in declaration order: the samples must be in that order too,
    // so that a missing one shows as a gap.
    for (i, (_, r)) in requests().iter().enumerate() {
        let frame = encode(r).unwrap();
        assert_eq!(
            frame[4] as usize, i,
            "request sample {i} is not variant {i}"
        );
    }
    for (i, (n, r)) in responses().iter().enumerate() {
        assert_eq!(*n, response_name(r));
        let frame = encode(r).unwrap();
        assert_eq!(
            frame[4] as usize, i,
            "response sample {i} is not variant {i}"
        );
    }
}

#[test]
fn every_variant_encodes_as_its_golden_frame() {
    let mut wrong = Vec::new();
    for (name, r) in requests() {
        let got = hex(&encode(&r).unwrap());
        if golden("request", name) != Some(got.as_str()) {
            wrong.push(format!("request {name} {got}"));
        }
        let back: Request = decode(&encode(&r).unwrap()[4..]).unwrap();
        assert_eq!(back, r);
    }
    for (name, r) in responses() {
        let got = hex(&encode(&r).unwrap());
        if golden("response", name) != Some(got.as_str()) {
            wrong.push(format!("response {name} {got}"));
        }
        let back: Response = decode(&encode(&r).unwrap()[4..]).unwrap();
        assert_eq!(back, r);
    }
    assert!(
        wrong.is_empty(),
        "the wire format changed (see golden.rs); these frames differ from golden.txt:\n{}",
        wrong.join("\n")
    );
}
