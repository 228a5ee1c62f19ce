//! The pronunciation dictionary (CMUdict format: `word PH O NES`, alternates
//! as `word(2) ...`).

use std::collections::HashMap;
use std::path::Path;

use crate::SphinxError;

/// A loaded pronunciation dictionary.
#[derive(Debug, Clone, Default)]
pub struct Dictionary {
    /// Base word → its dictionary lines (all pronunciations), in file order.
    entries: HashMap<String, Vec<String>>,
}

impl Dictionary {
    /// Reads a dictionary file.
    pub fn load(path: &Path) -> Result<Self, SphinxError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            SphinxError::Model(format!(
                "cannot read dictionary {}: {e}; install it with `{}`",
                path.display(),
                crate::INSTALL_HINT
            ))
        })?;
        Ok(Self::parse(&text))
    }

    /// Parses dictionary text; malformed lines (no pronunciation) are
    /// skipped.
    pub fn parse(text: &str) -> Self {
        let mut entries: HashMap<String, Vec<String>> = HashMap::new();
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let (Some(word), Some(_)) = (parts.next(), parts.clone().next()) else {
                continue;
            };
            let base = word.split_once('(').map_or(word, |(b, _)| b);
            let phones: Vec<&str> = parts.collect();
            entries
                .entry(base.to_lowercase())
                .or_default()
                .push(format!("{word} {}", phones.join(" ")));
        }
        Self { entries }
    }

    /// Whether `word` (lower case) has a pronunciation.
    pub fn contains(&self, word: &str) -> bool {
        self.entries.contains_key(word)
    }

    /// Number of distinct words.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the dictionary is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A dictionary file's text holding only `words` (those that have a
    /// pronunciation). A decoder whose language model only knows these words
    /// needs no others, and a small dictionary loads in a fraction of the time
    /// of the full 134,000-word one.
    pub fn subset<'a>(&self, words: impl IntoIterator<Item = &'a str>) -> String {
        let mut words: Vec<&str> = words.into_iter().collect();
        words.sort_unstable();
        words.dedup();
        let mut out = String::new();
        for w in words {
            for line in self.entries.get(w).into_iter().flatten() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_subset() {
        let d =
            Dictionary::parse("hello HH AH L OW\nhello(2) HH EH L OW\nworld W ER L D\nbroken\n");
        assert_eq!(d.len(), 2);
        assert!(d.contains("hello") && d.contains("world") && !d.contains("broken"));
        assert_eq!(
            d.subset(["hello", "nope"]),
            "hello HH AH L OW\nhello(2) HH EH L OW\n"
        );
    }
}
