//! Offline speech recognition for the Voice Agent runtime, with CMU
//! PocketSphinx (Debian `libpocketsphinx3` 0.8+5prealpha and the
//! `pocketsphinx-en-us` model).
//!
//! The library is loaded at run time with `dlopen`, so the workspace builds
//! and links on machines without PocketSphinx; creating a [`Decoder`] there
//! fails with an error that names the package to install ([`INSTALL_HINT`]).
//! This crate is the only place of the workspace with `unsafe` code: the FFI
//! calls, each with its safety argument.
//!
//! - [`Decoder`]: one recognizer (start an utterance, feed PCM16, read
//!   partial and final hypotheses). `Send`, not `Sync`.
//! - [`DecoderPool`]: loaded decoders kept for reuse, and
//!   [`DecoderPool::for_domain`], which builds a domain language model
//!   ([`lm::build_arpa`]) from the agent's text.
//! - [`wer`]: word error rate, for measuring all of the above.
//! - [`testing`]: espeak-ng speech through a telephone channel, for tests and
//!   the `bench` example.

mod decoder;
pub mod dict;
mod ffi;
pub mod lm;
pub mod phone;
mod pool;
mod tempfile;
pub mod testing;
pub mod text;
pub mod wer;

pub use decoder::{
    DEFAULT_MODEL_DIR, Decoder, DecoderConfig, LanguageModel, Tuning, check_library,
};
pub use ffi::INSTALL_HINT;
pub use pool::{DEFAULT_MAX_IDLE, DecoderPool, DomainOptions, PooledDecoder};
pub use tempfile::TempFile;
pub use wer::wer;

/// Errors of the recognizer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SphinxError {
    /// The PocketSphinx shared libraries cannot be loaded (the message names
    /// the package to install).
    #[error("PocketSphinx unavailable: {0}")]
    Library(String),
    /// A model file is missing or unreadable.
    #[error("PocketSphinx model unavailable: {0}")]
    Model(String),
    /// The decoder configuration was refused.
    #[error("PocketSphinx configuration refused: {0}")]
    Config(String),
    /// Decoding failed.
    #[error("PocketSphinx decoding failed: {0}")]
    Decode(String),
    /// A file could not be written or a helper program failed.
    #[error("{0}")]
    Io(String),
}
