//! Text helpers shared by chunking, the local embedder and the local
//! responder: word terms (lower-cased, stop words dropped, light stemming),
//! sentence splitting and Markdown inline clean-up.

/// English words too common to carry meaning for retrieval.
const STOP_WORDS: &[&str] = &[
    "a", "about", "am", "an", "and", "any", "are", "as", "at", "be", "been", "but", "by", "can",
    "could", "did", "do", "does", "for", "from", "get", "got", "had", "has", "have", "how", "i",
    "if", "in", "into", "is", "it", "its", "just", "let", "like", "me", "my", "need", "of", "on",
    "or", "our", "please", "so", "some", "tell", "than", "that", "the", "their", "them", "then",
    "there", "these", "they", "this", "to", "us", "want", "was", "we", "were", "what", "when",
    "where", "which", "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "im",
    "ive", "id", "youre", "dont", "also", "know", "there's", "thats", "okay", "ok", "um", "uh",
    "hi", "hello", "hey", "thanks", "thank", "yes", "yeah", "no",
];

/// Whether `word` (lower-case, apostrophes removed) is a stop word.
pub fn is_stop_word(word: &str) -> bool {
    STOP_WORDS.contains(&word)
}

/// A light suffix-stripping stemmer: `opening`, `opened`, `opens` → `open`;
/// `hours` → `hour`; `batteries` → `battery`. Good enough to match the
/// inflections callers use against the wording of a knowledge base.
pub fn stem(word: &str) -> String {
    let w = word;
    let n = w.chars().count();
    if n <= 3 || !w.is_ascii() {
        return w.to_owned();
    }
    if let Some(base) = w.strip_suffix("ies").filter(|_| n > 4) {
        return format!("{base}y");
    }
    if let Some(base) = w.strip_suffix("ied").filter(|_| n > 4) {
        return format!("{base}y");
    }
    if let Some(base) = w.strip_suffix("ing").filter(|b| b.len() >= 3) {
        return undouble(base);
    }
    if let Some(base) = w.strip_suffix("ed").filter(|b| b.len() >= 3) {
        return undouble(base);
    }
    if let Some(base) = w.strip_suffix("ly").filter(|b| b.len() >= 4) {
        return base.to_owned();
    }
    for suffix in ["sses", "shes", "ches", "xes", "zes"] {
        if w.ends_with(suffix) {
            return w[..w.len() - 2].to_owned();
        }
    }
    if w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") && !w.ends_with("is") {
        return w[..w.len() - 1].to_owned();
    }
    w.to_owned()
}

/// `stopp` → `stop` (after `stopping`), but `fill` stays.
fn undouble(base: &str) -> String {
    let b = base.as_bytes();
    if b.len() >= 4 {
        let (x, y) = (b[b.len() - 1], b[b.len() - 2]);
        if x == y && !matches!(x, b'l' | b's' | b'z') && x.is_ascii_alphabetic() {
            return base[..base.len() - 1].to_owned();
        }
    }
    base.to_owned()
}

/// The raw lower-case words of `text`: runs of letters and digits;
/// apostrophes inside a word are dropped (`don't` → `dont`).
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for ch in text.chars() {
        if ch.is_alphanumeric() {
            cur.extend(ch.to_lowercase());
        } else if (ch == '\'' || ch == '’') && !cur.is_empty() {
            // Inside a word: skip it.
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The retrieval terms of `text`: words without stop words, stemmed.
pub fn terms(text: &str) -> Vec<String> {
    words(text)
        .into_iter()
        .filter(|w| !is_stop_word(w))
        .map(|w| stem(&w))
        .collect()
}

/// Abbreviations whose period does not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "e.g", "i.e", "mr", "mrs", "ms", "dr", "st", "vs", "no", "approx", "ca", "inc", "ltd", "jr",
    "sr", "mt", "fig",
];

/// Splits prose into sentences at `.`, `!` or `?` followed by white space and
/// an upper-case letter, digit or quote (or the end), skipping common
/// abbreviations. Each sentence is trimmed; empty ones are dropped.
pub fn sentences(text: &str) -> Vec<String> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut i = 0usize;
    while i < chars.len() {
        let (pos, ch) = chars[i];
        if matches!(ch, '.' | '!' | '?') {
            // Swallow closing quotes/brackets and repeated marks.
            let mut j = i + 1;
            while j < chars.len() && matches!(chars[j].1, '.' | '!' | '?' | '"' | '\'' | ')' | '”')
            {
                j += 1;
            }
            let at_end = j >= chars.len();
            let followed_by_space = !at_end && chars[j].1.is_whitespace();
            if at_end || followed_by_space {
                let mut k = j;
                while k < chars.len() && chars[k].1.is_whitespace() {
                    k += 1;
                }
                let next_ok = k >= chars.len() || {
                    let c = chars[k].1;
                    c.is_uppercase() || c.is_ascii_digit() || matches!(c, '"' | '“' | '(' | '\'')
                };
                let word_before = text[start..pos]
                    .rsplit(|c: char| c.is_whitespace())
                    .next()
                    .unwrap_or_default()
                    .to_lowercase();
                let is_abbrev = ch == '.'
                    && (ABBREVIATIONS.contains(&word_before.trim_start_matches('(')))
                    || (ch == '.'
                        && word_before.chars().count() == 1
                        && word_before.chars().all(char::is_alphabetic));
                if next_ok && !is_abbrev {
                    let end = if j < chars.len() {
                        chars[j].0
                    } else {
                        text.len()
                    };
                    push_trimmed(&mut out, &text[start..end]);
                    start = end;
                }
            }
            i = j;
            continue;
        }
        i += 1;
    }
    push_trimmed(&mut out, &text[start..]);
    out
}

