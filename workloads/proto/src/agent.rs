//! The agent service: replies (`/v1/respond`, JSON or SSE) and knowledge
//! documents (`/v1/documents`).

use serde::{Deserialize, Serialize};

/// Who spoke a turn of the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// The person on the phone.
    Caller,
    /// The voice agent.
    Agent,
}

/// One earlier turn, oldest first in [`RespondRequest::history`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryTurn {
    /// Who spoke.
    pub role: Role,
    /// What was said (final transcript, or the reply as spoken).
    pub text: String,
}

/// `POST /v1/respond`: the runtime asks for the agent's reply to a caller turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RespondRequest {
    /// The runtime session the turn belongs to.
    pub session_id: String,
    /// Name of the VoiceAgent (selects persona, LLM and knowledge).
    pub voice_agent: String,
    /// The caller's final transcript for this turn.
    pub utterance: String,
    /// Earlier turns, oldest first; absent means none.
    #[serde(default)]
    pub history: Vec<HistoryTurn>,
}

/// A knowledge chunk the reply is grounded on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Citation {
    /// Id of the source document.
    pub document_id: String,
    /// Id of the chunk within the vector store.
    pub chunk_id: String,
    /// Title of the source document.
    pub title: String,
    /// Retrieval similarity score; higher is closer.
    pub score: f32,
    /// The cited text, possibly shortened.
    pub snippet: String,
}

/// Where the agent's time went, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentLatency {
    /// Vector search, including embedding the query.
    pub retrieval_ms: f64,
    /// LLM time to first token.
    pub llm_ttft_ms: f64,
    /// LLM time to the last token.
    pub llm_total_ms: f64,
    /// The whole request as the agent saw it.
    pub total_ms: f64,
}

/// The non-streaming answer to [`RespondRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RespondResponse {
    /// The full reply text to speak.
    pub reply: String,
    /// Knowledge the reply is grounded on; may be empty.
    pub citations: Vec<Citation>,
    /// Latency breakdown.
    pub latency: AgentLatency,
}

/// Media type a client puts in `Accept` to get the reply as SSE.
pub const SSE_CONTENT_TYPE: &str = "text/event-stream";
/// SSE event carrying a [`DeltaEvent`]: the next piece of reply text.
pub const SSE_DELTA: &str = "delta";
/// SSE event carrying a [`CitationsEvent`], sent once before `done`.
pub const SSE_CITATIONS: &str = "citations";
/// SSE event carrying a [`DoneEvent`]; the last event of the stream.
pub const SSE_DONE: &str = "done";
/// SSE event carrying an [`ErrorBody`](crate::ErrorBody): the reply failed
/// after the stream started (e.g. the LLM stream broke off, or the turn could
/// not be stored). It replaces `done` as the last event; the deltas sent
/// before it are not a complete reply.
pub const SSE_ERROR: &str = "error";

/// Data of an SSE `delta` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeltaEvent {
    /// Reply text to append to what came before.
    pub text: String,
}

/// Data of an SSE `citations` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CitationsEvent {
    /// Same as [`RespondResponse::citations`].
    pub citations: Vec<Citation>,
}

/// Data of an SSE `done` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DoneEvent {
    /// The full reply, equal to the concatenated deltas.
    pub reply: String,
    /// Latency breakdown.
    pub latency: AgentLatency,
}

/// How a document's content is written; decides how it is chunked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DocumentFormat {
    /// Plain text, chunked by paragraphs.
    Text,
    /// Markdown, chunked along headings.
    #[default]
    Markdown,
}

/// `POST /v1/documents`: ingest a knowledge document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateDocumentRequest {
    /// Caller-chosen id; re-posting an id replaces that document. Generated
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Human title, shown in citations.
    pub title: String,
    /// Content format; Markdown when absent.
    #[serde(default)]
    pub format: DocumentFormat,
    /// The document text.
    pub content: String,
    /// Name of the VoiceAgent whose knowledge base receives it.
    pub voice_agent: String,
}

/// A stored document, as returned by create and list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentInfo {
    /// Document id.
    pub id: String,
    /// Human title.
    pub title: String,
    /// Content format.
    pub format: DocumentFormat,
    /// Chunks it was split into.
    pub chunks: u32,
    /// Size of the content in bytes (UTF-8).
    pub bytes: u64,
    /// Name of the VoiceAgent that owns it.
    pub voice_agent: String,
    /// Ingestion time, Unix epoch milliseconds.
    pub created_at_ms: i64,
}

