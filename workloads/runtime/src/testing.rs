//! Test and benchmark helpers: a scripted recognizer that hears speech with
//! the runtime's own VAD and, at each pause, "recognizes" the next scripted
//! line. It keeps voice-loop tests and benchmarks about the loop (turns,
//! barge-in, pacing, latency); the real recognizers have their own tests.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::stt::{SttError, SttEvent, SttInput, SttParams, SttProvider, SttStream};
use crate::vad::{Vad, VadConfig, VadEvent};

/// A recognizer that returns scripted lines at each pause in speech.
#[derive(Debug, Default, Clone)]
pub struct ScriptedStt {
    /// Lines recognized at the next pauses, in order (empty = noise).
    pub lines: Arc<Mutex<VecDeque<String>>>,
}

impl SttProvider for ScriptedStt {
    fn name(&self) -> &'static str {
        "scripted"
    }

    fn open(&self, params: &SttParams) -> Result<SttStream, SttError> {
        let lines = Arc::clone(&self.lines);
        Ok(open_scripted(params, move || {
            lines
                .lock()
                .map(|mut l| l.pop_front().unwrap_or_default())
                .unwrap_or_default()
        }))
    }
}

/// A recognizer that "recognizes" the same line at every pause in speech,
/// for load tests where every caller turn must be a real turn (a
/// [`ScriptedStt`] with an empty queue hears noise instead).
#[derive(Debug, Clone)]
pub struct RepeatingStt {
    /// The line recognized at each pause.
    pub line: Arc<str>,
}

impl SttProvider for RepeatingStt {
    fn name(&self) -> &'static str {
        "repeating"
    }

    fn open(&self, params: &SttParams) -> Result<SttStream, SttError> {
        let line = Arc::clone(&self.line);
        Ok(open_scripted(params, move || line.to_string()))
    }
}

/// A stream that hears speech with the runtime's VAD (hangover = the
/// endpointing setting) and, at each end of speech, emits a final with the
/// text `next_line` gives.
fn open_scripted(
    params: &SttParams,
    mut next_line: impl FnMut() -> String + Send + 'static,
) -> SttStream {
    let (input, mut rx) = mpsc::channel::<SttInput>(500);
    let (tx, events) = mpsc::channel(64);
    let endpointing_ms = params.endpointing_ms;
    let rate = params.sample_rate;
    tokio::spawn(async move {
        let mut vad = Vad::new(VadConfig {
            hangover_ms: endpointing_ms,
            ..VadConfig::telephone(rate)
        });
        while let Some(input) = rx.recv().await {
            let event = match input {
                SttInput::Audio(pcm) => vad.push(&pcm),
                SttInput::Finalize => vad.is_speech().then_some(VadEvent::SpeechEnd),
                SttInput::Close => return,
            };
            let out = match event {
                Some(VadEvent::SpeechStart) => SttEvent::SpeechStarted,
                Some(VadEvent::SpeechEnd) => {
                    vad.reset();
                    SttEvent::Final {
                        text: next_line(),
                        speech_final: true,
                    }
                }
                None => continue,
            };
            if tx.send(out).await.is_err() {
                return;
            }
        }
    });
    SttStream { input, events }
}
