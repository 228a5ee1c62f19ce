//! Wire types shared by the Voice Agent workloads: the JSON bodies of the HTTP
//! contracts (DESIGN.md §5), the metric and latency-stage names, and the audio
//! helpers (G.711 mu-law, PCM16, resampling, framing, base64) that both ends of
//! a contract must agree on.
//!
//! All JSON is camelCase. Errors of every component use [`ErrorBody`].

pub mod agent;
pub mod audio;
pub mod base64;
pub mod component;
pub mod error;
pub mod livekit;
pub mod mediastreams;
pub mod metrics;
pub mod session;
pub mod stage;
pub mod tts;

pub use agent::{
    AgentLatency, Citation, CreateDocumentRequest, DocumentFormat, DocumentInfo, DocumentList,
    HistoryTurn, RespondRequest, RespondResponse, Role,
};
pub use audio::{FRAME_MS, Resampler, SUPPORTED_SAMPLE_RATES};
pub use component::Component;
pub use error::{ErrorBody, ErrorDetail, ProtoError};
pub use metrics::{
    ComponentSignals, Sample, SampleBatch, SampleKind, SamplesAccepted, SignalsList,
    SignalsResponse, StageWindow,
};
pub use session::{
    CreateSessionRequest, CreateSessionResponse, JoinRoomRequest, LoadReport, SessionInfo,
    SessionState, Transport,
};
pub use stage::Stage;
pub use tts::{AudioFormat, SynthesizeJsonResponse, SynthesizeRequest};
