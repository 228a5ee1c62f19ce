//! The `local` provider: espeak-ng as a child process, without temp files.
//!
//! Each synthesis runs `espeak-ng --stdout --stdin -b 1 -v <voice>`: the text
//! goes in on stdin (never on the command line, so nothing in it can become
//! an option), the WAV comes out on stdout and is parsed incrementally
//! ([`WavReader`]), so audio streams as espeak-ng produces it. espeak-ng
//! always speaks at 22,050 Hz; the caller resamples. The child is killed when
//! the stream is dropped (client gone, timeout) and reaped by tokio.
//!
//! Voices are validated against `espeak-ng --voices` (languages, their
//! aliases and voice names) and `--voices=variant` (the `+variant` suffix),
//! listed once on first use.

use std::collections::HashSet;
use std::io;
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

use super::{PcmStream, Provider, ProviderError, VoiceError, excerpt};
use crate::wav::WavReader;

/// The provider's name in config, labels and messages.
pub const NAME: &str = "local";

/// How long listing the voices may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of a child's stderr kept for error messages.
const STDERR_KEEP: usize = 2048;
/// Bytes read from the child's stdout at once.
const READ_CHUNK: usize = 16 * 1024;

/// The voices espeak-ng reports, lower-cased.
#[derive(Debug, Default)]
struct Voices {
    /// Language codes, their aliases ("Other Languages") and voice names.
    bases: HashSet<String>,
    /// Variant names usable after `+`.
    variants: HashSet<String>,
}

impl Voices {
    /// Parses the table `espeak-ng --voices` prints:
    /// `Pty Language Age/Gender VoiceName File Other Languages`.
    fn parse_into(table: &str, names: &mut HashSet<String>, variants: bool) {
        for line in table.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(language), Some(voice_name), Some(file)) =
                (fields.get(1), fields.get(3), fields.get(4))
            else {
                continue;
            };
            if variants {
                // File `!v/adam`, used as `+adam`; the name too, in any case.
                names.insert(voice_name.to_ascii_lowercase());
                if let Some(name) = file.rsplit('/').next() {
                    names.insert(name.to_ascii_lowercase());
                }
                continue;
            }
            names.insert(language.to_ascii_lowercase());
            names.insert(voice_name.to_ascii_lowercase());
            // "(en 3)(en-gb 9)": aliases with priorities.
            for other in fields.iter().skip(5) {
                let alias = other.trim_start_matches('(');
                if alias.len() != other.len() && !alias.is_empty() {
                    names.insert(alias.to_ascii_lowercase());
                }
            }
        }
    }

    fn contains(&self, voice: &str) -> bool {
        let voice = voice.to_ascii_lowercase();
        let (base, variant) = match voice.split_once('+') {
            Some((b, v)) => (b, Some(v)),
            None => (voice.as_str(), None),
        };
        self.bases.contains(base) && variant.is_none_or(|v| self.variants.contains(v))
    }
}

/// espeak-ng as a provider; see the module docs.
#[derive(Debug)]
pub struct Espeak {
    bin: String,
    default_voice: String,
    voices: OnceCell<Voices>,
}

impl Espeak {
    /// A provider running `bin` (a name on `PATH` or a path) with
    /// `default_voice`. Nothing runs until [`Provider::check`] or the first
    /// synthesis.
    pub fn new(bin: impl Into<String>, default_voice: impl Into<String>) -> Self {
        Espeak {
            bin: bin.into(),
            default_voice: default_voice.into(),
            voices: OnceCell::new(),
        }
    }

    fn spawn_error(&self, err: &io::Error) -> ProviderError {
        match err.kind() {
            io::ErrorKind::NotFound => ProviderError::Unavailable {
                provider: NAME,
                message: format!(
                    "espeak-ng not found: apt-get install espeak-ng \
                     (looked for {:?}; set VOICE_AGENT_TTS_ESPEAK_BIN)",
                    self.bin
                ),
            },
            io::ErrorKind::PermissionDenied => ProviderError::Unavailable {
                provider: NAME,
                message: format!("cannot execute {:?}: {err}", self.bin),
            },
            _ => ProviderError::Failed {
                provider: NAME,
                message: format!("starting {:?}: {err}", self.bin),
            },
        }
    }

