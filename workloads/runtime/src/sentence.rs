//! Incremental sentence splitting of a streamed agent reply, so that TTS can
//! start on the first complete sentence instead of waiting for the whole
//! reply.
//!
//! The agent streams its reply as SSE text deltas that may split anywhere
//! (inside a word, inside "a.m.", between a period and the space after it).
//! [`SentenceSplitter::push`] emits each sentence as soon as its end is
//! certain; [`SentenceSplitter::finish`] returns the rest. The result does
//! not depend on how the text was split into deltas: every decision is a
//! function of the text alone, and where a decision needs text that has not
//! arrived yet, the splitter waits for it.
//!
//! # Rules
//!
//! - A sentence ends at `.`, `!`, `?` or `…` (and the full-width `。！？`;
//!   runs such as `?!` or `...` count as one), followed by whitespace. Closing quotes and brackets
//!   (`"`, `'`, `”`, `’`, `»`, `)`, `*`) and citation markers (`[1]`,
//!   `[2, 3]`) right after the punctuation belong to the sentence.
//! - Because a sentence starts with a capital, the splitter looks at the
//!   first character after the whitespace: a lower-case letter means the
//!   punctuation did not end a sentence ("10 a.m. to 4 p.m.", "etc. and",
//!   "wait... let me see"). This costs one more token of lookahead, which an
//!   SSE stream delivers within milliseconds.
//! - A `.` never ends a sentence after a title or a Latin abbreviation
//!   (`Mr.`, `Mrs.`, `Ms.`, `Dr.`, `Prof.`, `St.`, `Mt.`, `e.g.`, `i.e.`,
//!   `vs.`, `cf.`), after a single letter (an initial: "J. Smith"), or after
//!   a number that starts the sentence (a list item: "1. Open the app").
//! - A `.` followed by something other than whitespace never ends a sentence:
//!   decimals ("4.50"), "a.m", "e.g", domain names.
//! - Nothing inside `[...]` ends a sentence (citation markers such as
//!   "[Smith et al. 2020]"), except a newline.
//! - A newline always ends a sentence (so `;` and `:` before a newline do,
//!   as do list items and headings).
//! - A sentence that reaches [`MAX_SENTENCE_CHARS`] characters without an end
//!   is cut after its last comma (at or beyond [`MIN_COMMA_CUT_CHARS`]), or
//!   else at the first whitespace after [`MAX_SENTENCE_CHARS`], so TTS never
//!   waits for a huge sentence; text without any whitespace is cut at
//!   [`HARD_MAX_SENTENCE_CHARS`].
//! - Sentences are trimmed; empty ones are never emitted.

/// A sentence this long (in characters) without an end is cut at a comma or
/// a space.
pub const MAX_SENTENCE_CHARS: usize = 200;

/// A comma earlier than this (in characters from the sentence start) is not
/// used for a long-sentence cut: the piece would be too short to sound
/// natural.
pub const MIN_COMMA_CUT_CHARS: usize = 100;

/// Text without any whitespace is cut at this many characters.
pub const HARD_MAX_SENTENCE_CHARS: usize = 400;

/// Abbreviations after which a `.` never ends a sentence (lower case,
/// without the final dot). Abbreviations that often do end one ("etc.",
/// "a.m.", "p.m.", "Inc.") are left to the lower-case rule.
const NEVER_SPLIT: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "st", "mt", "e.g", "i.e", "vs", "cf",
];

/// Longest citation marker, brackets included, in characters.
const MAX_CITATION_CHARS: usize = 24;

/// Splits a streamed reply into sentences. See the module documentation for
/// the rules.
#[derive(Debug, Clone, Default)]
pub struct SentenceSplitter {
    /// Text received but not yet emitted; starts at a sentence start (no
    /// leading whitespace).
    pending: String,
}

impl SentenceSplitter {
    /// A splitter for a new reply.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a delta; pushes every sentence completed by it into `out`
    /// (trimmed, non-empty).
    pub fn push(&mut self, delta: &str, out: &mut Vec<String>) {
        self.pending.push_str(delta);
        loop {
            let leading = self.pending.len() - self.pending.trim_start().len();
            self.pending.drain(..leading);
            let Some(cut) = next_cut(&self.pending) else {
                break;
            };
            // `cut` is a char boundary within `pending` (next_cut only returns
            // indices it got from char positions).
            let sentence = self.pending.get(..cut).unwrap_or_default().trim();
            if !sentence.is_empty() {
                out.push(sentence.to_owned());
            }
            if cut == 0 {
                // Cannot happen (a cut always consumes a character), but
                // never loop forever on a bug.
                break;
            }
            self.pending.drain(..cut);
        }
    }

