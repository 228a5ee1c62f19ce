//! The safe decoder: one PocketSphinx `ps_decoder_t`, owned by one thread at a
//! time.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::SphinxError;
use crate::ffi::{self, Api, PsDecoder};

/// The default location of the US English model (Debian `pocketsphinx-en-us`).
pub const DEFAULT_MODEL_DIR: &str = "/usr/share/pocketsphinx/model/en-us";

/// Which n-gram language model the decoder searches with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LanguageModel {
    /// The general US English model shipped with the acoustic model
    /// (`en-us.lm.bin` in the model directory). Broad but weak on short,
    /// domain-specific phone questions.
    Default,
    /// An ARPA text file, e.g. one written by [`crate::lm::build_arpa`].
    Arpa(PathBuf),
}

/// Search and scoring parameters. `None` keeps PocketSphinx's default.
///
/// [`Tuning::default`] holds the values measured best with a domain language
/// model on espeak-ng speech through a phone line (`examples/bench.rs`, 24
/// development questions × 3 voices):
/// - language model weights 10 (first pass) and 13 (best path) instead of
///   the library's 6.5 and 9.5: dev WER 0.27 → 0.22 (a small domain model
///   deserves more trust than the general one those defaults suit); 8/11,
///   12/15, 10/10 and 10/16 were worse;
/// - no flat-lexicon second pass (`-fwdflat no`): same WER (0.219 vs 0.231),
///   but the pass runs when the utterance ends, so it cost 65 ms (p50; 120 ms
///   p95) of end-of-turn latency per utterance, against 3 ms without it, and
///   a third of the decoding time;
/// - narrower beams lost accuracy; wider beams, `-topn 8` and other insertion
///   penalties changed little but the run time.
#[derive(Debug, Clone, PartialEq)]
pub struct Tuning {
    /// Language model weight of the first pass (`-lw`, library default 6.5).
    pub lw: Option<f32>,
    /// Language model weight of the flat-lexicon pass (`-fwdflatlw`, 8.5).
    pub fwdflat_lw: Option<f32>,
    /// Language model weight of the best-path pass (`-bestpathlw`, 9.5).
    pub bestpath_lw: Option<f32>,
    /// Word insertion penalty (`-wip`, default 0.65).
    pub wip: Option<f32>,
    /// Phone insertion penalty (`-pip`, default 1.0).
    pub pip: Option<f32>,
    /// Main pruning beam (`-beam`, default 1e-48).
    pub beam: Option<f64>,
    /// Word-exit beam (`-wbeam`, default 7e-29).
    pub wbeam: Option<f64>,
    /// Second, flat-lexicon pass (`-fwdflat`, default on).
    pub fwdflat: Option<bool>,
    /// Lattice best-path rescoring (`-bestpath`, default on).
    pub bestpath: Option<bool>,
    /// Further `-name value` pairs, passed through verbatim (for
    /// experiments); they override the fields above and the paths. Unknown
    /// names are refused by the library.
    pub extra: Vec<(String, String)>,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            lw: Some(10.0),
            fwdflat_lw: None,
            bestpath_lw: Some(13.0),
            wip: None,
            pip: None,
            beam: None,
            wbeam: None,
            fwdflat: Some(false),
            bestpath: None,
            extra: Vec::new(),
        }
    }
}

/// Everything a decoder is created from.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    /// The acoustic model directory (`-hmm`), e.g.
    /// `/usr/share/pocketsphinx/model/en-us/en-us`.
    pub hmm: PathBuf,
    /// The pronunciation dictionary (`-dict`).
    pub dict: PathBuf,
    /// The language model.
    pub lm: LanguageModel,
    /// For [`LanguageModel::Default`]: the model directory holding
    /// `en-us.lm.bin`.
    pub model_dir: PathBuf,
    /// Sample rate of the audio passed to [`Decoder::process`], in Hz. The
    /// `en-us` acoustic model is trained on 16 kHz audio; upsample phone audio.
    pub sample_rate: u32,
    /// Search parameters.
    pub tuning: Tuning,
}

