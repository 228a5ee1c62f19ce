//! Text to vectors: the [`Embedder`] trait, the built-in, deterministic
//! [`LocalEmbedder`] and the OpenAI-compatible [`OpenAiEmbedder`].

use std::collections::HashMap;

use futures::future::BoxFuture;
use thiserror::Error;

use crate::text::terms;

pub mod openai;

pub use openai::{OpenAiEmbedder, OpenAiEmbedderSettings};

/// An embedding failure.
#[derive(Debug, Clone, Error)]
#[error("embedder {embedder}: {message}")]
pub struct EmbedError {
    /// The embedder's name.
    pub embedder: &'static str,
    /// What failed.
    pub message: String,
}

/// Turns texts into unit-length vectors of a fixed dimension; similar texts
/// get vectors with a high dot product (cosine similarity).
pub trait Embedder: Send + Sync + std::fmt::Debug {
    /// A stable name of the model, e.g. `local-hash-v1`; vectors of two
    /// different names are not comparable.
    fn name(&self) -> &'static str;
    /// Length of every vector.
    fn dimensions(&self) -> usize;
    /// One vector per text, in order.
    fn embed<'a>(&'a self, texts: &'a [String])
    -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>>;
}

/// Hashed word unigrams and bigrams (the "hashing trick"), sublinear term
/// frequency, signed buckets, L2-normalized. Words are lower-cased, stop
/// words dropped and lightly stemmed (see [`crate::text::terms`]).
/// Deterministic across processes and platforms: FNV-1a, no random seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalEmbedder {
    dimensions: usize,
}

/// Default dimension of the local embedder.
pub const LOCAL_DIMENSIONS: usize = 512;
/// Weight of a bigram relative to a unigram.
const BIGRAM_WEIGHT: f32 = 0.5;

impl Default for LocalEmbedder {
    fn default() -> Self {
        LocalEmbedder::new(LOCAL_DIMENSIONS)
    }
}

fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0x1f;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in part.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    // Final avalanche (from SplitMix64), so bucket and sign bits are mixed.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

impl LocalEmbedder {
    /// An embedder with `dimensions` buckets (at least 16).
    pub fn new(dimensions: usize) -> Self {
        LocalEmbedder {
            dimensions: dimensions.max(16),
        }
    }

    /// The vector of one text; all zeros when it has no terms.
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let terms = terms(text);
        let mut features: HashMap<u64, f32> = HashMap::with_capacity(terms.len() * 2);
        for t in &terms {
            *features.entry(fnv1a(&[t])).or_default() += 1.0;
        }
        for pair in terms.windows(2) {
            *features.entry(fnv1a(&[&pair[0], &pair[1]])).or_default() += BIGRAM_WEIGHT;
        }
        let mut v = vec![0f32; self.dimensions];
        let dims = self.dimensions as u64;
        for (h, tf) in features {
            // Sublinear tf: a word said ten times is not ten times as relevant.
            let w = 1.0 + tf.ln().max(0.0);
            let w = if tf < 1.0 { tf } else { w };
            let bucket = usize::try_from(h % dims).unwrap_or(0);
            if h >> 63 == 1 {
                v[bucket] -= w;
            } else {
                v[bucket] += w;
            }
        }
        normalize(&mut v);
        v
    }
}

/// Scales `v` to unit length (leaves a zero vector alone).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in v {
            *x /= norm;
        }
    }
}

impl Embedder for LocalEmbedder {
    fn name(&self) -> &'static str {
        "local-hash-v1"
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        let out = texts.iter().map(|t| self.embed_one(t)).collect();
        Box::pin(async move { Ok(out) })
    }
}

/// Dot product of two equally long vectors (cosine for unit vectors).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler vectorize.
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_unit_vectors() {
        let e = LocalEmbedder::default();
        let a = e.embed_one("Opening hours on Saturday");
        assert_eq!(a.len(), LOCAL_DIMENSIONS);
        assert_eq!(a, e.embed_one("opening HOURS on saturday!"));
        assert!((dot(&a, &a) - 1.0).abs() < 1e-5);
        assert!(e.embed_one("the of and").iter().all(|&x| x == 0.0));
    }

    #[test]
    fn similar_texts_score_higher() {
        let e = LocalEmbedder::default();
        let q = e.embed_one("When are you open on Saturdays?");
        let hours = e.embed_one("Opening hours. We open on Saturdays from 10 am to 4 pm.");
        let repairs = e.embed_one("We repair all brands of bicycles, including electric bikes.");
        assert!(dot(&q, &hours) > 0.3, "{}", dot(&q, &hours));
        assert!(dot(&q, &repairs).abs() < 0.1, "{}", dot(&q, &repairs));
    }

    #[test]
    fn dot_handles_remainders() {
        let a: Vec<f32> = (0..13).map(|i| i as f32).collect();
        let naive: f32 = a.iter().map(|x| x * x).sum();
        assert_eq!(dot(&a, &a), naive);
    }
}
