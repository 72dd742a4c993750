use super::*;
use proptest::prelude::*;

fn roundtrip<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
    msg: &T,
) {
    let frame = encode(msg).unwrap();
    let len = frame_len(frame[..4].try_into().unwrap()).unwrap();
    assert_eq!(len, frame.len() - 4);
    let back: T = decode(&frame[4..]).unwrap();
    assert_eq!(&back, msg);
}

/// Golden bytes: if this changes, the wire format changed and PROTOCOL_VERSION must be bumped.
#[test]
fn golden_hello_and_output() {
    let hello = encode(&Request::Hello {
        version: 1,
        agent: "t".into(),
        client: None,
    })
    .unwrap();
    assert_eq!(hello, vec![0, 0, 0, 5, 0, 1, 1, b't', 0]);
    let out = encode(&Response::Output {
        stream: Stream::Stderr,
        data: vec![0, 255],
    })
    .unwrap();
    assert_eq!(out, vec![0, 0, 0, 5, 3, 1, 2, 0, 255]);
    let exit = encode(&Response::Exit(ExitInfo {
        code: 7,
        ..Default::default()
    }))
    .unwrap();
    assert_eq!(exit, vec![0, 0, 0, 8, 4, 14, 0, 0, 0, 0, 0, 0]);
}

