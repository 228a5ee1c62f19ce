//! Text normalization shared by the language model builder and the WER
//! measurement: lower case, words of letters, digits and apostrophes, numbers
//! spelled out the way a caller says them ("49" → "forty nine").

/// Splits `text` into sentences of normalized words. Sentences end at `.`,
/// `?`, `!`, `;`, `:` and line breaks; words are lower-cased, hyphenated
/// words are split ("tune-up" → "tune up"), numbers are spelled out.
pub fn sentences(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut word = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let next_is_digit = chars.peek().is_some_and(char::is_ascii_digit);
        if c.is_alphanumeric() || (c == '\'' && !word.is_empty()) {
            word.extend(c.to_lowercase());
            continue;
        }
        // Keep "1,000" and "4.50" together as one number token.
        if (c == ',' || c == '.')
            && next_is_digit
            && !word.is_empty()
            && word.chars().all(|d| d.is_ascii_digit())
        {
            word.push(c);
            continue;
        }
        flush_word(&mut word, &mut current);
        if matches!(c, '.' | '?' | '!' | ';' | ':' | '\n') && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    flush_word(&mut word, &mut current);
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// All normalized words of `text`, sentence boundaries ignored.
pub fn words(text: &str) -> Vec<String> {
    sentences(text).into_iter().flatten().collect()
}

fn flush_word(word: &mut String, out: &mut Vec<String>) {
    if word.is_empty() {
        return;
    }
    let w = std::mem::take(word);
    let w = w.trim_matches('\'');
    if w.is_empty() {
        return;
    }
    if w.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        spell_number_token(w, out);
    } else {
        out.push(w.to_owned());
    }
}

/// "49" → forty nine; "4.50" → four fifty; "1,000" → one thousand;
/// "30th" → thirtieth; "24/7"-style leftovers are spelled digit by digit.
fn spell_number_token(token: &str, out: &mut Vec<String>) {
    let digits_end = token
        .find(|c: char| !(c.is_ascii_digit() || c == ','))
        .unwrap_or(token.len());
    let (number, rest) = token.split_at(digits_end);
    let plain: String = number.chars().filter(char::is_ascii_digit).collect();
    let Ok(value) = plain.parse::<u64>() else {
        out.extend(plain.chars().filter_map(digit_word).map(str::to_owned));
        return;
    };
    match rest {
        "st" | "nd" | "rd" | "th" => {
            let mut spelled = Vec::new();
            spell_number(value, &mut spelled);
            if let Some(last) = spelled.pop() {
                spelled.push(ordinal(&last));
            }
            out.extend(spelled);
        }
        _ if rest.starts_with('.') => {
            // A decimal: "4.50" is said "four fifty", "2.5" "two point five".
            spell_number(value, out);
            let frac = &rest[1..];
            let frac_digits: String = frac.chars().take_while(char::is_ascii_digit).collect();
            if frac_digits.len() == 2 {
                if let Ok(cents) = frac_digits.parse::<u64>()
                    && cents > 0
                {
                    spell_number(cents, out);
                }
            } else if !frac_digits.is_empty() {
                out.push("point".to_owned());
                out.extend(
                    frac_digits
                        .chars()
                        .filter_map(digit_word)
                        .map(str::to_owned),
                );
            }
        }
        _ => {
            spell_number(value, out);
            // "9am", "5pm", "10k": the letters are a word of their own.
            let letters: String = rest.chars().filter(|c| c.is_alphabetic()).collect();
            if !letters.is_empty() {
                out.push(letters);
            }
        }
    }
}

fn digit_word(c: char) -> Option<&'static str> {
    c.to_digit(10).map(|d| ONES[d as usize])
}

const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

/// Spells a whole number the way it is read aloud ("one hundred twenty";
/// years like 1999 are read as "nineteen ninety nine").
pub fn spell_number(n: u64, out: &mut Vec<String>) {
    if (1100..10_000).contains(&n) && !n.is_multiple_of(100) && !(2000..2010).contains(&n) {
        // Years and street numbers: "nineteen ninety nine", "twenty twenty four".
        below_hundred(n / 100, out);
        if n % 100 < 10 {
            out.push("oh".to_owned());
        }
        below_hundred(n % 100, out);
        return;
    }
    if n == 0 {
        out.push("zero".to_owned());
        return;
    }
    const SCALES: [(u64, &str); 4] = [
        (1_000_000_000_000, "trillion"),
        (1_000_000_000, "billion"),
        (1_000_000, "million"),
        (1_000, "thousand"),
    ];
    let mut n = n;
    for (scale, name) in SCALES {
        if n >= scale {
            below_thousand(n / scale, out);
            out.push(name.to_owned());
            n %= scale;
        }
    }
    if n > 0 {
        below_thousand(n, out);
    }
}

fn below_thousand(n: u64, out: &mut Vec<String>) {
    if n >= 100 {
        below_hundred(n / 100, out);
        out.push("hundred".to_owned());
    }
    if !n.is_multiple_of(100) {
        below_hundred(n % 100, out);
    }
}

fn below_hundred(n: u64, out: &mut Vec<String>) {
    let n = (n % 100) as usize;
    if n < 20 {
        out.push(ONES[n].to_owned());
    } else {
        out.push(TENS[n / 10].to_owned());
        if !n.is_multiple_of(10) {
            out.push(ONES[n % 10].to_owned());
        }
    }
}

fn ordinal(word: &str) -> String {
    match word {
        "one" => "first".to_owned(),
        "two" => "second".to_owned(),
        "three" => "third".to_owned(),
        "five" => "fifth".to_owned(),
        "eight" => "eighth".to_owned(),
        "nine" => "ninth".to_owned(),
        "twelve" => "twelfth".to_owned(),
        w if w.ends_with('y') => format!("{}ieth", &w[..w.len() - 1]),
        w => format!("{w}th"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(text: &str) -> Vec<String> {
        sentences(text).into_iter().map(|s| s.join(" ")).collect()
    }

    #[test]
    fn sentences_and_words() {
        assert_eq!(
            joined("Harbor Bikes is at 12 Pier Road. Open? Yes!\nA tune-up costs 49 dollars"),
            vec![
                "harbor bikes is at twelve pier road",
                "open",
                "yes",
                "a tune up costs forty nine dollars"
            ]
        );
        assert_eq!(words("Don't 'quote' me"), vec!["don't", "quote", "me"]);
    }

    #[test]
    fn numbers() {
        assert_eq!(joined("9 am to 6pm"), vec!["nine am to six pm"]);
        assert_eq!(joined("120 dollars"), vec!["one hundred twenty dollars"]);
        assert_eq!(joined("1,000 or 4.50"), vec!["one thousand or four fifty"]);
        assert_eq!(joined("the 30th and 1st"), vec!["the thirtieth and first"]);
        assert_eq!(
            joined("in 1999 and 2005"),
            vec!["in nineteen ninety nine and two thousand five"]
        );
        assert_eq!(joined("2.5 km"), vec!["two point five km"]);
        assert_eq!(joined("0"), vec!["zero"]);
        assert_eq!(
            joined("99999999999999999999999"),
            vec![
                "nine nine nine nine nine nine nine nine nine nine nine nine nine nine nine nine nine nine nine nine nine nine nine"
            ]
        );
    }
}
