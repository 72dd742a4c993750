//! The session object as users see it (`get`, `new`, `--json`).

use serde::{Deserialize, Serialize};

/// Session state, named as PowerShell names `PSSession.State`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Opening,
    Opened,
    Disconnecting,
    Disconnected,
    Connecting,
    Closing,
    Closed,
    Broken,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Opening => "Opening",
            State::Opened => "Opened",
            State::Disconnecting => "Disconnecting",
            State::Disconnected => "Disconnected",
            State::Connecting => "Connecting",
            State::Closing => "Closing",
            State::Closed => "Closed",
            State::Broken => "Broken",
        }
    }

    /// Parses a state name case-insensitively (for `get --state`).
    pub fn parse(s: &str) -> Option<State> {
        [
            State::Opening,
            State::Opened,
            State::Disconnecting,
            State::Disconnected,
            State::Connecting,
            State::Closing,
            State::Closed,
            State::Broken,
        ]
        .into_iter()
        .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }
}

/// Whether this client can use the session now.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Available,
    Busy,
    None,
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Available => "Available",
            Availability::Busy => "Busy",
            Availability::None => "None",
        }
    }
}

/// One session as reported to users. Field names are the SPEC's JSON names.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SessionInfo {
    pub id: u32,
    pub name: String,
    pub instance_id: String,
    pub computer_name: String,
    pub computer_type: String,
    pub configuration_name: String,
    #[serde(with = "state_str")]
    pub state: State,
    #[serde(with = "avail_str")]
    pub availability: Availability,
    pub owner: String,
    pub idle_timeout_s: u64,
    pub created_on: String,
    pub disconnected_on: Option<String>,
    pub expires_on: Option<String>,
    /// Why the session is Broken or Closed, when it is.
    pub reason: Option<String>,
    /// Process id of the session host (0 when it is gone).
    pub host_pid: u32,
    /// The client the session is connected to (or, while Disconnected, was last).
    pub held_by: Option<crate::ClientId>,
    /// Background jobs running inside the session (`job start --session`).
    pub jobs: u32,
}

// States travel as strings so the JSON a user reads says "Opened", and the wire format stays
// readable in captures; the cost is a few bytes per listing.
mod state_str {
    use super::State;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    pub fn serialize<S: Serializer>(s: &State, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s.as_str())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<State, D::Error> {
        let s = String::deserialize(de)?;
        State::parse(&s).ok_or_else(|| D::Error::custom(format!("unknown state {s}")))
    }
}

mod avail_str {
    use super::Availability;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    pub fn serialize<S: Serializer>(a: &Availability, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(a.as_str())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Availability, D::Error> {
        match String::deserialize(de)?.as_str() {
            "Available" => Ok(Availability::Available),
            "Busy" => Ok(Availability::Busy),
            "None" => Ok(Availability::None),
            other => Err(D::Error::custom(format!("unknown availability {other}"))),
        }
    }
}