impl DecoderConfig {
    /// The Debian `en-us` model in `model_dir` (acoustic model `en-us/`,
    /// dictionary `cmudict-en-us.dict`) with the given language model, at
    /// 16 kHz, default tuning.
    pub fn en_us(model_dir: impl Into<PathBuf>, lm: LanguageModel) -> Self {
        let model_dir = model_dir.into();
        Self {
            hmm: model_dir.join("en-us"),
            dict: model_dir.join("cmudict-en-us.dict"),
            lm,
            model_dir,
            sample_rate: 16_000,
            tuning: Tuning::default(),
        }
    }

    /// The `-name value` arguments for `cmd_ln_parse_r`.
    pub fn args(&self) -> Vec<(String, String)> {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let lm = match &self.lm {
            LanguageModel::Default => self.model_dir.join("en-us.lm.bin"),
            LanguageModel::Arpa(p) => p.clone(),
        };
        let mut args = vec![
            ("-hmm".to_owned(), path(&self.hmm)),
            ("-dict".to_owned(), path(&self.dict)),
            ("-lm".to_owned(), path(&lm)),
            ("-samprate".to_owned(), self.sample_rate.to_string()),
        ];
        let t = &self.tuning;
        let mut push = |name: &str, value: Option<String>| {
            if let Some(v) = value {
                args.push((name.to_owned(), v));
            }
        };
        push("-lw", t.lw.map(|v| v.to_string()));
        push("-fwdflatlw", t.fwdflat_lw.map(|v| v.to_string()));
        push("-bestpathlw", t.bestpath_lw.map(|v| v.to_string()));
        push("-wip", t.wip.map(|v| v.to_string()));
        push("-pip", t.pip.map(|v| v.to_string()));
        push("-beam", t.beam.map(|v| format!("{v:e}")));
        push("-wbeam", t.wbeam.map(|v| format!("{v:e}")));
        push("-fwdflat", t.fwdflat.map(yes_no));
        push("-bestpath", t.bestpath.map(yes_no));
        // An extra argument overrides the same name set above (PocketSphinx
        // refuses duplicates).
        for (name, value) in &t.extra {
            match args.iter_mut().find(|(n, _)| n == name) {
                Some(existing) => existing.1.clone_from(value),
                None => args.push((name.clone(), value.clone())),
            }
        }
        args
    }

    /// Checks that the files exist, so a missing model is a clear error
    /// instead of a silent `ps_init` failure (the library's log is off).
    fn check_files(&self) -> Result<(), SphinxError> {
        let missing = |what: &str, p: &Path| {
            SphinxError::Model(format!(
                "{what} {} not found; install it with `{}`",
                p.display(),
                ffi::INSTALL_HINT
            ))
        };
        if !self.hmm.join("mdef").is_file() {
            return Err(missing("acoustic model", &self.hmm));
        }
        if !self.dict.is_file() {
            return Err(missing("dictionary", &self.dict));
        }
        match &self.lm {
            LanguageModel::Default => {
                let lm = self.model_dir.join("en-us.lm.bin");
                if !lm.is_file() {
                    return Err(missing("language model", &lm));
                }
            }
            LanguageModel::Arpa(p) if !p.is_file() => {
                return Err(missing("language model", p));
            }
            LanguageModel::Arpa(_) => {}
        }
        Ok(())
    }
}

fn yes_no(v: bool) -> String {
    if v { "yes" } else { "no" }.to_owned()
}

/// Serializes decoder creation and destruction. PocketSphinx keeps a little
/// process-global state (the log stream, SphinxBase's shared tables) that is
/// touched while a decoder is set up or torn down; decoding itself only uses
/// the decoder's own state, so running decoders on several threads is fine.
static LIFECYCLE: Mutex<()> = Mutex::new(());

