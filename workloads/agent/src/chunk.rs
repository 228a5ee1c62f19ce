//! Splitting a document into retrieval chunks.
//!
//! Markdown is cut along its headings first (each chunk keeps its heading
//! path, e.g. `Returns > Refunds`, as title context), then every section's
//! prose is packed sentence by sentence into chunks of about
//! [`ChunkOptions::target_chars`], repeating the last
//! [`ChunkOptions::overlap_sentences`] of a chunk at the start of the next
//! when a section is split. Plain text is packed the same way, with
//! paragraphs as the units that are kept together when they fit.

use voice_agent_proto::DocumentFormat;

use crate::text::{clean_markdown_line, sentences};

/// How large chunks are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOptions {
    /// Characters a chunk grows to before a new one starts.
    pub target_chars: usize,
    /// Hard limit: a longer sentence is cut at word boundaries.
    pub max_chars: usize,
    /// Sentences repeated from the end of a chunk at the start of the next
    /// one when a section is split.
    pub overlap_sentences: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        ChunkOptions {
            target_chars: 600,
            max_chars: 1_000,
            overlap_sentences: 1,
        }
    }
}

/// One chunk of a document, before embedding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkDraft {
    /// Position in the document, from 0.
    pub seq: u32,
    /// Heading path, outermost first, joined with ` > ` (empty for text or
    /// text before the first heading).
    pub section: String,
    /// The chunk's plain text, sentences joined by single spaces.
    pub text: String,
}

/// A section: its heading path and its prose units (paragraphs or list
/// items), each already split into sentences.
struct Section {
    path: Vec<String>,
    units: Vec<Vec<String>>,
}

/// Splits `content` into chunks; an empty result means there is no text to
/// index (e.g. only headings).
pub fn chunk(content: &str, format: DocumentFormat, options: ChunkOptions) -> Vec<ChunkDraft> {
    let sections = match format {
        DocumentFormat::Markdown => markdown_sections(content),
        DocumentFormat::Text => vec![Section {
            path: Vec::new(),
            units: paragraphs(content.lines(), false),
        }],
    };
    let mut out = Vec::new();
    for section in sections {
        pack(&section, options, &mut out);
    }
    out
}

/// The first Markdown heading's text, for a default title.
pub fn first_heading(content: &str) -> Option<String> {
    content.lines().find_map(|l| heading(l).map(|(_, t)| t))
}

/// `(level, text)` of an ATX heading line (`## Text ##`).
fn heading(line: &str) -> Option<(usize, String)> {
    let t = line.trim_start();
    if line.len() - t.len() > 3 {
        return None;
    }
    let level = t.chars().take_while(|&c| c == '#').count();
    if level == 0 || level > 6 {
        return None;
    }
    let rest = &t[level..];
    if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
        return None;
    }
    let text = clean_markdown_line(rest.trim().trim_end_matches('#').trim());
    (!text.is_empty()).then_some((level, text))
}

fn markdown_sections(content: &str) -> Vec<Section> {
    let mut sections = Vec::new();
    // (level, text) of the open headings.
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut body: Vec<&str> = Vec::new();
    let mut fence: Option<&str> = None;
    let flush = |stack: &[(usize, String)], body: &mut Vec<&str>, out: &mut Vec<Section>| {
        let units = paragraphs(body.drain(..), true);
        if !units.is_empty() {
            out.push(Section {
                path: stack.iter().map(|(_, t)| t.clone()).collect(),
                units,
            });
        }
    };
    for line in content.lines() {
        let trimmed = line.trim_start();
        if let Some(open) = fence {
            if trimmed.starts_with(open) {
                fence = None;
            }
            body.push(line);
            continue;
        }
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fence = Some(&trimmed[..3]);
            body.push(line);
            continue;
        }
        if let Some((level, text)) = heading(line) {
            flush(&stack, &mut body, &mut sections);
            while stack.last().is_some_and(|(l, _)| *l >= level) {
                stack.pop();
            }
            stack.push((level, text));
            continue;
        }
        body.push(line);
    }
    flush(&stack, &mut body, &mut sections);
    sections
}