    /// End of the reply: the remaining text, if any (trimmed, non-empty).
    /// The splitter is empty afterwards and can be reused.
    pub fn finish(&mut self) -> Option<String> {
        let rest = self.pending.trim();
        let rest = (!rest.is_empty()).then(|| rest.to_owned());
        self.pending.clear();
        rest
    }

    /// The text received and not yet emitted.
    pub fn pending(&self) -> &str {
        &self.pending
    }
}

/// What a sentence-ending candidate turned out to be.
enum Decision {
    /// The sentence ends at this byte index.
    Cut(usize),
    /// Not an end; resume scanning at this byte index.
    Continue(usize),
    /// Deciding needs text that has not arrived.
    NeedMore,
}

/// The end (byte index) of the first sentence of `text`, or `None` when it
/// is not certain yet. `text` starts at a sentence start.
fn next_cut(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut comma_cut: Option<usize> = None;
    let mut count = 0usize;
    let mut i = 0usize;
    while let Some(c) = char_at(text, i) {
        if count >= HARD_MAX_SENTENCE_CHARS {
            return Some(i);
        }
        if count >= MAX_SENTENCE_CHARS {
            // Every comma candidate lies before this char, so whether it is
            // followed by whitespace is known: the decision cannot depend on
            // where the deltas were split.
            if let Some(at) = comma_cut {
                return Some(at);
            }
            if c.is_whitespace() {
                return Some(i);
            }
        }
        let after = i + c.len_utf8();
        match c {
            '\n' => return Some(after),
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0
                && (MIN_COMMA_CUT_CHARS..MAX_SENTENCE_CHARS).contains(&count)
                && char_at(text, after).is_some_and(char::is_whitespace) =>
            {
                comma_cut = Some(after);
            }
            c if depth == 0 && is_terminator(c) => match decide(text, i) {
                Decision::Cut(at) => return Some(at),
                Decision::NeedMore => return None,
                Decision::Continue(next) => {
                    count += text.get(i..next).map_or(1, |s| s.chars().count());
                    i = next;
                    continue;
                }
            },
            _ => {}
        }
        count += 1;
        i = after;
    }
    None
}

/// Decides whether the terminator at byte `i` ends the sentence.
fn decide(text: &str, i: usize) -> Decision {
    // The run of terminators: "?!", "...".
    let mut k = i;
    while let Some(c) = char_at(text, k).filter(|&c| is_terminator(c)) {
        k += c.len_utf8();
    }
    let run = text.get(i..k).unwrap_or_default();
    // Closing quotes/brackets and citation markers that belong to it.
    loop {
        let Some(c) = char_at(text, k) else {
            return Decision::NeedMore;
        };
        if is_closer(c) {
            k += c.len_utf8();
        } else if c == '[' {
            match citation_end(text, k) {
                Citation::End(end) => k = end,
                Citation::Incomplete => return Decision::NeedMore,
                Citation::No => break,
            }
        } else {
            break;
        }
    }
    // Only whitespace ends a sentence: "4.50", "a.m", "e.g" do not.
    if !char_at(text, k).is_some_and(char::is_whitespace) {
        return Decision::Continue(k.max(i + 1));
    }
    // The first character of what would be the next sentence.
    let mut m = k;
    let next = loop {
        match char_at(text, m) {
            None => return Decision::NeedMore,
            Some('\n') => return Decision::Cut(k),
            Some(w) if w.is_whitespace() => m += w.len_utf8(),
            Some(n) => break n,
        }
    };
    if run == "." && dot_is_abbreviation(text, i) {
        return Decision::Continue(k);
    }
    if next.is_lowercase() {
        return Decision::Continue(k);
    }
    Decision::Cut(k)
}