/// `GET /v1/documents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentList {
    /// The documents, in no guaranteed order.
    pub documents: Vec<DocumentInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn same_json<T: Serialize>(value: &T, literal: &str) {
        let expected: Value = serde_json::from_str(literal).expect("literal is JSON");
        assert_eq!(serde_json::to_value(value).expect("serialize"), expected);
    }

    fn latency() -> AgentLatency {
        AgentLatency {
            retrieval_ms: 12.5,
            llm_ttft_ms: 180.0,
            llm_total_ms: 640.25,
            total_ms: 655.0,
        }
    }

    #[test]
    fn respond_request_wire_format() {
        let json = r#"{"sessionId":"s-1","voiceAgent":"support","utterance":"What are your hours?","history":[{"role":"agent","text":"Hi, how can I help?"},{"role":"caller","text":"Hello"}]}"#;
        let req: RespondRequest = serde_json::from_str(json).expect("deserialize");
        assert_eq!(req.history.len(), 2);
        assert_eq!(req.history[0].role, Role::Agent);
        assert_eq!(serde_json::to_string(&req).expect("serialize"), json);
    }

    #[test]
    fn respond_request_history_defaults_to_empty() {
        let req: RespondRequest =
            serde_json::from_str(r#"{"sessionId":"s","voiceAgent":"a","utterance":"hi"}"#)
                .expect("deserialize");
        assert!(req.history.is_empty());
    }

    #[test]
    fn respond_request_refuses_malformed() {
        assert!(
            serde_json::from_str::<RespondRequest>(r#"{"sessionId":"s","voiceAgent":"a"}"#)
                .is_err()
        );
        assert!(
            serde_json::from_str::<RespondRequest>(
                r#"{"sessionId":"s","voiceAgent":"a","utterance":"hi","history":[{"role":"user","text":"x"}]}"#
            )
            .is_err()
        );
        assert!(
            serde_json::from_str::<RespondRequest>(
                r#"{"sessionId":"s","voiceAgent":"a","utterance":"hi","history":"none"}"#
            )
            .is_err()
        );
    }

    #[test]
    fn respond_response_wire_format() {
        let json = r#"{"reply":"We are open 9 to 5.","citations":[{"documentId":"faq","chunkId":"faq-3","title":"FAQ","score":0.875,"snippet":"Opening hours: 9-17"}],"latency":{"retrievalMs":12.5,"llmTtftMs":180.0,"llmTotalMs":640.25,"totalMs":655.0}}"#;
        let resp: RespondResponse = serde_json::from_str(json).expect("deserialize");
        assert_eq!(resp.citations[0].score, 0.875);
        assert_eq!(resp.latency, latency());
        same_json(&resp, json);
        // Latency is required in the non-streaming answer.
        assert!(
            serde_json::from_str::<RespondResponse>(r#"{"reply":"x","citations":[]}"#).is_err()
        );
    }

    #[test]
    fn sse_payloads_wire_format() {
        assert_eq!(
            (SSE_DELTA, SSE_CITATIONS, SSE_DONE),
            ("delta", "citations", "done")
        );
        let delta = DeltaEvent {
            text: "We are ".into(),
        };
        same_json(&delta, r#"{"text":"We are "}"#);
        let done = DoneEvent {
            reply: "We are open.".into(),
            latency: latency(),
        };
        same_json(
            &done,
            r#"{"reply":"We are open.","latency":{"retrievalMs":12.5,"llmTtftMs":180.0,"llmTotalMs":640.25,"totalMs":655.0}}"#,
        );
        let back: DoneEvent =
            serde_json::from_str(&serde_json::to_string(&done).expect("serialize"))
                .expect("deserialize");
        assert_eq!(back, done);
        let cites: CitationsEvent = serde_json::from_str(
            r#"{"citations":[{"documentId":"d","chunkId":"c","title":"t","score":1,"snippet":"s"}]}"#,
        )
        .expect("deserialize");
        assert_eq!(cites.citations[0].document_id, "d");
    }

    #[test]
    fn sse_error_event_carries_an_error_body() {
        assert_eq!(SSE_ERROR, "error");
        let body = crate::ErrorBody::new("upstream", "LLM stream ended early");
        let json = serde_json::to_string(&body).expect("serialize");
        assert_eq!(
            json,
            r#"{"error":{"code":"upstream","message":"LLM stream ended early"}}"#
        );
        let back: crate::ErrorBody = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, body);
    }

    #[test]
    fn create_document_request_wire_format() {
        let json = r#"{"id":"faq","title":"FAQ","format":"text","content":"Hours: 9-5","voiceAgent":"support"}"#;
        let req: CreateDocumentRequest = serde_json::from_str(json).expect("deserialize");
        assert_eq!(req.format, DocumentFormat::Text);
        assert_eq!(serde_json::to_string(&req).expect("serialize"), json);

        let minimal: CreateDocumentRequest =
            serde_json::from_str(r##"{"title":"FAQ","content":"# Hours","voiceAgent":"support"}"##)
                .expect("deserialize");
        assert_eq!(minimal.id, None);
        assert_eq!(minimal.format, DocumentFormat::Markdown);
        assert_eq!(
            serde_json::to_string(&minimal).expect("serialize"),
            r##"{"title":"FAQ","format":"markdown","content":"# Hours","voiceAgent":"support"}"##
        );

        assert!(
            serde_json::from_str::<CreateDocumentRequest>(
                r#"{"title":"FAQ","format":"pdf","content":"x","voiceAgent":"a"}"#
            )
            .is_err()
        );
        assert!(
            serde_json::from_str::<CreateDocumentRequest>(r#"{"title":"FAQ","content":"x"}"#)
                .is_err()
        );
    }

    #[test]
    fn document_list_wire_format() {
        let json = r#"{"documents":[{"id":"faq","title":"FAQ","format":"markdown","chunks":4,"bytes":2048,"voiceAgent":"support","createdAtMs":1700000000000}]}"#;
        let list: DocumentList = serde_json::from_str(json).expect("deserialize");
        assert_eq!(list.documents[0].chunks, 4);
        assert_eq!(list.documents[0].bytes, 2048);
        assert_eq!(serde_json::to_string(&list).expect("serialize"), json);
        assert!(serde_json::from_str::<DocumentList>(r#"{"documents":[{"id":"faq"}]}"#).is_err());
    }
}
