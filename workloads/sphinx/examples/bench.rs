//! Recognition benchmark: the example agent's questions spoken by espeak-ng,
//! sent through a phone line (8 kHz mu-law), recognized with PocketSphinx.
//! Prints per-utterance hypotheses, WER, real-time factor and decoder load
//! times.
//!
//! ```text
//! cargo run --release -p voice-agent-sphinx --example bench -- [options]
//!   --lm domain|default     language model (default: domain)
//!   --rate HZ               decoder sample rate (default 16000)
//!   --wpm N                 espeak-ng speaking rate (default 150)
//!   --set -name=value       extra PocketSphinx argument (repeatable)
//!   --order N               n-gram order of the domain model (2 or 3)
//!   --weight N              domain text weight
//!   --no-baseline           domain text only
//!   --no-trim               load the full dictionary
//!   --extra                 also run the held-out questions
//!   --chunk-ms N            audio chunk size fed to the decoder (default 20)
//!   --floor-db DB|none      noise floor below the speech level (default 28)
//!   --gain-db DB            input gain before the phone line
//!   --voices V1,V2          espeak-ng voices (default en-us)
//!   --sets test,dev,held-out  question sets (default test)
//!   --pad-ms B,A            silence before and after each utterance
//!   --wideband              skip the phone line (espeak-ng audio resampled directly)
//!   --dump DIR              write each utterance (decoder-rate WAV) and the model to DIR
//! ```

use std::path::Path;
use std::time::Instant;

use voice_agent_sphinx::phone::PhoneUpsampler;
use voice_agent_sphinx::testing::{self, HARBOR_BIKES_QUESTIONS};
use voice_agent_sphinx::wer::word_errors;
use voice_agent_sphinx::{DecoderConfig, DecoderPool, DomainOptions, LanguageModel};

