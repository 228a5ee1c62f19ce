//! Helpers for tests and benchmarks: speech rendered by espeak-ng and sent
//! through a telephone channel (8 kHz G.711 mu-law), the example agent's
//! knowledge text and questions, and the "fail unless told to skip" rule for
//! tests that need PocketSphinx and espeak-ng.

use std::path::Path;
use std::process::Command;

use voice_agent_proto::Resampler;
use voice_agent_proto::audio::{decode_mulaw, encode_mulaw};

use crate::SphinxError;

/// Set to `1` to let tests that need PocketSphinx or espeak-ng pass without
/// running when those are missing. Unset (the default, and CI), such tests
/// fail, so a broken install is never mistaken for a green run.
pub const SKIP_ENV: &str = "VOICE_AGENT_SKIP_SPHINX";

/// The espeak-ng speaking rate (words per minute) that PocketSphinx
/// recognizes best (measured: better than 130 or 175).
pub const ESPEAK_WPM: u32 = 150;

/// The example agent's knowledge base (used when `examples/knowledge/*.md`
/// is absent).
pub const HARBOR_BIKES_KNOWLEDGE: &str = "Harbor Bikes is a bicycle shop and repair workshop at 12 Pier Road. \
Opening hours: Monday to Friday 9 am to 6 pm; Saturday 10 am to 4 pm; closed on Sunday and public holidays. \
Prices: a basic tune-up costs 49 dollars and takes two days; a full service costs 120 dollars; \
a flat tire repair costs 15 dollars including the tube. \
Rentals: city bikes 20 dollars a day, electric bikes 45 dollars a day; bring a photo ID and a credit card for the deposit. \
Returns: new bikes can be returned within 30 days with the receipt for a full refund if they have not been ridden outside; \
accessories within 14 days. We do not offer delivery. Parking is free behind the shop.";

/// Questions a caller asks the example agent (the WER test set).
pub const HARBOR_BIKES_QUESTIONS: [&str; 8] = [
    "What time do you open on Saturday?",
    "How much does a basic tune up cost?",
    "Can I return a bike I bought last week?",
    "Do you rent electric bikes?",
    "Is parking free?",
    "Are you open on Sunday?",
    "How much is a flat tire repair?",
    "Thanks, goodbye",
];

/// The knowledge text of the example agent: every `*.md` file under
/// `examples/knowledge` of the workspace (sorted by name), or
/// [`HARBOR_BIKES_KNOWLEDGE`] when there are none.
pub fn example_knowledge(workspace_root: &Path) -> String {
    let dir = workspace_root.join("examples").join("knowledge");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    let texts: Vec<String> = files
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    if texts.is_empty() {
        HARBOR_BIKES_KNOWLEDGE.to_owned()
    } else {
        texts.join("\n\n")
    }
}

/// Checks that PocketSphinx, its English model and espeak-ng are usable.
pub fn check_speech_tools() -> Result<(), String> {
    crate::check_library().map_err(|e| e.to_string())?;
    let model = Path::new(crate::DEFAULT_MODEL_DIR);
    if !model.join("en-us").join("mdef").is_file() {
        return Err(format!(
            "the PocketSphinx en-us model is missing under {}; install it with `{}`",
            model.display(),
            crate::INSTALL_HINT
        ));
    }
    match Command::new("espeak-ng").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => Err("espeak-ng is not installed; install it with `apt-get install espeak-ng`".into()),
    }
}

/// For tests that need the speech tools: `true` to run. When the tools are
/// missing, returns `false` (skip, said loudly on stderr) if [`SKIP_ENV`] is
/// `1`, and panics with the fix otherwise.
#[allow(clippy::panic)]
pub fn require_speech_tools(test: &str) -> bool {
    match check_speech_tools() {
        Ok(()) => true,
        Err(e) if std::env::var(SKIP_ENV).is_ok_and(|v| v == "1") => {
            eprintln!("SKIPPED {test}: {e} ({SKIP_ENV}=1)");
            false
        }
        Err(e) => panic!("{test} needs the speech tools: {e} (or set {SKIP_ENV}=1 to skip)"),
    }
}

