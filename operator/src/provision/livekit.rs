//! LiveKit's SIP service over Twirp: the inbound trunk that accepts calls to
//! a number and the dispatch rule that puts each caller in a room for the
//! agent.
//!
//! Wire format (<https://docs.livekit.io/sip/api/>, Twirp v7): `POST
//! {url}/twirp/livekit.SIP/{Method}` with a JSON body (the protobuf JSON
//! mapping of `livekit_sip.proto`: lowerCamelCase fields, oneofs as one
//! field), `Authorization: Bearer {jwt}` where the JWT is HS256-signed with
//! the API secret, `iss` = the API key, and carries the `sip.admin` grant.
//! Errors are Twirp's `{"code", "msg", "meta"}` with a matching HTTP status
//! (`not_found` → 404, `unauthenticated` → 401, `internal` → 500, …).

use std::collections::HashMap;
use std::time::Duration;

use livekit_api::access_token::{AccessToken, SIPGrants};
use livekit_protocol as proto;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Secret, VendorError, clip, http_client};

const VENDOR: &str = "LiveKit";
/// Lifetime of the JWT of one request.
const TOKEN_TTL: Duration = Duration::from_secs(600);

/// A LiveKit project's URL and API credentials (from the VoiceAgent's
/// Secrets).
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The server URL (`wss://…` or `https://…`).
    pub url: String,
    /// The API key (the JWT issuer; not secret).
    pub api_key: String,
    /// The API secret (the JWT's HMAC key).
    pub api_secret: Secret,
}

impl Credentials {
    /// The Twirp base URL: `wss://` becomes `https://` (`ws://` `http://`).
    fn base_url(&self) -> Result<String, VendorError> {
        let url = self.url.trim().trim_end_matches('/');
        let url = if let Some(rest) = url.strip_prefix("wss://") {
            format!("https://{rest}")
        } else if let Some(rest) = url.strip_prefix("ws://") {
            format!("http://{rest}")
        } else {
            url.to_string()
        };
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(VendorError::Invalid {
                vendor: VENDOR,
                message: "the LiveKit URL must start with wss://, ws://, https:// or http://"
                    .into(),
            });
        }
        Ok(url)
    }

    /// A fresh token with the `sip.admin` grant.
    fn token(&self) -> Result<String, VendorError> {
        AccessToken::with_api_key(&self.api_key, self.api_secret.expose())
            .with_sip_grants(SIPGrants {
                admin: true,
                ..SIPGrants::default()
            })
            .with_ttl(TOKEN_TTL)
            .to_jwt()
            // The error names what is wrong (empty key), never the secret.
            .map_err(|e| VendorError::Invalid {
                vendor: VENDOR,
                message: format!("signing the access token: {e}"),
            })
    }
}

/// Twirp's error body.
#[derive(serde::Deserialize)]
struct TwirpError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    msg: Option<String>,
}

/// What the operator wants a number's trunk and rule to look like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipPlan {
    /// The E.164 number the trunk accepts calls to.
    pub number: String,
    /// Names the trunk and rule (`voice-agent {ns}/{name}`).
    pub name: String,
    /// Identifies the objects as the PhoneNumber's
    /// (`voiceagent.io/phonenumber={ns}/{name}`), so they are found again
    /// after a lost status write.
    pub metadata: String,
    /// Prefix of the per-call rooms (`{agent}-`).
    pub room_prefix: String,
    /// Attributes of the SIP participant (which agent and number it came in on).
    pub attributes: HashMap<String, String>,
    /// Addresses the trunk accepts calls from (`telephony.livekit.
    /// allowedAddresses`); empty leaves the trunk's list alone.
    pub allowed_addresses: Vec<String>,
}

impl SipPlan {
    /// The inbound trunk to create. It maps the gateway's session headers
    /// ([`voice_agent_proto::livekit::HEADERS`]) onto the SIP participant's
    /// attributes, so the gateway finds the runtime session of the room a
    /// call lands in.
    pub fn trunk(&self) -> proto::SipInboundTrunkInfo {
        proto::SipInboundTrunkInfo {
            name: self.name.clone(),
            metadata: self.metadata.clone(),
            numbers: vec![self.number.clone()],
            headers_to_attributes: headers_to_attributes(),
            allowed_addresses: self.allowed_addresses.clone(),
            ..Default::default()
        }
    }

    /// Whether `existing` is the trunk [`SipPlan::trunk`] describes in the
    /// fields the plan sets (ids, timestamps and settings made by hand
    /// aside).
    pub fn trunk_matches(&self, existing: &proto::SipInboundTrunkInfo) -> bool {
        let want = self.trunk();
        existing.numbers == want.numbers
            && existing.name == want.name
            && existing.metadata == want.metadata
            && existing.headers_to_attributes == want.headers_to_attributes
            && (self.allowed_addresses.is_empty()
                || existing.allowed_addresses == want.allowed_addresses)
    }