/// Questions that are not in the WER test set, phrased differently from
/// the knowledge text, to see how the model generalizes.
const HELD_OUT: [&str; 8] = [
    "Where is your shop?",
    "Can I rent a city bike for the weekend?",
    "How long does a full service take?",
    "Do I need to bring my ID?",
    "What do you charge for a new tube?",
    "Can you deliver a bike to my house?",
    "Do you close for public holidays?",
    "Yes please, that would be great",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut lm = "domain".to_owned();
    let mut rate = 16_000u32;
    let mut wpm = testing::ESPEAK_WPM;
    let mut extra_args = Vec::new();
    let mut options = DomainOptions::new(String::new());
    let mut held_out = false;
    let mut chunk_ms = 20usize;
    let mut wideband = false;
    let mut pad = (0usize, 0usize);
    let mut floor_db = Some(voice_agent_sphinx::phone::DEFAULT_FLOOR_BELOW_SPEECH_DB);
    let mut gain_db = 0.0f32;
    let mut voices = vec!["en-us".to_owned()];
    let mut set_names = vec!["test".to_owned()];
    let mut dump: Option<std::path::PathBuf> = None;
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--lm" => lm = value()?,
            "--rate" => rate = value()?.parse()?,
            "--wpm" => wpm = value()?.parse()?,
            "--set" => {
                let v = value()?;
                let (n, x) = v.split_once('=').ok_or("--set -name=value")?;
                extra_args.push((n.to_owned(), x.to_owned()));
            }
            "--order" => options.lm.order = value()?.parse()?,
            "--weight" => options.lm.domain_weight = value()?.parse()?,
            "--no-baseline" => options.lm.baseline = false,
            "--no-trim" => options.trim_dictionary = false,
            "--extra" => held_out = true,
            "--chunk-ms" => chunk_ms = value()?.parse()?,
            "--wideband" => wideband = true,
            "--pad-ms" => {
                let v = value()?;
                let (a, b) = v.split_once(',').ok_or("--pad-ms BEFORE,AFTER")?;
                pad = (a.parse()?, b.parse()?);
            }
            "--floor-db" => {
                let v = value()?;
                floor_db = if v == "none" { None } else { Some(v.parse()?) };
            }
            "--gain-db" => gain_db = value()?.parse()?,
            "--voices" => voices = value()?.split(',').map(str::to_owned).collect(),
            "--sets" => set_names = value()?.split(',').map(str::to_owned).collect(),
            "--dump" => dump = Some(value()?.into()),
            other => return Err(format!("unknown option {other}").into()),
        }
    }

    testing::check_speech_tools()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    options.domain_text = testing::example_knowledge(&root);
    options.sample_rate = rate;
    options.tuning.extra = extra_args;

    let build_started = Instant::now();
    let pool = if lm == "default" {
        let mut config = DecoderConfig::en_us(&options.model_dir, LanguageModel::Default);
        config.sample_rate = rate;
        config.tuning = options.tuning.clone();
        DecoderPool::new(config)
    } else {
        DecoderPool::for_domain(&options)?
    };
    let build_ms = build_started.elapsed().as_secs_f64() * 1e3;
    println!(
        "language model: {lm} ({} words), built in {build_ms:.0} ms; decoder args {:?}",
        pool.vocabulary_size(),
        pool.config().tuning
    );

    // Load times: a few fresh decoders (the first includes dlopen).
    let mut loads = Vec::new();
    for _ in 0..3 {
        let d = pool.load()?;
        loads.push(d.load_time().as_secs_f64() * 1e3);
    }
    println!("decoder load ms: {loads:.0?}");
    let reuse_started = Instant::now();
    pool.prewarm(1)?;
    drop(pool.get()?);
    let pooled = Instant::now();
    drop(pool.get()?);
    println!(
        "pooled checkout: {:.3} ms (prewarm took {:.0} ms)",
        pooled.elapsed().as_secs_f64() * 1e3,
        (pooled - reuse_started).as_secs_f64() * 1e3
    );

    let mut sets = Vec::new();
    for name in &set_names {
        match name.as_str() {
            "test" => sets.push(("test set", HARBOR_BIKES_QUESTIONS.to_vec())),
            "held-out" => sets.push(("held-out", HELD_OUT.to_vec())),
            "dev" => sets.push(("dev", DEV.to_vec())),
            other => return Err(format!("unknown set {other}").into()),
        }
    }
    if held_out {
        sets.push(("held-out", HELD_OUT.to_vec()));
    }
    let mut grand = (0, 0);
    let mut end_ms: Vec<f64> = Vec::new();
    for voice in &voices {
        for (name, questions) in &sets {
            let (mut errors, mut words) = (0, 0);
            let (mut audio_s, mut decode_s) = (0.0, 0.0);
            println!("\n{name} ({voice}):");
            for &q in questions {
                let (samples, espeak_rate) = testing::espeak_voice(q, voice, wpm)?;
                let audio = if wideband {
                    testing::resample(&samples, espeak_rate, rate)?
                } else {
                    let mut phone = vec![0i16; 8 * pad.0];
                    phone.extend(testing::telephone(&scale(&samples, gain_db), espeak_rate)?);
                    phone.extend(vec![0i16; 8 * pad.1]);
                    // 20 ms frames, as the runtime feeds them.
                    let mut up = PhoneUpsampler::with_floor(8_000, floor_db)?;
                    let mut a = Vec::new();
                    for frame in phone.chunks(160) {
                        up.process(frame, &mut a);
                    }
                    up.flush(&mut a);
                    a
                };
                if let Some(dir) = &dump {
                    std::fs::create_dir_all(dir)?;
                    let name: String = q.chars().filter(|c| c.is_alphanumeric()).collect();
                    std::fs::write(dir.join(format!("{name}.wav")), wav(&audio, rate))?;
                    if let voice_agent_sphinx::LanguageModel::Arpa(p) = &pool.config().lm {
                        std::fs::copy(p, dir.join("model.arpa"))?;
                    }
                    std::fs::copy(&pool.config().dict, dir.join("model.dict"))?;
                }
                let mut decoder = pool.get()?;
                let started = Instant::now();
                decoder.start_utterance()?;
                for chunk in audio.chunks((rate as usize * chunk_ms / 1000).max(1)) {
                    decoder.process(chunk)?;
                }
                // The final passes (flat lexicon, best path) run here, after
                // the caller stopped: this adds to the end-of-utterance latency.
                let ending = Instant::now();
                let hyp = decoder.end_utterance()?.unwrap_or_default();
                end_ms.push(ending.elapsed().as_secs_f64() * 1e3);
                decode_s += started.elapsed().as_secs_f64();
                audio_s += audio.len() as f64 / f64::from(rate);
                let (e, n) = word_errors(q, &hyp);
                errors += e;
                words += n;
                println!("  {:.2}  {q:45} -> {hyp}", e as f64 / n as f64);
            }
            println!(
                "  WER {:.3} ({errors}/{words}); real-time factor {:.3} ({:.2} s audio in {:.2} s)",
                errors as f64 / words as f64,
                decode_s / audio_s,
                audio_s,
                decode_s
            );
            grand.0 += errors;
            grand.1 += words;
        }
    }
    // Hallucinations: what silence (phone zeros, plus the noise floor) and a
    // quiet hiss decode to. The runtime only decodes what its VAD calls
    // speech, but the pre-roll and the endpointing tail are silence.
    let mut silent_words = 0;
    let warm_clip = testing::resample(
        &testing::phone_speech("What time do you open on Saturday?")?,
        8_000,
        rate,
    )?;
    let mut probes: Vec<(String, Vec<i16>)> = Vec::new();
    for secs in [1usize, 3] {
        probes.push((format!("silence {secs} s"), vec![0; 8_000 * secs]));
    }
    for (amplitude, burst) in [(40i32, false), (300, false), (6_000, true)] {
        let mut seed = 7u32;
        let noise: Vec<i16> = (0..16_000)
            .map(|i| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let v = (seed >> 16) as i32 % (2 * amplitude + 1) - amplitude;
                // A burst: 250 ms of loud noise (a cough, a bump) in silence.
                if burst && !(6_000..8_000).contains(&i) {
                    0
                } else {
                    v as i16
                }
            })
            .collect();
        let name = if burst {
            "noise burst".to_owned()
        } else {
            format!("hiss ±{amplitude}")
        };
        probes.push((name, noise));
    }
    for (name, phone) in &probes {
        for warm in [false, true] {
            let mut up = PhoneUpsampler::with_floor(8_000, floor_db)?;
            let mut audio = Vec::new();
            for frame in phone.chunks(160) {
                up.process(frame, &mut audio);
            }
            up.flush(&mut audio);
            // A fresh decoder, or one that decoded speech before (its
            // cepstral mean adapted), as in a call.
            let mut decoder = pool.load()?;
            if warm {
                decoder.start_utterance()?;
                decoder.process(&warm_clip)?;
                decoder.end_utterance()?;
            }
            decoder.start_utterance()?;
            for chunk in audio.chunks(320) {
                decoder.process(chunk)?;
            }
            let hyp = decoder.end_utterance()?.unwrap_or_default();
            silent_words += hyp.split_whitespace().count();
            println!("{name} (warm {warm}) -> {hyp:?}");
        }
    }
    println!("words hallucinated on silence: {silent_words}");
    end_ms.sort_by(f64::total_cmp);
    if !end_ms.is_empty() {
        let pct = |p: f64| end_ms[((end_ms.len() - 1) as f64 * p).round() as usize];
        println!(
            "\nend_utterance (final passes after the last audio, adds to end-of-turn latency): \
             p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
            pct(0.5),
            pct(0.95),
            pct(1.0)
        );
    }
    println!(
        "\nOVERALL WER {:.3} ({}/{})",
        grand.0 as f64 / grand.1 as f64,
        grand.0,
        grand.1
    );
    Ok(())
}