fn push_trimmed(out: &mut Vec<String>, s: &str) {
    let t = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if !t.is_empty() {
        out.push(t);
    }
}

/// Inline Markdown to plain text: links and images keep their text,
/// emphasis and code marks go, a list or quote marker at the start goes, and
/// a table row becomes its cells joined by commas (separator rows vanish).
pub fn clean_markdown_line(line: &str) -> String {
    let mut s = line.trim();
    // Block quote markers.
    while let Some(rest) = s.strip_prefix('>') {
        s = rest.trim_start();
    }
    // List markers.
    for marker in ["- [ ] ", "- [x] ", "- ", "* ", "+ "] {
        if let Some(rest) = s.strip_prefix(marker) {
            s = rest;
            break;
        }
    }
    let digits = s.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 && digits <= 3 {
        let rest = &s[digits..];
        if let Some(r) = rest.strip_prefix(". ").or_else(|| rest.strip_prefix(") ")) {
            s = r;
        }
    }
    let mut text = if s.starts_with('|') {
        let cells: Vec<&str> = s
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        if cells
            .iter()
            .all(|c| c.chars().all(|ch| matches!(ch, '-' | ':' | ' ')))
        {
            return String::new();
        }
        cells.join(", ")
    } else {
        s.to_owned()
    };
    text = strip_links(&text);
    for mark in ["**", "__", "`"] {
        text = text.replace(mark, "");
    }
    text.trim().to_owned()
}

/// `[text](url)` → `text`, `![alt](url)` → `alt`.
fn strip_links(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('[') {
        let Some(close_rel) = rest[open..].find("](") else {
            break;
        };
        let close = open + close_rel;
        let Some(end_rel) = rest[close + 2..].find(')') else {
            break;
        };
        let before = &rest[..open];
        out.push_str(before.strip_suffix('!').unwrap_or(before));
        out.push_str(&rest[open + 1..close]);
        rest = &rest[close + 2 + end_rel + 1..];
    }
    out.push_str(rest);
    out
}

/// `text` cut to at most `max` characters at a word boundary, with `…`
/// when cut.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max.saturating_sub(1)).collect();
    let at = cut.rfind(char::is_whitespace).filter(|&i| i > max / 2);
    let mut out = match at {
        Some(i) => cut[..i].trim_end().to_owned(),
        None => cut,
    };
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_inflections_together() {
        for (a, b) in [
            ("opening", "open"),
            ("opened", "open"),
            ("opens", "open"),
            ("hours", "hour"),
            ("batteries", "battery"),
            ("stopping", "stop"),
            ("repairs", "repair"),
            ("boxes", "box"),
            ("bus", "bus"),
            ("glass", "glass"),
        ] {
            assert_eq!(stem(a), b, "{a}");
        }
    }

    #[test]
    fn terms_drop_stop_words() {
        assert_eq!(
            terms("What are your opening hours on Saturday?"),
            ["open", "hour", "saturday"]
        );
        assert_eq!(terms("Don't worry"), ["worry"]);
    }

    #[test]
    fn sentence_split() {
        let s = sentences(
            "We are open from 9 a.m. to 5 p.m. daily. Call us, e.g. on Monday! Is it 3.5 km? Yes.",
        );
        assert_eq!(
            s,
            [
                "We are open from 9 a.m. to 5 p.m. daily.",
                "Call us, e.g. on Monday!",
                "Is it 3.5 km?",
                "Yes."
            ]
        );
        assert_eq!(sentences("no terminator"), ["no terminator"]);
        assert!(sentences("   ").is_empty());
    }

    #[test]
    fn markdown_cleanup() {
        assert_eq!(
            clean_markdown_line("- **Bold** and [a link](http://x) `code`"),
            "Bold and a link code"
        );
        assert_eq!(clean_markdown_line("| Day | Hours |"), "Day, Hours");
        assert_eq!(clean_markdown_line("|---|:---:|"), "");
        assert_eq!(clean_markdown_line("> 1. quoted item"), "quoted item");
    }

    #[test]
    fn shorten_at_word_boundary() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("one two three four five", 12), "one two…");
    }
}