/// Whether the single `.` at byte `i` ends an abbreviation, an initial or a
/// leading list number rather than a sentence.
fn dot_is_abbreviation(text: &str, i: usize) -> bool {
    let before = text.get(..i).unwrap_or_default();
    let word_start = before
        .char_indices()
        .rev()
        .find(|&(_, c)| c.is_whitespace())
        .map_or(0, |(j, c)| j + c.len_utf8());
    let raw = before.get(word_start..).unwrap_or_default();
    // Opening quotes and brackets are not part of the word.
    let word = raw.trim_start_matches(|c: char| !c.is_alphanumeric());
    let mut chars = word.chars();
    match (chars.next(), chars.next()) {
        (None, _) => false,
        // An initial: "J. Smith".
        (Some(c), None) if c.is_alphabetic() => true,
        _ => {
            (word.chars().all(|c| c.is_ascii_digit()) && before.len() - word.len() == 0)
                || NEVER_SPLIT.iter().any(|a| a.eq_ignore_ascii_case(word))
        }
    }
}

enum Citation {
    /// A citation marker ends at this byte index (after its `]`).
    End(usize),
    /// The text ends inside what may be a citation marker.
    Incomplete,
    /// Not a citation marker.
    No,
}

/// Whether a citation marker (`[1]`, `[2, 3]`, `[^4]`) starts at byte `k`
/// (which holds `[`).
fn citation_end(text: &str, k: usize) -> Citation {
    let Some(rest) = text.get(k + 1..) else {
        return Citation::Incomplete;
    };
    let mut digits = false;
    for (n, (j, c)) in rest.char_indices().enumerate() {
        if n + 2 > MAX_CITATION_CHARS {
            return Citation::No;
        }
        match c {
            ']' if digits => return Citation::End(k + 1 + j + 1),
            '0'..='9' => digits = true,
            'a'..='z' | 'A'..='Z' | ',' | ' ' | '-' | '\u{2013}' | '^' | '#' | '_' => {}
            _ => return Citation::No,
        }
    }
    Citation::Incomplete
}

fn is_terminator(c: char) -> bool {
    // Full-width CJK stops too, for replies in those languages.
    matches!(
        c,
        '.' | '!' | '?' | '\u{2026}' | '\u{3002}' | '\u{FF01}' | '\u{FF1F}'
    )
}

fn is_closer(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | ')' | '*' | '\u{201D}' | '\u{2019}' | '\u{BB}'
    )
}

