//! Every word a client uses to name a session is checked before any handler sees the request
//! (`tether_proto::validate_word`): a name, an Id or an instance id, never a path. Handlers
//! then resolve words only in their own view's registry, and paths are only ever built from
//! instance ids that passed this check (and `Paths` refuses any other).

use tether_proto::{ErrorInfo, ErrorKind, Request, validate_word};

/// Refuses a request that names a session with anything but a name, an Id or an instance id.
pub fn check(req: &Request) -> Result<(), ErrorInfo> {
    let words: Vec<&str> = match req {
        Request::Invoke(s) => vec![s.session.as_str()],
        Request::Remove(r) => r.sessions.iter().map(String::as_str).collect(),
        Request::Disconnect(l) | Request::Connect(l) | Request::Receive(l) => {
            l.sessions.iter().map(String::as_str).collect()
        }
        Request::Resume { session, .. } | Request::Aside { session, .. } => {
            vec![session.as_str()]
        }
        Request::SessionJob(j) => {
            if !tether_proto::is_instance_id(&j.job) {
                return Err(ErrorInfo::new(
                    ErrorKind::Usage,
                    "a session job id is a UUID",
                ));
            }
            vec![j.session.as_str()]
        }
        Request::JobStart(j) => j.children.iter().map(|c| c.spec.session.as_str()).collect(),
        _ => Vec::new(),
    };
    // An empty word in an invocation means a temporary session; elsewhere it names nothing.
    let temporary_ok = matches!(req, Request::Invoke(_) | Request::JobStart(_));
    for w in words {
        if w.is_empty() && temporary_ok {
            continue;
        }
        validate_word(w)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_proto::{InvokeSpec, SessionList};

    #[test]
    fn paths_are_refused_wherever_a_session_is_named() {
        let path = "../../0/hosts/0123abcd-4567-89ef-0123-456789abcdef".to_string();
        let list = SessionList {
            sessions: vec!["ok".into(), path.clone()],
            remote: None,
            keep: false,
        };
        for req in [
            Request::Invoke(InvokeSpec {
                session: path.clone(),
                ..Default::default()
            }),
            Request::Receive(list.clone()),
            Request::Connect(list.clone()),
            Request::Disconnect(list),
            Request::Resume {
                session: path.clone(),
                from: 0,
                keep_stdin: false,
                keep: false,
            },
            Request::Aside {
                session: path.clone(),
                invocation: 0,
                what: tether_proto::Aside::Cancel,
            },
        ] {
            let e = check(&req).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Usage, "{req:?}");
            assert!(e.message.contains("not a valid session"), "{e:?}");
        }
        assert!(
            check(&Request::Invoke(InvokeSpec::default())).is_ok(),
            "a temporary invocation names no session"
        );
    }
}
