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
        let (input, mut rx) = mpsc::channel::<SttInput>(500);
        let (tx, events) = mpsc::channel(64);
        let lines = Arc::clone(&self.lines);
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
                        let text = lines
                            .lock()
                            .map(|mut l| l.pop_front().unwrap_or_default())
                            .unwrap_or_default();
                        SttEvent::Final {
                            text,
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
        Ok(SttStream { input, events })
    }
}