/// The char starting at byte `i`, if `i` is in range and a char boundary.
fn char_at(text: &str, i: usize) -> Option<char> {
    text.get(i..).and_then(|s| s.chars().next())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_whole(text: &str) -> Vec<String> {
        split_deltas(&[text])
    }

    fn split_deltas(deltas: &[&str]) -> Vec<String> {
        let mut splitter = SentenceSplitter::new();
        let mut out = Vec::new();
        for delta in deltas {
            splitter.push(delta, &mut out);
        }
        out.extend(splitter.finish());
        out
    }

    fn sentences(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Feeding the text in every pair of deltas (split at every char
    /// boundary) and char by char gives exactly what feeding it whole gives.
    fn assert_delta_independent(text: &str) {
        let whole = split_whole(text);
        for (at, _) in text.char_indices().skip(1) {
            let (a, b) = text.split_at(at);
            assert_eq!(
                split_deltas(&[a, b]),
                whole,
                "split at byte {at} of {text:?}"
            );
        }
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(split_deltas(&refs), whole, "char by char: {text:?}");
    }

    #[test]
    fn splits_on_terminators_followed_by_whitespace() {
        assert_eq!(
            split_whole("Hello there. How are you? I'm fine! Great…  Bye."),
            sentences(&[
                "Hello there.",
                "How are you?",
                "I'm fine!",
                "Great…",
                "Bye."
            ])
        );
    }

    #[test]
    fn emits_a_sentence_as_soon_as_the_next_sentence_starts() {
        let mut splitter = SentenceSplitter::new();
        let mut out = Vec::new();
        splitter.push("Sure", &mut out);
        splitter.push("!", &mut out);
        assert!(out.is_empty(), "the end is not known before the next char");
        splitter.push(" ", &mut out);
        assert!(out.is_empty(), "a lower-case word may still follow");
        splitter.push("I", &mut out);
        assert_eq!(out, sentences(&["Sure!"]));
        splitter.push(" can help.", &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(splitter.finish().as_deref(), Some("I can help."));
        assert_eq!(splitter.finish(), None, "finish empties the splitter");
    }

    #[test]
    fn a_newline_ends_the_sentence_at_once() {
        let mut splitter = SentenceSplitter::new();
        let mut out = Vec::new();
        splitter.push("Done.\n", &mut out);
        assert_eq!(out, sentences(&["Done."]));
        splitter.push("Options:\n- one;\n- two\n\n\nEnd", &mut out);
        assert_eq!(out, sentences(&["Done.", "Options:", "- one;", "- two"]));
        assert_eq!(splitter.finish().as_deref(), Some("End"));
    }

    #[test]
    fn semicolons_and_colons_end_sentences_only_before_a_newline() {
        assert_eq!(
            split_whole("Two choices: red; blue. Pick one:\nRed"),
            sentences(&["Two choices: red; blue.", "Pick one:", "Red"])
        );
    }

    #[test]
    fn decimals_and_times_do_not_split() {
        assert_eq!(
            split_whole("It costs $4.50 today. We're open 10 a.m. to 4 p.m. on weekdays. Call us."),
            sentences(&[
                "It costs $4.50 today.",
                "We're open 10 a.m. to 4 p.m. on weekdays.",
                "Call us."
            ])
        );
        // "p.m." at the end of a sentence, followed by a capital, does end it.
        assert_eq!(
            split_whole("We close at 5 p.m. Anything else?"),
            sentences(&["We close at 5 p.m.", "Anything else?"])
        );
    }

    #[test]
    fn abbreviations_stay_attached() {
        assert_eq!(
            split_whole(
                "Mr. Smith and Mrs. Jones met Dr. Who on St. Mary's Road. Bring ID, e.g. A passport, i.e. Something official, etc. and so on. Done."
            ),
            sentences(&[
                "Mr. Smith and Mrs. Jones met Dr. Who on St. Mary's Road.",
                "Bring ID, e.g. A passport, i.e. Something official, etc. and so on.",
                "Done."
            ])
        );
        assert_eq!(
            split_whole("Ask J. R. Tolkien. He knows."),
            sentences(&["Ask J. R. Tolkien.", "He knows."])
        );
        assert_eq!(
            split_whole("(Dr. Lee) is in. \"Mr. Hyde\" is out."),
            sentences(&["(Dr. Lee) is in.", "\"Mr. Hyde\" is out."])
        );
    }

    #[test]
    fn ellipses_in_the_middle_do_not_split() {
        assert_eq!(
            split_whole("Well... let me see. Hmm…maybe not. Wait... What?"),
            sentences(&["Well... let me see.", "Hmm…maybe not.", "Wait...", "What?"])
        );
    }

    #[test]
    fn citation_markers_stay_with_their_sentence() {
        assert_eq!(
            split_whole(
                "Refunds take 5 days.[1] Fees apply [2, 3]. See the policy.[4][5] As noted [Smith et al. 2020. Ch. 3] we agree."
            ),
            sentences(&[
                "Refunds take 5 days.[1]",
                "Fees apply [2, 3].",
                "See the policy.[4][5]",
                "As noted [Smith et al. 2020. Ch. 3] we agree."
            ])
        );
    }

    #[test]
    fn closing_quotes_and_brackets_belong_to_the_sentence() {
        assert_eq!(
            split_whole("He said \"Stop.\" Then he left. (It was late.) Really?!\" No."),
            sentences(&[
                "He said \"Stop.\"",
                "Then he left.",
                "(It was late.)",
                "Really?!\"",
                "No."
            ])
        );
    }

    #[test]
    fn list_numbers_do_not_split() {
        assert_eq!(
            split_whole("1. Open the app. 2. Tap Settings.\n3. Done"),
            sentences(&["1. Open the app.", "2. Tap Settings.", "3. Done"])
        );
        // A number ending a sentence does split.
        assert_eq!(
            split_whole("I was born in 1990. Then I moved."),
            sentences(&["I was born in 1990.", "Then I moved."])
        );
    }

    #[test]
    fn lower_case_after_question_keeps_quotes_whole() {
        assert_eq!(
            split_whole("She asked \"why?\" and left. Ok."),
            sentences(&["She asked \"why?\" and left.", "Ok."])
        );
    }

    #[test]
    fn long_text_is_cut_at_a_comma_after_enough_text() {
        let clause = "this clause goes on and on without any end in sight";
        let text = format!("{clause}, {clause}, {clause}, {clause}, {clause} and more");
        let out = split_whole(&text);
        assert!(out.len() >= 2, "{out:?}");
        let first = &out[0];
        assert!(first.ends_with(','), "cut after a comma: {first:?}");
        let n = first.chars().count();
        assert!(
            (MIN_COMMA_CUT_CHARS..=MAX_SENTENCE_CHARS).contains(&n),
            "{n}"
        );
        assert_eq!(out.join(" "), text);
        assert_delta_independent(&text);
    }

    #[test]
    fn long_text_without_commas_is_cut_at_a_space_after_the_limit() {
        let text = "word ".repeat(100);
        let out = split_whole(&text);
        assert!(out.len() >= 2, "{out:?}");
        for piece in &out {
            assert!(piece.chars().count() <= MAX_SENTENCE_CHARS + 5, "{piece:?}");
        }
        assert_eq!(out.join(" "), text.trim());
        assert_delta_independent(&text);
    }

    #[test]
    fn text_without_whitespace_is_cut_hard() {
        let text = "é".repeat(HARD_MAX_SENTENCE_CHARS * 2 + 10);
        let out = split_whole(&text);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].chars().count(), HARD_MAX_SENTENCE_CHARS);
        assert_eq!(out.concat(), text);
    }

    #[test]
    fn an_unclosed_bracket_cannot_hold_text_back_forever() {
        let text = format!("[{}", "note. ".repeat(80));
        let out = split_whole(&text);
        assert!(out.len() >= 2, "{out:?}");
        assert!(out[0].chars().count() <= MAX_SENTENCE_CHARS + 5);
    }

    #[test]
    fn finish_returns_the_rest_trimmed_or_nothing() {
        let mut splitter = SentenceSplitter::new();
        let mut out = Vec::new();
        splitter.push("   \n  ", &mut out);
        assert!(out.is_empty());
        assert_eq!(splitter.finish(), None);
        splitter.push("All set", &mut out);
        assert_eq!(splitter.pending(), "All set");
        assert_eq!(splitter.finish().as_deref(), Some("All set"));
        splitter.push("Done. ", &mut out);
        assert_eq!(splitter.finish().as_deref(), Some("Done."));
        assert!(out.is_empty());
    }

    #[test]
    fn multibyte_text_splits_cleanly() {
        assert_eq!(
            split_whole("Ça coûte 4,50 €. Très bien! Ünïcödé… 日本語。 Ok? Ja."),
            sentences(&[
                "Ça coûte 4,50 €.",
                "Très bien!",
                "Ünïcödé…",
                "日本語。",
                "Ok?",
                "Ja."
            ])
        );
    }

    #[test]
    fn every_pair_of_deltas_gives_the_same_sentences() {
        for text in [
            "Hello there. How are you? I'm fine! Great…  Bye.",
            "It costs $4.50 today. We're open 10 a.m. to 4 p.m. on weekdays. Call us.",
            "We close at 5 p.m. Anything else?",
            "Mr. Smith met Dr. Who, e.g. Today. Ask J. R. Tolkien. He knows.",
            "Well... let me see. Hmm…maybe not. Wait... What?",
            "Refunds take 5 days.[1] Fees apply [2, 3]. See the policy.[4][5] As noted [Smith et al. 2020] we agree.",
            "He said \"Stop.\" Then he left. (It was late.) Really?!\" No.",
            "1. Open the app. 2. Tap Settings.\n3. Done",
            "Options:\n- one;\n- two\n\n\nEnd",
            "Ça coûte 4,50 €. Très bien! Ünïcödé… 日本語。 Ok? Ja.",
            "She asked \"why?\" and left. Ok.",
            "  Leading space.   Trailing space.   ",
            "No punctuation at all",
        ] {
            assert_delta_independent(text);
        }
    }

    #[test]
    fn pseudo_random_deltas_give_the_same_sentences() {
        let text = "Thanks for calling! Your balance is $1,234.56 as of 9 a.m. today. \
                    Dr. Patel's office (St. Luke's) opens at 8 a.m. Would you like \
                    directions?[2] Great… I'll text them, e.g. To this number. Anything \
                    else?\nBye.";
        let whole = split_whole(text);
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let mut seed: u64 = 0x5eed;
        for _ in 0..200 {
            let mut deltas = Vec::new();
            let mut start = 0;
            let mut idx = 0;
            while idx < chars.len() {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                idx += 1 + ((seed >> 33) % 7) as usize;
                let end = chars.get(idx).map_or(text.len(), |&(b, _)| b);
                deltas.push(&text[start..end]);
                start = end;
            }
            assert_eq!(split_deltas(&deltas), whole);
        }
    }
}
