//! Loaded decoders kept for reuse.
//!
//! PocketSphinx cannot share one loaded acoustic model between decoders, and
//! loading one takes long enough to delay a call's first words (see
//! [`crate::Decoder::load_time`]). The pool keeps decoders that finished a
//! call and hands them to the next one; [`DecoderPool::prewarm`] loads some
//! before the first call arrives.

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use crate::decoder::{Decoder, DecoderConfig, LanguageModel, Tuning};
use crate::dict::Dictionary;
use crate::lm::{self, LmOptions};
use crate::tempfile::TempFile;
use crate::{DEFAULT_MODEL_DIR, SphinxError};

/// How a domain model is built by [`DecoderPool::for_domain`].
#[derive(Debug, Clone, PartialEq)]
pub struct DomainOptions {
    /// The model directory (`en-us/`, `cmudict-en-us.dict`).
    pub model_dir: PathBuf,
    /// The agent's own text: persona, greeting, knowledge base.
    pub domain_text: String,
    /// Language model options.
    pub lm: LmOptions,
    /// Search parameters.
    pub tuning: Tuning,
    /// Sample rate of the audio the decoders get, in Hz.
    pub sample_rate: u32,
    /// Load only the dictionary entries of the model's words (much faster
    /// decoder loads; the language model cannot produce other words anyway).
    pub trim_dictionary: bool,
}

impl DomainOptions {
    /// Defaults for `domain_text`: the Debian model directory, a trigram
    /// model, measured tuning, 16 kHz, trimmed dictionary.
    pub fn new(domain_text: impl Into<String>) -> Self {
        Self {
            model_dir: PathBuf::from(DEFAULT_MODEL_DIR),
            domain_text: domain_text.into(),
            lm: LmOptions::default(),
            tuning: Tuning::default(),
            sample_rate: 16_000,
            trim_dictionary: true,
        }
    }
}

/// Idle decoders kept at most, by default. A decoder holds ~20 MB; a pod
/// serving more concurrent calls builds extra decoders on demand and keeps
/// this many afterwards.
pub const DEFAULT_MAX_IDLE: usize = 4;

/// A shared source of decoders with one configuration. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DecoderPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: DecoderConfig,
    /// A generated model, written to temporary files only while a decoder
    /// loads it (PocketSphinx reads the files in `ps_init` and never again),
    /// so nothing is left behind in `TMPDIR` when the process exits without
    /// running destructors (as test processes and killed pods do).
    generated: Option<GeneratedModel>,
    idle: Mutex<Vec<Decoder>>,
    max_idle: usize,
    vocabulary_size: usize,
}

/// The text of a generated language model and its dictionary.
#[derive(Debug)]
struct GeneratedModel {
    arpa: String,
    /// `None`: the configured (full) dictionary.
    dict: Option<String>,
}

impl DecoderPool {
    /// A pool of decoders created from `config`.
    pub fn new(config: DecoderConfig) -> Self {
        Self::build(config, None, 0)
    }