    /// What replaces `existing` when it does not match: `existing` with the
    /// fields [`SipPlan::trunk`] sets overwritten. A Replace replaces the
    /// whole trunk, so this keeps what [`SipPlan::trunk_matches`] ignores
    /// (allowed addresses, auth, … set by hand) instead of wiping it.
    pub fn trunk_replacing(
        &self,
        existing: &proto::SipInboundTrunkInfo,
    ) -> proto::SipInboundTrunkInfo {
        let want = self.trunk();
        let allowed_addresses = if self.allowed_addresses.is_empty() {
            existing.allowed_addresses.clone()
        } else {
            want.allowed_addresses
        };
        proto::SipInboundTrunkInfo {
            allowed_addresses,
            numbers: want.numbers,
            name: want.name,
            metadata: want.metadata,
            headers_to_attributes: want.headers_to_attributes,
            ..existing.clone()
        }
    }

    /// The dispatch rule for `trunk_id`: a new room per caller, named
    /// `{room_prefix}…`, with the caller's number hidden from participant
    /// identities and attributes (numbers stay out of the media plane).
    pub fn rule(&self, trunk_id: &str) -> proto::SipDispatchRuleInfo {
        proto::SipDispatchRuleInfo {
            rule: Some(proto::SipDispatchRule {
                rule: Some(proto::sip_dispatch_rule::Rule::DispatchRuleIndividual(
                    proto::SipDispatchRuleIndividual {
                        room_prefix: self.room_prefix.clone(),
                        ..Default::default()
                    },
                )),
            }),
            trunk_ids: vec![trunk_id.to_string()],
            hide_phone_number: true,
            name: self.name.clone(),
            metadata: self.metadata.clone(),
            attributes: self.attributes.clone(),
            ..Default::default()
        }
    }

    /// Whether `existing` is the rule [`SipPlan::rule`] describes (ids and
    /// timestamps aside).
    pub fn rule_matches(&self, trunk_id: &str, existing: &proto::SipDispatchRuleInfo) -> bool {
        let want = self.rule(trunk_id);
        existing.rule == want.rule
            && existing.trunk_ids == want.trunk_ids
            && existing.hide_phone_number == want.hide_phone_number
            && existing.name == want.name
            && existing.metadata == want.metadata
            && existing.attributes == want.attributes
    }
}

/// SIP header → participant attribute, as the inbound trunk maps them.
fn headers_to_attributes() -> HashMap<String, String> {
    voice_agent_proto::livekit::HEADERS
        .iter()
        .map(|(header, attribute)| ((*header).to_string(), (*attribute).to_string()))
        .collect()
}

/// A LiveKit SIP service client.
#[derive(Clone, Debug)]
pub struct LiveKitClient {
    http: reqwest::Client,
}