    /// Runs `espeak-ng <arg>` to completion and returns its stdout.
    async fn run_to_string(&self, arg: &str) -> Result<String, ProviderError> {
        let output = Command::new(&self.bin)
            .arg(arg)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(LIST_TIMEOUT, output)
            .await
            .map_err(|_| ProviderError::Failed {
                provider: NAME,
                message: format!("{:?} {arg} took over {LIST_TIMEOUT:?}", self.bin),
            })?
            .map_err(|e| self.spawn_error(&e))?;
        if !output.status.success() {
            return Err(ProviderError::Failed {
                provider: NAME,
                message: format!(
                    "{:?} {arg} failed ({}): {}",
                    self.bin,
                    output.status,
                    excerpt(&String::from_utf8_lossy(&output.stderr), 300)
                ),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    async fn voices(&self) -> Result<&Voices, ProviderError> {
        self.voices
            .get_or_try_init(|| async {
                let mut voices = Voices::default();
                Voices::parse_into(
                    &self.run_to_string("--voices").await?,
                    &mut voices.bases,
                    false,
                );
                Voices::parse_into(
                    &self.run_to_string("--voices=variant").await?,
                    &mut voices.variants,
                    true,
                );
                if voices.bases.is_empty() {
                    return Err(ProviderError::Unavailable {
                        provider: NAME,
                        message: format!(
                            "{:?} --voices lists no voices (is espeak-ng-data installed?)",
                            self.bin
                        ),
                    });
                }
                Ok(voices)
            })
            .await
    }
}

/// Replaces control characters other than line breaks and tabs, which
/// espeak-ng would otherwise read as its own control codes, with spaces.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && !matches!(c, '\n' | '\t') {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// Reads `reader` to its end, keeping the first [`STDERR_KEEP`] bytes.
async fn read_bounded(mut reader: impl AsyncRead + Unpin) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = STDERR_KEEP.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// One running espeak-ng.
struct Job {
    bin: String,
    child: Child,
    stdout: ChildStdout,
    stderr: Option<JoinHandle<String>>,
    wav: WavReader,
    buf: Vec<u8>,
    pending: Vec<i16>,
    done: bool,
}

impl Job {
    fn fail(&mut self, message: String) -> ProviderError {
        self.done = true;
        ProviderError::Failed {
            provider: NAME,
            message,
        }
    }

    /// The child's stderr, once it has exited.
    async fn stderr_text(&mut self) -> String {
        match self.stderr.take() {
            Some(task) => tokio::time::timeout(Duration::from_secs(1), task)
                .await
                .ok()
                .and_then(Result::ok)
                .map(|s| excerpt(&s, 300))
                .unwrap_or_default(),
            None => String::new(),
        }
    }

    /// Reads once from stdout into `pending`; at the end of the output,
    /// checks the exit status and the WAV framing and sets `done`.
    async fn read_step(&mut self) -> Result<(), ProviderError> {
        let n = match self.stdout.read(&mut self.buf).await {
            Ok(n) => n,
            Err(err) => return Err(self.fail(format!("reading espeak-ng output: {err}"))),
        };
        if n == 0 {
            self.done = true;
            let status = self
                .child
                .wait()
                .await
                .map_err(|err| self.fail(format!("waiting for espeak-ng: {err}")))?;
            if !status.success() {
                let stderr = self.stderr_text().await;
                return Err(self.fail(format!("{:?} failed ({status}): {stderr}", self.bin)));
            }
            if let Err(err) = self.wav.finish() {
                return Err(self.fail(format!("espeak-ng output: {err}")));
            }
            return Ok(());
        }
        let Job {
            wav, buf, pending, ..
        } = &mut *self;
        if let Err(err) = wav.push(&buf[..n], pending) {
            return Err(self.fail(format!("espeak-ng output: {err}")));
        }
        Ok(())
    }

    async fn next_chunk(&mut self) -> Option<Result<Vec<i16>, ProviderError>> {
        loop {
            if !self.pending.is_empty() {
                return Some(Ok(std::mem::take(&mut self.pending)));
            }
            if self.done {
                return None;
            }
            if let Err(err) = self.read_step().await {
                return Some(Err(err));
            }
        }
    }
}

impl Provider for Espeak {
    fn name(&self) -> &'static str {
        NAME
    }

    fn default_voice(&self) -> &str {
        &self.default_voice
    }

    fn check(&self) -> BoxFuture<'_, Result<String, ProviderError>> {
        Box::pin(async move {
            let voices = self.voices().await?;
            if !voices.contains(&self.default_voice) {
                return Err(ProviderError::Unavailable {
                    provider: NAME,
                    message: format!(
                        "default voice {:?} is not an espeak-ng voice (see espeak-ng --voices)",
                        self.default_voice
                    ),
                });
            }
            Ok(format!(
                "espeak-ng ({:?}): {} voice names, default {}",
                self.bin,
                voices.bases.len(),
                self.default_voice
            ))
        })
    }

    fn check_voice<'a>(&'a self, voice: &'a str) -> BoxFuture<'a, Result<(), VoiceError>> {
        Box::pin(async move {
            if self.voices().await?.contains(voice) {
                Ok(())
            } else {
                Err(VoiceError::Unknown(format!(
                    "{voice:?} is not an espeak-ng voice (language like en-us, \
                     optionally +variant like en-us+f3)"
                )))
            }
        })
    }

    fn synthesize<'a>(
        &'a self,
        text: &'a str,
        voice: &'a str,
        _preferred_rate: u32,
    ) -> BoxFuture<'a, Result<PcmStream, ProviderError>> {
        Box::pin(async move {
            let mut child = Command::new(&self.bin)
                // `-v` takes the next argument whatever it looks like, and
                // voices are validated anyway.
                .args(["--stdout", "--stdin", "-b", "1", "-v", voice])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| self.spawn_error(&e))?;
            let (Some(mut stdin), Some(stdout), Some(stderr)) =
                (child.stdin.take(), child.stdout.take(), child.stderr.take())
            else {
                return Err(ProviderError::Failed {
                    provider: NAME,
                    message: "espeak-ng started without pipes".into(),
                });
            };
            let input = sanitize(text);
            // A separate task, so a text larger than the pipe buffer cannot
            // deadlock against unread output; dropping stdin sends EOF.
            tokio::spawn(async move {
                let _ = stdin.write_all(input.as_bytes()).await;
            });
            let mut job = Job {
                bin: self.bin.clone(),
                child,
                stdout,
                stderr: Some(tokio::spawn(read_bounded(stderr))),
                wav: WavReader::new(),
                buf: vec![0; READ_CHUNK],
                pending: Vec::new(),
                done: false,
            };
            let sample_rate = loop {
                if let Some(format) = job.wav.format() {
                    break format.sample_rate;
                }
                job.read_step().await?;
                if job.done {
                    return Err(job.fail("espeak-ng produced no audio".into()));
                }
            };
            let chunks = futures::stream::unfold(job, |mut job| async move {
                job.next_chunk().await.map(|item| (item, job))
            })
            .boxed();
            Ok(PcmStream {
                sample_rate,
                chunks,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOICES: &str = "\
Pty Language       Age/Gender VoiceName          File                 Other Languages
 5  af              --/M      Afrikaans          gmw/af
 2  en-gb           --/M      English_(Great_Britain) gmw/en               (en 2)
 2  en-us           --/M      English_(America)  gmw/en-US            (en 3)
";
    const VARIANTS: &str = "\
Pty Language       Age/Gender VoiceName          File                 Other Languages
 5  variant         --/M      Adam               !v/adam
 5  variant         --/F      f3                 !v/f3
";

    #[test]
    fn voice_table_parsing() {
        let mut voices = Voices::default();
        Voices::parse_into(VOICES, &mut voices.bases, false);
        Voices::parse_into(VARIANTS, &mut voices.variants, true);
        for ok in ["en-us", "EN-US", "en", "af", "en-gb+f3", "en-us+Adam"] {
            assert!(voices.contains(ok), "{ok}");
        }
        for bad in ["xx", "en-us+nope", "variant", "gmw/en-us", "+f3", ""] {
            assert!(!voices.contains(bad), "{bad}");
        }
    }

    #[test]
    fn sanitize_replaces_control_characters() {
        assert_eq!(sanitize("a\u{1}b\nc\td\u{7f}"), "a b\nc\td ");
    }
}
