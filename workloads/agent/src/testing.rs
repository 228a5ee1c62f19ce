//! Fixtures for tests, the benchmark and dev tooling: a rendered component
//! config and a small knowledge base.

use voice_agent_api::deploy::ComponentConfig;

/// A rendered config of the VoiceAgent `support` in namespace `default`,
/// with the local LLM, embedder and embedded vector store.
pub const COMPONENT_YAML: &str = r#"
voiceAgent: support
namespace: default
persona:
  greeting: "Hi, thanks for calling Acme Bikes. How can I help?"
  instructions: "You are the phone assistant of Acme Bikes. Be brief and friendly."
  language: en-US
  goodbye: "Thanks for calling Acme Bikes. Goodbye!"
llm:
  provider: local
stt: {}
tts: {}
knowledge: {}
database: false
telephony:
  publicUrl: https://voice.example.com
  twilio:
    authTokenSecretRef: {name: twilio, key: authToken}
runtime:
  maxCallsPerPod: 20
  drainTimeoutSeconds: 300
endpoints:
  gateway: http://support-gateway:8080
  runtime: http://support-runtime:8080
  agent: http://support-agent:8080
  tts: http://support-tts:8080
"#;

/// [`COMPONENT_YAML`], parsed.
pub fn component_config() -> ComponentConfig {
    match ComponentConfig::from_yaml(COMPONENT_YAML) {
        Ok(c) => c,
        // The constant is part of this crate; a parse failure is a bug.
        Err(e) => panic!("testing::COMPONENT_YAML does not parse: {e}"),
    }
}

/// A Markdown FAQ of a bike shop: hours, location, returns, repairs.
pub const FAQ_MARKDOWN: &str = r#"# Acme Bikes FAQ

## Opening hours

We are open Monday to Friday from 9 am to 6 pm. On Saturdays we open from 10 am to 4 pm. We are closed on Sundays and public holidays.

## Location

Our shop is at 12 Harbour Street, next to the central train station. Customer parking is available behind the building.

## Returns and refunds

You can return any unused item within 30 days of purchase for a full refund. Bring the receipt and the original packaging. Refunds go back to the original payment method within five business days.

## Repairs

We repair all brands of bicycles, including electric bikes. A standard tune-up costs 49 dollars and takes two working days. Flat tyres are fixed while you wait for 15 dollars.
"#;

/// 16 random-looking lower-case hex digits (time, process id and a
/// counter, hashed), e.g. for throwaway database names.
pub fn random_suffix() -> String {
    crate::fresh_id("x").trim_start_matches("x-").to_owned()
}
