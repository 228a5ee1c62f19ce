//! The `local` responder: deterministic and retrieval-grounded. It answers
//! with the most relevant sentences of the retrieved chunks, verbatim, and
//! never says anything that is not in the knowledge base, apart from a few
//! fixed phrases: greetings, thanks, goodbyes, and an honest "I don't know"
//! when nothing relevant was retrieved. Replies are one to three sentences,
//! as suits a phone call.

use std::collections::HashSet;

use futures::StreamExt;
use voice_agent_api::voiceagent::Persona;

use super::{Llm, LlmEvent, LlmRequest, LlmStream};
use crate::text::{sentences, terms, words};

/// Most knowledge sentences in one reply.
const MAX_SENTENCES: usize = 2;
/// Most characters of knowledge in one reply (voice: short).
const MAX_CHARS: usize = 320;

/// What the responder says when the knowledge base has nothing relevant.
pub const DONT_KNOW: &str =
    "I'm sorry, I don't have information about that. Is there anything else I can help with?";
/// What it says to an utterance without a question in it.
pub const NOT_UNDERSTOOD: &str =
    "Sorry, I didn't catch a question there. What can I help you with?";
/// Reply to a greeting.
pub const HELLO: &str = "Hello! How can I help you today?";
/// Reply to thanks.
pub const WELCOME: &str = "You're welcome! Is there anything else I can help with?";
/// Reply to a goodbye when the persona has no goodbye phrase.
pub const GOODBYE: &str = "Thanks for calling. Goodbye!";

/// The built-in retrieval-grounded responder.
#[derive(Debug, Clone)]
pub struct LocalResponder {
    goodbye: String,
}

/// Small talk the responder recognizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SmallTalk {
    Greeting,
    Thanks,
    Goodbye,
}

const GREETING_WORDS: &[&str] = &[
    "hi",
    "hello",
    "hey",
    "hiya",
    "howdy",
    "morning",
    "afternoon",
    "evening",
    "greetings",
];
const THANKS_WORDS: &[&str] = &["thanks", "thank", "thx", "cheers", "appreciate"];
const GOODBYE_WORDS: &[&str] = &["bye", "goodbye", "farewell"];
/// Words that may surround small talk without making it a question.
const FILLER_WORDS: &[&str] = &[
    "good", "there", "you", "so", "much", "very", "a", "lot", "it", "that", "this", "ok", "okay",
    "alright", "great", "perfect", "awesome", "nice", "and", "oh", "well", "um", "uh", "yes",
    "yeah", "no", "nope", "all", "thats", "that's", "is", "for", "your", "help", "helps",
    "helpful", "have", "day", "see", "later", "ya", "take", "care", "then", "now", "i", "im",
    "done", "nothing", "else", "really", "again", "everyone", "folks", "sir", "madam", "to", "the",
    "hello", "was", "just", "wanted", "say", "bye",
];

/// Recognizes an utterance that is only small talk.
fn small_talk(utterance: &str) -> Option<SmallTalk> {
    let ws = words(utterance);
    if ws.is_empty() {
        return None;
    }
    let has = |set: &[&str]| ws.iter().any(|w| set.contains(&w.as_str()));
    let phrase = |p: &str| utterance.to_lowercase().contains(p);
    let goodbye = has(GOODBYE_WORDS)
        || phrase("that's all")
        || phrase("thats all")
        || phrase("nothing else")
        || phrase("see you");
    let thanks = has(THANKS_WORDS);
    let greeting = has(GREETING_WORDS);
    let only_small_talk = ws.iter().all(|w| {
        GREETING_WORDS.contains(&w.as_str())
            || THANKS_WORDS.contains(&w.as_str())
            || GOODBYE_WORDS.contains(&w.as_str())
            || FILLER_WORDS.contains(&w.as_str())
    });
    if !only_small_talk {
        return None;
    }
    if goodbye {
        Some(SmallTalk::Goodbye)
    } else if thanks {
        Some(SmallTalk::Thanks)
    } else if greeting {
        Some(SmallTalk::Greeting)
    } else {
        None
    }
}

/// A candidate sentence of the reply.
#[derive(Debug)]
struct Candidate {
    score: f32,
    /// Rank of the hit, then position in the chunk: document order.
    hit: usize,
    pos: usize,
    text: String,
}

impl LocalResponder {
    /// A responder speaking for `persona` (its goodbye phrase is used).
    pub fn new(persona: &Persona) -> Self {
        LocalResponder {
            goodbye: persona
                .goodbye
                .clone()
                .filter(|g| !g.trim().is_empty())
                .unwrap_or_else(|| GOODBYE.to_owned()),
        }
    }