    fn build(
        config: DecoderConfig,
        generated: Option<GeneratedModel>,
        vocabulary_size: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                generated,
                idle: Mutex::new(Vec::new()),
                max_idle: DEFAULT_MAX_IDLE,
                vocabulary_size,
            }),
        }
    }

    /// Builds a domain language model from `options.domain_text` (plus the
    /// built-in baseline corpus) and the matching dictionary, and returns a
    /// pool of decoders that use them. Checks that the library loads, but
    /// loads no decoder yet.
    pub fn for_domain(options: &DomainOptions) -> Result<Self, SphinxError> {
        crate::check_library()?;
        let mut config = DecoderConfig::en_us(&options.model_dir, LanguageModel::Default);
        config.sample_rate = options.sample_rate;
        config.tuning = options.tuning.clone();
        let dictionary = Dictionary::load(&config.dict)?;
        let arpa = lm::build_arpa_with(&options.lm, &options.domain_text, &|w| {
            dictionary.contains(w)
        });
        let vocabulary = lm::arpa_vocabulary(&arpa);
        let vocabulary_size = vocabulary.len();
        let dict = options
            .trim_dictionary
            .then(|| dictionary.subset(vocabulary));
        let generated = GeneratedModel { arpa, dict };
        Ok(Self::build(config, Some(generated), vocabulary_size))
    }

    /// The configuration decoders are created with. For a domain pool the
    /// language model (and trimmed dictionary) are generated: see
    /// [`DecoderPool::arpa`].
    pub fn config(&self) -> &DecoderConfig {
        &self.inner.config
    }

    /// The generated ARPA language model of a domain pool.
    pub fn arpa(&self) -> Option<&str> {
        self.inner.generated.as_ref().map(|g| g.arpa.as_str())
    }

    /// Loads a new decoder (not from the idle ones; it does not return to
    /// the pool). For measurements; calls use [`DecoderPool::get`].
    pub fn load(&self) -> Result<Decoder, SphinxError> {
        self.inner.load()
    }

    /// Words in the domain language model (0 for a pool made with
    /// [`DecoderPool::new`]).
    pub fn vocabulary_size(&self) -> usize {
        self.inner.vocabulary_size
    }

    /// Loaded decoders waiting for a call.
    pub fn idle(&self) -> usize {
        self.lock().len()
    }

    /// A decoder: an idle one at once, or a newly loaded one. It returns to
    /// the pool when dropped.
    pub fn get(&self) -> Result<PooledDecoder, SphinxError> {
        let reused = self.lock().pop();
        let decoder = match reused {
            Some(d) => d,
            None => self.inner.load()?,
        };
        Ok(PooledDecoder {
            decoder: Some(decoder),
            pool: Arc::clone(&self.inner),
        })
    }

    /// Loads decoders until `count` are idle (at most the pool's idle limit).
    /// Blocking: call it from a background thread.
    pub fn prewarm(&self, count: usize) -> Result<(), SphinxError> {
        let target = count.min(self.inner.max_idle);
        while self.idle() < target {
            let decoder = self.inner.load()?;
            self.lock().push(decoder);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Decoder>> {
        self.inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn load(&self) -> Result<Decoder, SphinxError> {
        let Some(generated) = &self.generated else {
            return Decoder::new(&self.config);
        };
        // The files live until the decoder has read them.
        let lm = TempFile::write(".arpa", &generated.arpa)?;
        let dict = match &generated.dict {
            Some(text) => Some(TempFile::write(".dict", text)?),
            None => None,
        };
        let mut config = self.config.clone();
        config.lm = LanguageModel::Arpa(lm.path().to_path_buf());
        if let Some(dict) = &dict {
            config.dict = dict.path().to_path_buf();
        }
        Decoder::new(&config)
    }
}

/// A decoder borrowed from a [`DecoderPool`]; derefs to [`Decoder`].
#[derive(Debug)]
pub struct PooledDecoder {
    /// Always `Some` until drop.
    decoder: Option<Decoder>,
    pool: Arc<Inner>,
}

impl Deref for PooledDecoder {
    type Target = Decoder;
    #[allow(clippy::expect_used)]
    fn deref(&self) -> &Decoder {
        // Invariant: only `drop` takes the decoder out.
        self.decoder.as_ref().expect("decoder present until drop")
    }
}

impl DerefMut for PooledDecoder {
    #[allow(clippy::expect_used)]
    fn deref_mut(&mut self) -> &mut Decoder {
        self.decoder.as_mut().expect("decoder present until drop")
    }
}

impl Drop for PooledDecoder {
    fn drop(&mut self) {
        let Some(mut decoder) = self.decoder.take() else {
            return;
        };
        // A decoder that failed to end its utterance is not trusted again.
        if decoder.end_utterance().is_err() {
            return;
        }
        let mut idle = self
            .pool
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.pool.max_idle {
            idle.push(decoder);
        }
    }
}
