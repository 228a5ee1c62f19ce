//! Latency stages (DESIGN.md §5), shared by runtime, agent, tts, the metrics
//! service and the dashboards.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ProtoError;

/// A measured latency stage of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Stage {
    /// End of caller speech to final transcript (runtime).
    Eou,
    /// Agent time to first token (agent, as seen by the runtime).
    AgentTtft,
    /// Agent time to the complete reply.
    AgentTotal,
    /// Knowledge retrieval (agent).
    Retrieval,
    /// TTS time to first audio byte (tts).
    TtsTtfb,
    /// End of caller speech to first agent audio byte sent (runtime).
    E2e,
    /// Webhook handling (gateway).
    Webhook,
}

impl Stage {
    /// Every stage, in declaration order.
    pub const ALL: [Stage; 7] = [
        Stage::Eou,
        Stage::AgentTtft,
        Stage::AgentTotal,
        Stage::Retrieval,
        Stage::TtsTtfb,
        Stage::E2e,
        Stage::Webhook,
    ];

    /// The wire name, identical to the serde form (e.g. `"agentTtft"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Eou => "eou",
            Stage::AgentTtft => "agentTtft",
            Stage::AgentTotal => "agentTotal",
            Stage::Retrieval => "retrieval",
            Stage::TtsTtfb => "ttsTtfb",
            Stage::E2e => "e2e",
            Stage::Webhook => "webhook",
        }
    }

    /// Name of the Prometheus histogram for this stage; base unit seconds,
    /// as Prometheus conventions require (e.g. `voice_agent_agent_ttft_seconds`).
    pub const fn metric_name(self) -> &'static str {
        match self {
            Stage::Eou => "voice_agent_eou_seconds",
            Stage::AgentTtft => "voice_agent_agent_ttft_seconds",
            Stage::AgentTotal => "voice_agent_agent_total_seconds",
            Stage::Retrieval => "voice_agent_retrieval_seconds",
            Stage::TtsTtfb => "voice_agent_tts_ttfb_seconds",
            Stage::E2e => "voice_agent_e2e_seconds",
            Stage::Webhook => "voice_agent_webhook_seconds",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Stage {
    type Err = ProtoError;

    /// Parses the wire name exactly (case-sensitive, like serde).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::ALL
            .into_iter()
            .find(|stage| stage.as_str() == s)
            .ok_or_else(|| ProtoError::UnknownName {
                kind: "stage",
                value: s.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_serde_and_parse_back() {
        let expected = [
            "eou",
            "agentTtft",
            "agentTotal",
            "retrieval",
            "ttsTtfb",
            "e2e",
            "webhook",
        ];
        for (stage, name) in Stage::ALL.into_iter().zip(expected) {
            assert_eq!(stage.as_str(), name);
            assert_eq!(
                serde_json::to_string(&stage).expect("serialize"),
                format!("\"{name}\"")
            );
            assert_eq!(
                serde_json::from_str::<Stage>(&format!("\"{name}\"")).expect("deserialize"),
                stage
            );
            assert_eq!(name.parse::<Stage>().expect("parse"), stage);
        }
    }

    #[test]
    fn metric_names_are_snake_case_seconds() {
        let expected = [
            "voice_agent_eou_seconds",
            "voice_agent_agent_ttft_seconds",
            "voice_agent_agent_total_seconds",
            "voice_agent_retrieval_seconds",
            "voice_agent_tts_ttfb_seconds",
            "voice_agent_e2e_seconds",
            "voice_agent_webhook_seconds",
        ];
        for (stage, name) in Stage::ALL.into_iter().zip(expected) {
            assert_eq!(stage.metric_name(), name);
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            );
        }
    }

    #[test]
    fn unknown_stage_is_refused() {
        assert!("agent_ttft".parse::<Stage>().is_err());
        assert!("E2E".parse::<Stage>().is_err());
        assert!(serde_json::from_str::<Stage>("\"stt\"").is_err());
        assert_eq!(
            "tts".parse::<Stage>().expect_err("unknown").to_string(),
            "unknown stage: \"tts\""
        );
    }
}