/// Groups lines into units (paragraphs; in Markdown every list item or
/// table row is a unit too) and splits each into sentences.
fn paragraphs<'a>(lines: impl Iterator<Item = &'a str>, markdown: bool) -> Vec<Vec<String>> {
    let mut units = Vec::new();
    let mut cur = String::new();
    let end = |cur: &mut String, units: &mut Vec<Vec<String>>| {
        let s = sentences(cur);
        if !s.is_empty() {
            units.push(s);
        }
        cur.clear();
    };
    for line in lines {
        let raw = line.trim();
        if raw.is_empty() {
            end(&mut cur, &mut units);
            continue;
        }
        if markdown {
            if raw.starts_with("```") || raw.starts_with("~~~") {
                continue;
            }
            let item = raw.starts_with("- ")
                || raw.starts_with("* ")
                || raw.starts_with("+ ")
                || raw.starts_with('|')
                || raw.split_once(". ").is_some_and(|(n, _)| {
                    !n.is_empty() && n.len() <= 3 && n.chars().all(|c| c.is_ascii_digit())
                });
            let text = clean_markdown_line(raw);
            if item {
                end(&mut cur, &mut units);
                if !text.is_empty() {
                    // A list item is a sentence of its own; give it an end
                    // so it is not merged with the next one.
                    cur.push_str(&text);
                    if !text.ends_with(['.', '!', '?', ':', ';']) {
                        cur.push('.');
                    }
                    end(&mut cur, &mut units);
                }
                continue;
            }
            if text.is_empty() {
                continue;
            }
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(&text);
        } else {
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(raw);
        }
    }
    end(&mut cur, &mut units);
    units
}

/// Packs one section's sentences into chunks.
fn pack(section: &Section, options: ChunkOptions, out: &mut Vec<ChunkDraft>) {
    let section_name = section.path.join(" > ");
    let mut cur: Vec<String> = Vec::new();
    let mut cur_len = 0usize;
    let emit = |cur: &mut Vec<String>, out: &mut Vec<ChunkDraft>| {
        if cur.is_empty() {
            return;
        }
        let seq = u32::try_from(out.len()).unwrap_or(u32::MAX);
        out.push(ChunkDraft {
            seq,
            section: section_name.clone(),
            text: cur.join(" "),
        });
    };
    for unit in &section.units {
        let unit_len: usize = unit.iter().map(|s| s.chars().count() + 1).sum();
        // A whole unit that fits is kept with what came before.
        if !cur.is_empty() && cur_len + unit_len > options.target_chars {
            emit(&mut cur, out);
            cur.clear();
            cur_len = 0;
        }
        for sentence in unit.iter().flat_map(|s| split_long(s, options.max_chars)) {
            let len = sentence.chars().count() + 1;
            if !cur.is_empty() && cur_len + len > options.target_chars {
                emit(&mut cur, out);
                // Carry the overlap inside a unit that is being split.
                let keep = options.overlap_sentences.min(cur.len());
                let tail: Vec<String> = cur.split_off(cur.len() - keep);
                cur = tail
                    .into_iter()
                    .filter(|s| s.chars().count() + len <= options.target_chars)
                    .collect();
                cur_len = cur.iter().map(|s| s.chars().count() + 1).sum();
            }
            cur_len += len;
            cur.push(sentence);
        }
    }
    emit(&mut cur, out);
}

