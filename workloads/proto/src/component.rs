//! The components of a VoiceAgent deployment, as named on the wire and in metrics.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ProtoError;

/// A workload component of a VoiceAgent, plus the cluster-wide metrics service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Component {
    /// Twilio/LiveKit webhooks and the Media Streams edge.
    Gateway,
    /// The per-call voice loop.
    Runtime,
    /// Retrieval and LLM replies.
    Agent,
    /// Speech synthesis.
    Tts,
    /// The cluster's metrics service.
    Metrics,
}

impl Component {
    /// Every component, in declaration order.
    pub const ALL: [Component; 5] = [
        Component::Gateway,
        Component::Runtime,
        Component::Agent,
        Component::Tts,
        Component::Metrics,
    ];

    /// The wire name, identical to the serde form (e.g. `"tts"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Component::Gateway => "gateway",
            Component::Runtime => "runtime",
            Component::Agent => "agent",
            Component::Tts => "tts",
            Component::Metrics => "metrics",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Component {
    type Err = ProtoError;

    /// Parses the wire name exactly (case-sensitive, like serde).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Component::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| ProtoError::UnknownName {
                kind: "component",
                value: s.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_matches_serde_and_parses_back() {
        for c in Component::ALL {
            let json = serde_json::to_string(&c).expect("serialize");
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            assert_eq!(c.as_str().parse::<Component>().expect("parse"), c);
            assert_eq!(c.to_string(), c.as_str());
        }
    }

    #[test]
    fn unknown_component_is_refused() {
        assert!("Gateway".parse::<Component>().is_err());
        assert!(serde_json::from_str::<Component>("\"stt\"").is_err());
        let err = "stt".parse::<Component>().expect_err("unknown");
        assert_eq!(err.to_string(), "unknown component: \"stt\"");
    }
}