fn lifecycle_lock() -> std::sync::MutexGuard<'static, ()> {
    // A panic while holding the lock cannot leave the unit value broken.
    LIFECYCLE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Checks that the PocketSphinx libraries can be loaded. The error names the
/// package to install.
pub fn check_library() -> Result<(), SphinxError> {
    ffi::api().map(|_| ()).map_err(SphinxError::Library)
}

/// One PocketSphinx decoder.
///
/// `Send` but not `Sync`: a decoder may move to another thread (e.g. a
/// pooled decoder handed to the next call's thread) but is used by one thread
/// at a time; every method takes `&mut self` or reads state that only the
/// owner changes.
pub struct Decoder {
    ps: NonNull<PsDecoder>,
    api: &'static Api,
    in_utterance: bool,
    sample_rate: u32,
    load_time: Duration,
}

// SAFETY: a `ps_decoder_t` holds no thread-affine state (no thread-locals, no
// thread ids); the library only requires that one decoder is not used by two
// threads at once, which `&mut self` (and the absence of `Sync`, implied by
// the raw pointer) guarantees.
unsafe impl Send for Decoder {}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("in_utterance", &self.in_utterance)
            .field("sample_rate", &self.sample_rate)
            .field("load_time", &self.load_time)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// Loads the acoustic model, dictionary and language model. This takes
    /// tens to hundreds of milliseconds (see [`Decoder::load_time`]); use a
    /// [`crate::DecoderPool`] to keep loaded decoders for reuse.
    pub fn new(config: &DecoderConfig) -> Result<Self, SphinxError> {
        let api = ffi::api().map_err(SphinxError::Library)?;
        if config.sample_rate < 8_000 || config.sample_rate > 48_000 {
            return Err(SphinxError::Config(format!(
                "sample rate {} Hz outside 8000..=48000",
                config.sample_rate
            )));
        }
        config.check_files()?;
        let started = Instant::now();

        // argv for cmd_ln_parse_r: name/value pairs. The strings stay owned
        // here; the library copies each value it keeps.
        let mut owned = Vec::new();
        for (name, value) in config.args() {
            for s in [name, value] {
                owned.push(CString::new(s).map_err(|_| {
                    SphinxError::Config("a decoder argument contains a NUL byte".to_owned())
                })?);
            }
        }
        let mut argv: Vec<*mut c_char> = owned.iter().map(|s| s.as_ptr().cast_mut()).collect();
        let argc = i32::try_from(argv.len())
            .map_err(|_| SphinxError::Config("too many decoder arguments".to_owned()))?;

        let _guard = lifecycle_lock();
        // SAFETY: `ps_args` returns a pointer to the library's static
        // argument definition table; `argv` holds `argc` valid NUL-terminated
        // strings that outlive the call, and cmd_ln_parse_r only reads them
        // (it copies values with ckd_salloc and takes names from `defn`).
        // `strict = 1` makes unknown names and bad values an error (NULL).
        let cmdln = unsafe {
            (api.cmd_ln_parse_r)(
                std::ptr::null_mut(),
                (api.ps_args)(),
                argc,
                argv.as_mut_ptr(),
                1,
            )
        };
        if cmdln.is_null() {
            return Err(SphinxError::Config(format!(
                "PocketSphinx refused the arguments {:?}",
                config.args()
            )));
        }
        // SAFETY: `cmdln` is the valid configuration just created; ps_init
        // takes its own reference (cmd_ln_retain), so ours is released right
        // after, whatever ps_init returned.
        let ps = unsafe {
            let ps = (api.ps_init)(cmdln);
            (api.cmd_ln_free_r)(cmdln);
            ps
        };
        let ps = NonNull::new(ps).ok_or_else(|| {
            SphinxError::Model(format!(
                "PocketSphinx could not load the model (hmm {}, dict {}, lm {:?}); \
                 check the files or reinstall with `{}`",
                config.hmm.display(),
                config.dict.display(),
                config.lm,
                ffi::INSTALL_HINT
            ))
        })?;
        Ok(Self {
            ps,
            api,
            in_utterance: false,
            sample_rate: config.sample_rate,
            load_time: started.elapsed(),
        })
    }

    /// How long [`Decoder::new`] took to load the models.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// The sample rate [`Decoder::process`] expects, in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Whether an utterance is open.
    pub fn in_utterance(&self) -> bool {
        self.in_utterance
    }

    /// Starts an utterance. An utterance already open is ended first and its
    /// result discarded.
    pub fn start_utterance(&mut self) -> Result<(), SphinxError> {
        if self.in_utterance {
            self.end_utterance()?;
        }
        // SAFETY: `self.ps` is a live decoder owned by `self`.
        let rc = unsafe { (self.api.ps_start_utt)(self.ps.as_ptr()) };
        if rc < 0 {
            return Err(SphinxError::Decode("ps_start_utt failed".to_owned()));
        }
        self.in_utterance = true;
        Ok(())
    }

    /// Decodes the next chunk of the open utterance (mono PCM16 at
    /// [`Decoder::sample_rate`]). Any chunk length works; 10 to 100 ms chunks
    /// keep partial results fresh.
    pub fn process(&mut self, samples: &[i16]) -> Result<(), SphinxError> {
        if !self.in_utterance {
            return Err(SphinxError::Decode(
                "process() outside an utterance".to_owned(),
            ));
        }
        if samples.is_empty() {
            return Ok(());
        }
        // SAFETY: `samples` is a valid slice for the duration of the call and
        // the library only reads `n_samples` values from it; `self.ps` is live.
        let rc = unsafe {
            (self.api.ps_process_raw)(self.ps.as_ptr(), samples.as_ptr(), samples.len(), 0, 0)
        };
        if rc < 0 {
            return Err(SphinxError::Decode("ps_process_raw failed".to_owned()));
        }
        Ok(())
    }

    /// The best hypothesis so far of the open utterance, if it has words.
    pub fn partial(&mut self) -> Option<String> {
        if !self.in_utterance {
            return None;
        }
        self.hypothesis()
    }

    /// Ends the open utterance and returns its final hypothesis (`None` when
    /// no utterance was open or nothing but silence and noise was heard).
    pub fn end_utterance(&mut self) -> Result<Option<String>, SphinxError> {
        if !self.in_utterance {
            return Ok(None);
        }
        self.in_utterance = false;
        // SAFETY: `self.ps` is live and an utterance is open.
        let rc = unsafe { (self.api.ps_end_utt)(self.ps.as_ptr()) };
        if rc < 0 {
            return Err(SphinxError::Decode("ps_end_utt failed".to_owned()));
        }
        Ok(self.hypothesis())
    }

    fn hypothesis(&mut self) -> Option<String> {
        let mut score = 0i32;
        // SAFETY: `self.ps` is live; `score` is a valid out-pointer. The
        // returned string is owned by the decoder and valid until the next
        // call into it, so it is copied at once.
        let text = unsafe {
            let hyp = (self.api.ps_get_hyp)(self.ps.as_ptr(), &mut score);
            if hyp.is_null() {
                return None;
            }
            CStr::from_ptr(hyp).to_string_lossy().into_owned()
        };
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        (!text.is_empty()).then_some(text)
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        if self.in_utterance {
            // SAFETY: `self.ps` is live with an open utterance.
            unsafe { (self.api.ps_end_utt)(self.ps.as_ptr()) };
        }
        let _guard = lifecycle_lock();
        // SAFETY: `self.ps` came from ps_init, is released exactly once, here,
        // and is never used afterwards.
        unsafe { (self.api.ps_free)(self.ps.as_ptr()) };
    }
}
