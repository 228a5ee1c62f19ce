//! Word error rate: word-level Levenshtein distance between a reference and a
//! hypothesis, divided by the number of reference words.

use crate::text;

/// Substitutions + deletions + insertions over reference words, after both
/// texts are normalized (case, punctuation, numbers spelled out: "49" and
/// "forty nine" match). An empty reference gives 0 for an empty hypothesis
/// and 1 otherwise (every hypothesis word is an insertion).
pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    let (errors, words) = word_errors(reference, hypothesis);
    if words == 0 {
        return if errors == 0 { 0.0 } else { 1.0 };
    }
    errors as f64 / words as f64
}

/// The edit distance in words and the number of reference words, for
/// pooling a corpus-level WER (sum of errors over sum of words).
pub fn word_errors(reference: &str, hypothesis: &str) -> (usize, usize) {
    let r = text::words(reference);
    let h = text::words(hypothesis);
    (levenshtein(&r, &h), r.len())
}

fn levenshtein<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, x) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(x != y);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_cases() {
        assert_eq!(wer("What time do you open?", "what time do you open"), 0.0);
        assert_eq!(wer("a b c d", "a x c d"), 0.25);
        assert_eq!(wer("a b c d", "a c d"), 0.25);
        assert_eq!(wer("a b", "a b c d"), 1.0);
        assert_eq!(wer("a b c", ""), 1.0);
        assert_eq!(wer("", ""), 0.0);
        assert_eq!(wer("", "noise"), 1.0);
        assert_eq!(
            wer("It costs 49 dollars.", "it costs forty nine dollars"),
            0.0
        );
        assert_eq!(word_errors("Thanks, goodbye", "thanks bye"), (1, 2));
    }
}