    /// The reply as sentences, and the ids of the chunks it quotes.
    pub fn reply(&self, request: &LlmRequest) -> (Vec<String>, Vec<String>) {
        match small_talk(&request.utterance) {
            Some(SmallTalk::Greeting) => return (vec![HELLO.to_owned()], Vec::new()),
            Some(SmallTalk::Thanks) => return (vec![WELCOME.to_owned()], Vec::new()),
            Some(SmallTalk::Goodbye) => return (vec![self.goodbye.clone()], Vec::new()),
            None => {}
        }
        let query: HashSet<String> = terms(&request.utterance).into_iter().collect();
        if query.is_empty() {
            return (vec![NOT_UNDERSTOOD.to_owned()], Vec::new());
        }
        let mut candidates = Vec::new();
        for (rank, hit) in request.context.iter().enumerate() {
            let heading: HashSet<String> =
                terms(&format!("{} {}", hit.chunk.title, hit.chunk.section))
                    .into_iter()
                    .collect();
            let heading_overlap = query.intersection(&heading).count();
            for (pos, sentence) in sentences(&hit.chunk.text).into_iter().enumerate() {
                let own: HashSet<String> = terms(&sentence).into_iter().collect();
                let overlap = query.intersection(&own).count();
                // Grounding: a sentence is only used when it, or the heading
                // it sits under, shares a word with the question.
                if overlap + heading_overlap == 0 || overlap == 0 && pos > 1 {
                    continue;
                }
                let score =
                    overlap as f32 + 0.5 * heading_overlap as f32 + hit.score - 0.01 * pos as f32;
                candidates.push(Candidate {
                    score,
                    hit: rank,
                    pos,
                    text: sentence,
                });
            }
        }
        candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
        let Some(best) = candidates.first() else {
            return (vec![DONT_KNOW.to_owned()], Vec::new());
        };
        let floor = best.score * 0.75;
        let mut chosen: Vec<&Candidate> = Vec::new();
        let mut chars = 0;
        for c in &candidates {
            if chosen.len() == MAX_SENTENCES || c.score < floor {
                break;
            }
            let len = c.text.chars().count();
            if !chosen.is_empty() && chars + len > MAX_CHARS {
                continue;
            }
            if chosen.iter().any(|o| o.text == c.text) {
                continue;
            }
            chars += len;
            chosen.push(c);
        }
        chosen.sort_by_key(|c| (c.hit, c.pos));
        let mut sources: Vec<String> = Vec::new();
        for c in &chosen {
            let id = &request.context[c.hit].chunk.id;
            if !sources.contains(id) {
                sources.push(id.clone());
            }
        }
        (chosen.iter().map(|c| c.text.clone()).collect(), sources)
    }
}

impl Llm for LocalResponder {
    fn name(&self) -> &'static str {
        "local"
    }

    fn stream(&self, request: LlmRequest) -> LlmStream {
        let (sentences, sources) = self.reply(&request);
        let mut events = vec![Ok(LlmEvent::Sources(sources))];
        for (i, s) in sentences.into_iter().enumerate() {
            let text = if i == 0 { s } else { format!(" {s}") };
            events.push(Ok(LlmEvent::Delta(text)));
        }
        futures::stream::iter(events).boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::testing::component_config;
    use crate::vector::{ChunkMeta, Hit};

    fn hit(id: &str, section: &str, text: &str, score: f32) -> Hit {
        Hit {
            chunk: Arc::new(ChunkMeta {
                id: id.into(),
                document_id: "faq".into(),
                title: "Acme Bikes FAQ".into(),
                section: section.into(),
                text: text.into(),
            }),
            score,
        }
    }

    fn ask(utterance: &str, context: Vec<Hit>) -> (String, Vec<String>) {
        let r = LocalResponder::new(&component_config().persona);
        let (s, ids) = r.reply(&LlmRequest {
            utterance: utterance.into(),
            history: Vec::new(),
            context,
        });
        (s.join(" "), ids)
    }

    const HOURS: &str = "We are open Monday to Friday from 9 am to 6 pm. On Saturdays we open from 10 am to 4 pm. We are closed on Sundays and public holidays.";

    #[test]
    fn answers_from_the_best_sentences_with_sources() {
        let (reply, ids) = ask(
            "When are you open on Saturdays?",
            vec![hit("faq#0", "Opening hours", HOURS, 0.4)],
        );
        assert_eq!(reply, "On Saturdays we open from 10 am to 4 pm.");
        assert_eq!(ids, ["faq#0"]);
        let (reply, _) = ask(
            "What are your opening hours?",
            vec![hit("faq#0", "Opening hours", HOURS, 0.4)],
        );
        assert_eq!(
            reply,
            "We are open Monday to Friday from 9 am to 6 pm. On Saturdays we open from 10 am to 4 pm."
        );
    }

    #[test]
    fn small_talk_and_honest_unknowns() {
        assert_eq!(ask("Hello there!", vec![]).0, HELLO);
        assert_eq!(ask("hi", vec![]).0, HELLO);
        assert_eq!(ask("Thank you so much", vec![]).0, WELCOME);
        assert_eq!(
            ask("Okay, that's all, bye", vec![]).0,
            "Thanks for calling Acme Bikes. Goodbye!"
        );
        assert_eq!(ask("What is the meaning of life?", vec![]).0, DONT_KNOW);
        assert_eq!(ask("um", vec![]).0, NOT_UNDERSTOOD);
        // Retrieved, but nothing in it matches a word of the question.
        let (reply, ids) = ask(
            "Do you sell skateboards?",
            vec![hit("faq#0", "Opening hours", HOURS, 0.15)],
        );
        assert_eq!(reply, DONT_KNOW);
        assert!(ids.is_empty());
        // A greeting with a question is a question.
        let (reply, _) = ask(
            "Hi, are you open on Saturdays?",
            vec![hit("faq#0", "Opening hours", HOURS, 0.4)],
        );
        assert_eq!(reply, "On Saturdays we open from 10 am to 4 pm.");
    }

    #[tokio::test]
    async fn streams_sources_then_sentences() {
        let r = LocalResponder::new(&component_config().persona);
        let events: Vec<_> = r
            .stream(LlmRequest {
                utterance: "What are your opening hours?".into(),
                history: Vec::new(),
                context: vec![hit("faq#0", "Opening hours", HOURS, 0.4)],
            })
            .collect()
            .await;
        let events: Vec<LlmEvent> = events.into_iter().map(|e| e.expect("ok")).collect();
        assert_eq!(events[0], LlmEvent::Sources(vec!["faq#0".into()]));
        assert_eq!(
            events[1],
            LlmEvent::Delta("We are open Monday to Friday from 9 am to 6 pm.".into())
        );
        assert_eq!(
            events[2],
            LlmEvent::Delta(" On Saturdays we open from 10 am to 4 pm.".into())
        );
    }
}