/// A sentence longer than `max` characters, cut at word boundaries.
fn split_long(sentence: &str, max: usize) -> Vec<String> {
    if sentence.chars().count() <= max {
        return vec![sentence.to_owned()];
    }
    let mut parts = Vec::new();
    let mut cur = String::new();
    for word in sentence.split_whitespace() {
        let mut word = word.to_owned();
        // A single "word" longer than max (e.g. base64) is cut too.
        while word.chars().count() > max {
            let head: String = word.chars().take(max).collect();
            word = word.chars().skip(max).collect();
            if !cur.is_empty() {
                parts.push(std::mem::take(&mut cur));
            }
            parts.push(head);
        }
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > max {
            parts.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(&word);
    }
    if !cur.is_empty() {
        parts.push(cur);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FAQ_MARKDOWN;

    #[test]
    fn markdown_by_headings_keeps_the_path() {
        let chunks = chunk(
            FAQ_MARKDOWN,
            DocumentFormat::Markdown,
            ChunkOptions::default(),
        );
        let sections: Vec<&str> = chunks.iter().map(|c| c.section.as_str()).collect();
        assert_eq!(
            sections,
            [
                "Acme Bikes FAQ > Opening hours",
                "Acme Bikes FAQ > Location",
                "Acme Bikes FAQ > Returns and refunds",
                "Acme Bikes FAQ > Repairs"
            ]
        );
        assert!(chunks[0].text.starts_with("We are open Monday to Friday"));
        assert_eq!(
            chunks.iter().map(|c| c.seq).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_eq!(
            first_heading(FAQ_MARKDOWN).as_deref(),
            Some("Acme Bikes FAQ")
        );
    }

    #[test]
    fn nested_headings_pop_correctly_and_code_fences_are_not_headings() {
        let md = "# A\n\n## B\n\ntext b.\n\n### C\n\ntext c.\n\n## D\n\n```\n# not a heading\n```\ntext d.\n";
        let chunks = chunk(md, DocumentFormat::Markdown, ChunkOptions::default());
        let sections: Vec<&str> = chunks.iter().map(|c| c.section.as_str()).collect();
        assert_eq!(sections, ["A > B", "A > B > C", "A > D"]);
        assert!(
            chunks[2].text.contains("# not a heading"),
            "{:?}",
            chunks[2]
        );
    }

    #[test]
    fn long_sections_split_with_overlap() {
        let body: String = (0..40)
            .map(|i| format!("Sentence number {i} talks about bikes and more bikes."))
            .collect::<Vec<_>>()
            .join(" ");
        let md = format!("# Long\n\n{body}\n");
        let options = ChunkOptions {
            target_chars: 200,
            max_chars: 300,
            overlap_sentences: 1,
        };
        let chunks = chunk(&md, DocumentFormat::Markdown, options);
        assert!(chunks.len() > 5, "{}", chunks.len());
        for pair in chunks.windows(2) {
            let last_of_first = sentences(&pair[0].text).pop().expect("sentence");
            assert!(
                pair[1].text.starts_with(&last_of_first),
                "no overlap between {:?} and {:?}",
                pair[0].text,
                pair[1].text
            );
        }
        for c in &chunks {
            assert!(c.text.chars().count() <= 300);
        }
    }

    #[test]
    fn text_paragraphs_and_lists() {
        let text = "First paragraph. Two sentences.\n\nSecond paragraph.";
        let chunks = chunk(text, DocumentFormat::Text, ChunkOptions::default());
        assert_eq!(chunks.len(), 1);
        assert_eq!(
            chunks[0].text,
            "First paragraph. Two sentences. Second paragraph."
        );
        assert_eq!(chunks[0].section, "");
        let md = "# Prices\n\n- Tune-up: 49 dollars\n- Flat tyre: 15 dollars\n";
        let chunks = chunk(md, DocumentFormat::Markdown, ChunkOptions::default());
        assert_eq!(
            chunks[0].text,
            "Tune-up: 49 dollars. Flat tyre: 15 dollars."
        );
    }

    #[test]
    fn headings_only_yield_nothing_and_giant_words_are_cut() {
        assert!(
            chunk(
                "# A\n## B\n",
                DocumentFormat::Markdown,
                ChunkOptions::default()
            )
            .is_empty()
        );
        let giant = "x".repeat(2_500);
        let chunks = chunk(&giant, DocumentFormat::Text, ChunkOptions::default());
        assert!(chunks.iter().all(|c| c.text.chars().count() <= 1_000));
        assert_eq!(chunks.iter().map(|c| c.text.len()).sum::<usize>(), 2_500);
    }
}