/// `new --output-mode` travels as the user's explicit choice (or none), so that `block` can
/// override a configuration's `drop`. Golden: a default `New` ends `output_quota: None,
/// output_mode: None`; an explicit mode is `Some` + the variant.
#[test]
fn golden_new_session_output_mode() {
    let new = |output_mode| {
        encode(&Request::New(NewSession {
            output_mode,
            ..Default::default()
        }))
        .unwrap()
    };
    assert_eq!(
        new(None),
        vec![0, 0, 0, 11, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(
        new(Some(OutputMode::Block)),
        vec![0, 0, 0, 12, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]
    );
    assert_eq!(
        new(Some(OutputMode::Drop)),
        vec![0, 0, 0, 12, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    );
    for mode in [None, Some(OutputMode::Block), Some(OutputMode::Drop)] {
        roundtrip(&Request::New(NewSession {
            name: Some("n".into()),
            output_quota: Some(1 << 20),
            output_mode: mode,
            ..Default::default()
        }));
    }
}

#[test]
fn oversized_header_is_refused_before_allocation() {
    assert_eq!(
        frame_len((MAX_FRAME_LEN as u32 + 1).to_be_bytes()),
        Err(DecodeError::TooLarge(MAX_FRAME_LEN + 1))
    );
    assert!(frame_len(u32::MAX.to_be_bytes()).is_err());
}

#[test]
fn unknown_variant_is_an_error_not_a_panic() {
    assert!(matches!(
        decode::<Request>(&[200, 1, 2, 3]),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        decode::<Response>(&[]),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn trailing_bytes_are_refused() {
    let mut f = encode(&Request::Cancel).unwrap();
    f.push(0);
    assert!(decode::<Request>(&f[4..]).is_err());
}

#[test]
fn session_info_json_uses_spec_names() {
    let info = SessionInfo {
        id: 1,
        name: "s".into(),
        instance_id: "u".into(),
        computer_name: "localhost".into(),
        computer_type: "local".into(),
        configuration_name: "default".into(),
        state: State::Opened,
        availability: Availability::Available,
        owner: "root".into(),
        idle_timeout_s: 7200,
        created_on: "2026-01-01T00:00:00Z".into(),
        disconnected_on: None,
        expires_on: None,
        reason: None,
        host_pid: 1,
        held_by: Some(crate::ClientId {
            id: "c".into(),
            label: "me@here #c".into(),
        }),
        jobs: 0,
    };
    roundtrip(&Response::Sessions(vec![info.clone()]));
    let json = serde_json::to_string(&info).unwrap();
    assert!(json.contains("\"state\":\"Opened\""), "{json}");
    assert!(json.contains("\"availability\":\"Available\""), "{json}");
}

#[test]
fn names_are_validated() {
    assert!(validate_name("smoke-local").is_ok());
    assert!(validate_name("Session1").is_ok());
    for bad in ["", "12", "-o", "a b", "a;b", &"x".repeat(65)] {
        assert!(validate_name(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn exit_codes_follow_the_spec() {
    assert_eq!(ErrorKind::Usage.exit_code(), 2);
    assert_eq!(ErrorKind::NotFound.exit_code(), 3);
    assert_eq!(ErrorKind::Busy.exit_code(), 4);
    assert_eq!(ErrorKind::Connection.exit_code(), 5);
    assert_eq!(ErrorKind::Permission.exit_code(), 6);
    assert_eq!(ErrorKind::Lost.exit_code(), 255);
}

proptest! {
    #[test]
    fn invoke_roundtrips(script in ".*", args in proptest::collection::vec(".*", 0..4),
                         stdin in any::<bool>(), t in proptest::option::of(any::<u64>()),
                         computer in proptest::option::of("[a-z@:.]{0,20}")) {
        let remote = computer.map(|computer| RemoteTarget { computer,
            ssh_options: vec!["A=b".into()], ..Default::default() });
        roundtrip(&Request::Invoke(InvokeSpec { session: "s".into(), script, args, stdin,
            timeout_ms: t, wait_timeout_ms: None, env: vec![], cwd: None, remote, acked: stdin,
            client: None, tty: None, configuration: None, isolated: stdin, probe: !stdin }));
    }

    #[test]
    fn output_data_len_reads_what_encode_wrote(data in proptest::collection::vec(any::<u8>(), 0..70_000),
                                               err in any::<bool>()) {
        let stream = if err { Stream::Stderr } else { Stream::Stdout };
        let frame = encode(&Response::Output { stream, data: data.clone() }).unwrap();
        prop_assert_eq!(output_data_len(&frame[FRAME_HEADER_LEN..]), Some(data.len()));
        // Anything else is not mistaken for output.
        let exit = encode(&Response::Exit(ExitInfo { code: 3, ..Default::default() })).unwrap();
        prop_assert_eq!(output_data_len(&exit[FRAME_HEADER_LEN..]), None);
        let cut = &frame[FRAME_HEADER_LEN..frame.len() - usize::from(!data.is_empty())];
        if !data.is_empty() {
            prop_assert_eq!(output_data_len(cut), None);
        }
    }

    #[test]
    fn bulk_prefixes_find_the_data_encode_wrote(data in proptest::collection::vec(any::<u8>(), 0..70_000),
                                                err in any::<bool>()) {
        let stream = if err { Stream::Stderr } else { Stream::Stdout };
        let out = encode(&Response::Output { stream, data: data.clone() }).unwrap();
        let payload = &out[FRAME_HEADER_LEN..];
        let head = &payload[..payload.len().min(BULK_PREFIX_MAX)];
        let (s, start) = output_prefix(head, payload.len()).unwrap();
        prop_assert_eq!(s, stream);
        prop_assert_eq!(&payload[start..], &data[..]);
        prop_assert_eq!(stdin_prefix(head, payload.len()), None);
        let inp = encode(&Request::Stdin(data.clone())).unwrap();
        let header = stdin_frame_header(data.len());
        prop_assert_eq!(&inp[..header.len()], &header[..]);
        prop_assert_eq!(&out[..out.len() - data.len()], &output_frame_header(stream, data.len())[..]);
        let payload = &inp[FRAME_HEADER_LEN..];
        let head = &payload[..payload.len().min(BULK_PREFIX_MAX)];
        let start = stdin_prefix(head, payload.len()).unwrap();
        prop_assert_eq!(&payload[start..], &data[..]);
        prop_assert_eq!(output_prefix(head, payload.len()), None);
        // A length that does not add up is not taken for bulk: the reader decodes (and fails).
        prop_assert_eq!(stdin_prefix(head, payload.len() + 1), None);
        // Other messages are never bulk.
        for other in [encode(&Request::StdinEof).unwrap(), encode(&Request::Cancel).unwrap()] {
            let p = &other[FRAME_HEADER_LEN..];
            prop_assert_eq!(stdin_prefix(p, p.len()), None);
            prop_assert_eq!(output_prefix(p, p.len()), None);
        }
    }

    #[test]
    fn output_roundtrips(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        roundtrip(&Response::Output { stream: Stream::Stdout, data });
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode::<Request>(&bytes);
        let _ = decode::<Response>(&bytes);
    }
}

proptest! {
    #[test]
    fn output_header_matches_the_encoder(len in 0usize..300_000, err in any::<bool>()) {
        let stream = if err { Stream::Stderr } else { Stream::Stdout };
        let data = vec![7u8; len];
        let mut fast = output_frame_header(stream, len);
        fast.extend_from_slice(&data);
        prop_assert_eq!(fast, encode(&Response::Output { stream, data }).unwrap());
    }
}