/// Renders `text` with espeak-ng (US English, `wpm` words per minute) and
/// returns mono PCM16 at the synthesizer's rate (22,050 Hz).
pub fn espeak(text: &str, wpm: u32) -> Result<(Vec<i16>, u32), SphinxError> {
    espeak_voice(text, "en-us", wpm)
}

/// [`espeak`] with another espeak-ng voice (e.g. `en-us+f3`).
pub fn espeak_voice(text: &str, voice: &str, wpm: u32) -> Result<(Vec<i16>, u32), SphinxError> {
    let out = Command::new("espeak-ng")
        .args(["-v", voice, "-s", &wpm.to_string(), "--stdout", "--"])
        .arg(text)
        .output()
        .map_err(|e| SphinxError::Io(format!("cannot run espeak-ng: {e}")))?;
    if !out.status.success() {
        return Err(SphinxError::Io(format!(
            "espeak-ng failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    parse_wav(&out.stdout)
}

/// Parses a PCM16 mono WAV file (as espeak-ng writes it: its size fields
/// may be placeholders when writing to a pipe, so the data chunk runs to the
/// end of the buffer).
pub fn parse_wav(bytes: &[u8]) -> Result<(Vec<i16>, u32), SphinxError> {
    let bad = |what: &str| SphinxError::Io(format!("bad WAV: {what}"));
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(bad("no RIFF/WAVE header"));
    }
    let mut pos = 12;
    let mut rate = None;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = u32::from_le_bytes([
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ]) as usize;
        let body = pos + 8;
        if id == b"fmt " {
            let fmt = bytes
                .get(body..body + 16)
                .ok_or_else(|| bad("short fmt chunk"))?;
            let channels = u16::from_le_bytes([fmt[2], fmt[3]]);
            let bits = u16::from_le_bytes([fmt[14], fmt[15]]);
            if channels != 1 || bits != 16 {
                return Err(bad("not 16-bit mono"));
            }
            rate = Some(u32::from_le_bytes([fmt[4], fmt[5], fmt[6], fmt[7]]));
        } else if id == b"data" {
            let rate = rate.ok_or_else(|| bad("data before fmt"))?;
            let end = if len == 0 || len >= 0x7fff_0000 || body + len > bytes.len() {
                bytes.len()
            } else {
                body + len
            };
            let samples = bytes[body..end]
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect();
            return Ok((samples, rate));
        }
        pos = body + len + (len & 1);
    }
    Err(bad("no data chunk"))
}

/// Sends audio through a phone line: resample to 8 kHz, G.711 mu-law encode
/// and decode. Returns 8 kHz PCM16 as the runtime receives it.
pub fn telephone(samples: &[i16], rate: u32) -> Result<Vec<i16>, SphinxError> {
    let mut to_8k = Resampler::new(rate, 8_000).map_err(|e| SphinxError::Io(e.to_string()))?;
    let mut narrow = Vec::new();
    to_8k.process(samples, &mut narrow);
    to_8k.flush(&mut narrow);
    Ok(decode_mulaw(&encode_mulaw(&narrow)))
}

/// Resamples a whole clip (e.g. 8 kHz phone audio to the decoder's 16 kHz).
pub fn resample(samples: &[i16], from: u32, to: u32) -> Result<Vec<i16>, SphinxError> {
    let mut r = Resampler::new(from, to).map_err(|e| SphinxError::Io(e.to_string()))?;
    let mut out = Vec::new();
    r.process(samples, &mut out);
    r.flush(&mut out);
    Ok(out)
}

/// `text` spoken by espeak-ng at [`ESPEAK_WPM`] and passed through a phone
/// line: 8 kHz PCM16.
pub fn phone_speech(text: &str) -> Result<Vec<i16>, SphinxError> {
    let (samples, rate) = espeak(text, ESPEAK_WPM)?;
    telephone(&samples, rate)
}