/// Development questions (parameter tuning happens on these, not on the
/// test set): more of what callers of the example agent ask, and generic
/// phone phrases.
const DEV: [&str; 24] = [
    "Hi, are you open today?",
    "What are your opening hours on Friday?",
    "When do you close on Saturday?",
    "How much is a full service?",
    "How much does it cost to rent a city bike?",
    "How much are electric bikes per day?",
    "Do I need a credit card for the deposit?",
    "Can I get a refund without the receipt?",
    "How long does a tune up take?",
    "Where are you located?",
    "Is there parking near the shop?",
    "Do you deliver?",
    "Can I bring my bike in on Monday?",
    "Do you fix flat tires?",
    "Are you open on public holidays?",
    "What is your address?",
    "Can I return accessories?",
    "Yes, that's right",
    "No thank you",
    "Could you repeat that please?",
    "I'd like to rent two bikes for Saturday",
    "Thank you very much, bye",
    "Hello, I have a question about a repair",
    "Okay, great, thanks",
];

/// `samples` scaled by `db` decibels.
fn scale(samples: &[i16], db: f32) -> Vec<i16> {
    let g = 10f32.powf(db / 20.0);
    samples
        .iter()
        .map(|&s| (f32::from(s) * g).clamp(-32768.0, 32767.0) as i16)
        .collect()
}

/// A PCM16 mono WAV file.
fn wav(samples: &[i16], rate: u32) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}