impl LiveKitClient {
    /// A client whose requests time out after `timeout`.
    pub fn new(timeout: Duration) -> reqwest::Result<Self> {
        Ok(LiveKitClient {
            http: http_client(timeout)?,
        })
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        creds: &Credentials,
        method: &str,
        request: &Req,
    ) -> Result<Resp, VendorError> {
        let url = format!("{}/twirp/livekit.SIP/{method}", creds.base_url()?);
        let body = serde_json::to_vec(request).map_err(|e| VendorError::Invalid {
            vendor: VENDOR,
            message: format!("encoding {method}: {e}"),
        })?;
        let response = self
            .http
            .post(url)
            .bearer_auth(creds.token()?)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| VendorError::transport(VENDOR, &e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| VendorError::transport(VENDOR, &e))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| VendorError::Protocol {
                vendor: VENDOR,
                message: format!("decoding the {method} answer: {e}"),
            });
        }
        let (code, message) = match serde_json::from_slice::<TwirpError>(&body) {
            Ok(e) => (e.code, e.msg.unwrap_or_default()),
            Err(_) => (None, String::from_utf8_lossy(&body).into_owned()),
        };
        let message = if message.trim().is_empty() {
            status.canonical_reason().unwrap_or("error").to_string()
        } else {
            clip(&message)
        };
        Err(VendorError::from_status(
            VENDOR,
            status.as_u16(),
            code,
            format!("{method}: {message}"),
        ))
    }

    /// Inbound trunks that accept calls to `number` (including wildcard
    /// trunks, which the caller filters out by id or metadata).
    pub async fn list_inbound_trunks(
        &self,
        creds: &Credentials,
        number: &str,
    ) -> Result<Vec<proto::SipInboundTrunkInfo>, VendorError> {
        let request = proto::ListSipInboundTrunkRequest {
            numbers: vec![number.to_string()],
            ..Default::default()
        };
        let r: proto::ListSipInboundTrunkResponse =
            self.call(creds, "ListSIPInboundTrunk", &request).await?;
        Ok(r.items)
    }

    /// Creates an inbound trunk; returns it with its id.
    pub async fn create_inbound_trunk(
        &self,
        creds: &Credentials,
        trunk: proto::SipInboundTrunkInfo,
    ) -> Result<proto::SipInboundTrunkInfo, VendorError> {
        let request = proto::CreateSipInboundTrunkRequest { trunk: Some(trunk) };
        self.call(creds, "CreateSIPInboundTrunk", &request).await
    }

    /// Replaces inbound trunk `id` with `trunk`.
    pub async fn replace_inbound_trunk(
        &self,
        creds: &Credentials,
        id: &str,
        trunk: proto::SipInboundTrunkInfo,
    ) -> Result<proto::SipInboundTrunkInfo, VendorError> {
        let request = proto::UpdateSipInboundTrunkRequest {
            sip_trunk_id: id.to_string(),
            action: Some(proto::update_sip_inbound_trunk_request::Action::Replace(
                trunk,
            )),
        };
        self.call(creds, "UpdateSIPInboundTrunk", &request).await
    }

    /// Deletes a trunk; a trunk that is already gone is not an error.
    pub async fn delete_trunk(&self, creds: &Credentials, id: &str) -> Result<(), VendorError> {
        let request = proto::DeleteSipTrunkRequest {
            sip_trunk_id: id.to_string(),
        };
        match self
            .call::<_, proto::SipTrunkInfo>(creds, "DeleteSIPTrunk", &request)
            .await
        {
            Ok(_) | Err(VendorError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Dispatch rules that apply to `trunk_id` (including wildcard rules).
    pub async fn list_dispatch_rules(
        &self,
        creds: &Credentials,
        trunk_id: &str,
    ) -> Result<Vec<proto::SipDispatchRuleInfo>, VendorError> {
        let request = proto::ListSipDispatchRuleRequest {
            trunk_ids: vec![trunk_id.to_string()],
            ..Default::default()
        };
        let r: proto::ListSipDispatchRuleResponse =
            self.call(creds, "ListSIPDispatchRule", &request).await?;
        Ok(r.items)
    }

    /// Creates a dispatch rule; returns it with its id.
    pub async fn create_dispatch_rule(
        &self,
        creds: &Credentials,
        rule: proto::SipDispatchRuleInfo,
    ) -> Result<proto::SipDispatchRuleInfo, VendorError> {
        let request = proto::CreateSipDispatchRuleRequest {
            dispatch_rule: Some(rule),
            ..Default::default()
        };
        self.call(creds, "CreateSIPDispatchRule", &request).await
    }

    /// Replaces dispatch rule `id` with `rule`.
    pub async fn replace_dispatch_rule(
        &self,
        creds: &Credentials,
        id: &str,
        rule: proto::SipDispatchRuleInfo,
    ) -> Result<proto::SipDispatchRuleInfo, VendorError> {
        let request = proto::UpdateSipDispatchRuleRequest {
            sip_dispatch_rule_id: id.to_string(),
            action: Some(proto::update_sip_dispatch_rule_request::Action::Replace(
                rule,
            )),
        };
        self.call(creds, "UpdateSIPDispatchRule", &request).await
    }

    /// Deletes a dispatch rule; one that is already gone is not an error.
    pub async fn delete_dispatch_rule(
        &self,
        creds: &Credentials,
        id: &str,
    ) -> Result<(), VendorError> {
        let request = proto::DeleteSipDispatchRuleRequest {
            sip_dispatch_rule_id: id.to_string(),
        };
        match self
            .call::<_, proto::SipDispatchRuleInfo>(creds, "DeleteSIPDispatchRule", &request)
            .await
        {
            Ok(_) | Err(VendorError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(url: &str) -> Credentials {
        Credentials {
            url: url.into(),
            api_key: "APIkey".into(),
            api_secret: Secret::new("s3cret-s3cret-s3cret-s3cret-s3cret"),
        }
    }

    #[test]
    fn urls_become_twirp_bases() {
        assert_eq!(
            creds("wss://x.livekit.cloud/").base_url().expect("url"),
            "https://x.livekit.cloud"
        );
        assert_eq!(
            creds("ws://127.0.0.1:7880").base_url().expect("url"),
            "http://127.0.0.1:7880"
        );
        assert!(creds("ftp://x").base_url().is_err());
    }

    #[test]
    fn tokens_carry_the_sip_admin_grant() {
        let c = creds("https://x");
        let jwt = c.token().expect("token");
        let claims = livekit_api::access_token::TokenVerifier::with_api_key(
            "APIkey",
            "s3cret-s3cret-s3cret-s3cret-s3cret",
        )
        .verify(&jwt)
        .expect("verifies");
        assert!(claims.sip.admin);
        assert_eq!(claims.iss, "APIkey");
        assert!(!jwt.contains("s3cret"));
    }

    #[test]
    fn rules_serialize_as_protobuf_json() {
        let plan = SipPlan {
            number: "+15551230142".into(),
            name: "voice-agent voice/main".into(),
            metadata: "voiceagent.io/phonenumber=voice/main".into(),
            room_prefix: "hello-".into(),
            attributes: HashMap::from([("voiceagent.io/voice-agent".into(), "hello".into())]),
            allowed_addresses: Vec::new(),
        };
        let json = serde_json::to_value(plan.rule("ST_1")).expect("json");
        assert_eq!(
            json["rule"]["dispatchRuleIndividual"]["roomPrefix"],
            "hello-"
        );
        assert_eq!(json["trunkIds"][0], "ST_1");
        assert_eq!(json["hidePhoneNumber"], true);
        let back: proto::SipDispatchRuleInfo = serde_json::from_value(json).expect("decodes");
        assert!(plan.rule_matches("ST_1", &back));
        assert!(!plan.rule_matches("ST_2", &back));
    }

    fn plan() -> SipPlan {
        SipPlan {
            number: "+15551230142".into(),
            name: "voice-agent voice/main".into(),
            metadata: "voiceagent.io/phonenumber=voice/main".into(),
            room_prefix: "hello-".into(),
            attributes: HashMap::new(),
            allowed_addresses: Vec::new(),
        }
    }

    #[test]
    fn trunks_map_the_session_headers_onto_attributes() {
        let plan = plan();
        let json = serde_json::to_value(plan.trunk()).expect("json");
        assert_eq!(json["numbers"], serde_json::json!(["+15551230142"]));
        assert_eq!(json["name"], "voice-agent voice/main");
        assert_eq!(
            json["headersToAttributes"],
            serde_json::json!({
                "X-VoiceAgent-Session": "voiceagent.io/session",
                "X-VoiceAgent-Media": "voiceagent.io/media-url",
                "X-VoiceAgent-Token": "voiceagent.io/token",
            })
        );
        let mut back: proto::SipInboundTrunkInfo = serde_json::from_value(json).expect("decodes");
        assert!(plan.trunk_matches(&back));

        // What LiveKit answers: an id and settings made by hand.
        back.sip_trunk_id = "ST_1".into();
        back.allowed_addresses = vec!["54.172.60.0/30".into()];
        back.krisp_enabled = true;
        assert!(plan.trunk_matches(&back));

        // A trunk made before the mapping (or with another number) does not.
        let mut old = back.clone();
        old.headers_to_attributes.clear();
        assert!(!plan.trunk_matches(&old));
        let mut other = back.clone();
        other.numbers = vec!["+15559990000".into()];
        assert!(!plan.trunk_matches(&other));

        // The replacement fixes what the plan sets and keeps the rest.
        let fixed = plan.trunk_replacing(&old);
        assert!(plan.trunk_matches(&fixed));
        assert_eq!(fixed.sip_trunk_id, "ST_1");
        assert_eq!(fixed.allowed_addresses, ["54.172.60.0/30"]);
        assert!(fixed.krisp_enabled);
        let request = proto::UpdateSipInboundTrunkRequest {
            sip_trunk_id: "ST_1".into(),
            action: Some(proto::update_sip_inbound_trunk_request::Action::Replace(
                fixed,
            )),
        };
        let json = serde_json::to_value(&request).expect("json");
        assert_eq!(json["sipTrunkId"], "ST_1");
        assert_eq!(
            json["replace"]["headersToAttributes"]["X-VoiceAgent-Token"],
            "voiceagent.io/token"
        );
    }

    #[test]
    fn allowed_addresses_are_managed_only_when_the_agent_sets_them() {
        let mut plan = plan();
        plan.allowed_addresses = vec!["54.172.60.0/30".into(), "54.244.51.0/30".into()];
        let json = serde_json::to_value(plan.trunk()).expect("json");
        assert_eq!(
            json["allowedAddresses"],
            serde_json::json!(["54.172.60.0/30", "54.244.51.0/30"])
        );
        let mut existing: proto::SipInboundTrunkInfo =
            serde_json::from_value(json).expect("decodes");
        assert!(plan.trunk_matches(&existing));
        // An open trunk (or another list) is brought to the agent's list.
        existing.allowed_addresses.clear();
        assert!(!plan.trunk_matches(&existing));
        let fixed = plan.trunk_replacing(&existing);
        assert_eq!(fixed.allowed_addresses, plan.allowed_addresses);
        assert!(plan.trunk_matches(&fixed));
    }
}
