//! The built-in word filter's list: parsed from a file, matched with one Aho-Corasick automaton
//! over a normalized copy of the text, and a verdict per message (PROTOCOL.md 15.8).
//!
//! **Normalization**, the same for the list and the text, one character at a time: compatibility
//! decomposition (NFKD: full-width and other presentation forms, ligatures, ...), combining
//! marks dropped (accents: `é` is `e`), lower case, zero-width and other invisible characters
//! dropped (so `s\u{200B}pam` is `spam`), and each run of white space one space. A match of an entry that begins (or ends)
//! with a letter or digit of a script written with spaces must not have one right before (or
//! after) it, so `ass` does not match in `class`; scripts written without spaces (Chinese,
//! Japanese, Thai, ...) match anywhere.
//!
//! **File format**: UTF-8, one word or phrase per line; `#` starts a comment line; blank lines
//! are skipped; `[reject]` and `[mask]` start the list of entries with that action (before any
//! header: `[reject]`). An entry in both lists rejects.

use std::collections::BTreeSet;
use std::fmt;

use aho_corasick::{AhoCorasick, MatchKind};
use unicode_normalization::char::{decompose_compatible, is_combining_mark};

/// Longest entry, in characters.
pub const MAX_ENTRY_CHARS: usize = 200;
/// Most entries in one file.
pub const MAX_ENTRIES: usize = 200_000;
/// Largest file.
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;

/// What a list does to a message with one of its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// The message is refused (CONTENT_REJECTED) and nothing is stored.
    Reject,
    /// Each character of the match is replaced with `*` and the message is stored so.
    Mask,
}

/// What the filter says of one text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Reject,
    /// The text with every masked match replaced with `*`, one per character.
    Mask(String),
}

/// A word list, ready to match.
pub struct WordList {
    matcher: Option<AhoCorasick>,
    /// Per pattern: its action and whether its first and last characters need a boundary.
    patterns: Vec<Pattern>,
    pub rejects: usize,
    pub masks: usize,
}

#[derive(Debug, Clone, Copy)]
struct Pattern {
    action: Action,
    bound_start: bool,
    bound_end: bool,
}

/// A line of a word list that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

impl std::error::Error for ListError {}

impl fmt::Debug for WordList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WordList({} reject, {} mask)", self.rejects, self.masks)
    }
}

impl WordList {
    /// No entries: every text passes.
    pub fn empty() -> WordList {
        WordList {
            matcher: None,
            patterns: Vec::new(),
            rejects: 0,
            masks: 0,
        }
    }

    /// Parses a word list file's text.
    pub fn parse(text: &str) -> Result<WordList, ListError> {
        let err = |line: usize, message: String| Err(ListError { line, message });
        if text.len() > MAX_FILE_BYTES {
            return err(0, format!("the file is over {MAX_FILE_BYTES} bytes"));
        }
        // Normalized entry -> its strongest action (Reject sorts first).
        let mut entries: BTreeSet<(String, Action)> = BTreeSet::new();
        let mut action = Action::Reject;
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with('[') {
                action = match line {
                    "[reject]" => Action::Reject,
                    "[mask]" => Action::Mask,
                    other => return err(n, format!("{other}: a list is [reject] or [mask]")),
                };
                continue;
            }
            if line.chars().count() > MAX_ENTRY_CHARS {
                return err(
                    n,
                    format!("an entry is at most {MAX_ENTRY_CHARS} characters"),
                );
            }
            let norm = normalize(line, None);
            if norm.is_empty() {
                return err(n, format!("{line:?} is nothing once normalized"));
            }
            entries.insert((norm, action));
            if entries.len() > MAX_ENTRIES {
                return err(
                    n,
                    format!("a list file holds at most {MAX_ENTRIES} entries"),
                );
            }
        }
        let mut words: Vec<String> = Vec::with_capacity(entries.len());
        let mut patterns = Vec::with_capacity(entries.len());
        let (mut rejects, mut masks) = (0, 0);
        for (word, action) in entries {
            // Reject comes first for a word in both lists: keep only it.
            if words.last() == Some(&word) {
                continue;
            }
            match action {
                Action::Reject => rejects += 1,
                Action::Mask => masks += 1,
            }
            let first = word.chars().next().unwrap_or(' ');
            let last = word.chars().next_back().unwrap_or(' ');
            patterns.push(Pattern {
                action,
                bound_start: wordlike(first),
                bound_end: wordlike(last),
            });
            words.push(word);
        }
        if words.is_empty() {
            return Ok(WordList::empty());
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(&words)
            .map_err(|e| ListError {
                line: 0,
                message: format!("the list cannot be compiled: {e}"),
            })?;
        Ok(WordList {
            matcher: Some(matcher),
            patterns,
            rejects,
            masks,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// The verdict on `text`: reject if an entry of `[reject]` is in it, else the text masked
    /// if an entry of `[mask]` is, else pass.
    pub fn check(&self, text: &str) -> Verdict {
        let Some(matcher) = &self.matcher else {
            return Verdict::Pass;
        };
        let norm = normalize(text, None);
        // Byte ranges of the normalized text to mask.
        let mut masked: Vec<(usize, usize)> = Vec::new();
        for m in matcher.find_overlapping_iter(&norm) {
            let p = self.patterns[m.pattern().as_usize()];
            if p.bound_start && norm[..m.start()].chars().next_back().is_some_and(wordlike) {
                continue;
            }
            if p.bound_end && norm[m.end()..].chars().next().is_some_and(wordlike) {
                continue;
            }
            match p.action {
                Action::Reject => return Verdict::Reject,
                // Original characters from the first byte's to the last byte's.
                Action::Mask => masked.push((m.start(), m.end() - 1)),
            }
        }
        if masked.is_empty() {
            return Verdict::Pass;
        }
        // Only now the map back to the original characters (4 bytes per byte of text).
        let mut origin = Vec::with_capacity(norm.len());
        normalize(text, Some(&mut origin));
        let mut masked: Vec<(usize, usize)> = masked
            .into_iter()
            .map(|(a, b)| (origin[a] as usize, origin[b] as usize))
            .collect();
        masked.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut spans = masked.iter().peekable();
        for (i, c) in text.chars().enumerate() {
            while spans.peek().is_some_and(|s| s.1 < i) {
                spans.next();
            }
            let hidden = spans.peek().is_some_and(|s| s.0 <= i && i <= s.1);
            out.push(if hidden { '*' } else { c });
        }
        Verdict::Mask(out)
    }
}

/// `text` normalized (see the module's comment); with `origin`, also for each byte of it the
/// index of the character of `text` it came from.
fn normalize(text: &str, mut origin: Option<&mut Vec<u32>>) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.chars().enumerate() {
        let before = out.len();
        if c.is_whitespace() {
            if !out.ends_with(' ') {
                out.push(' ');
            }
        } else if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
        } else {
            decompose_compatible(c, |d| {
                if is_combining_mark(d) || invisible(d) {
                    return;
                }
                out.extend(d.to_lowercase());
            });
        }
        if let Some(o) = origin.as_deref_mut() {
            o.resize(o.len() + (out.len() - before), i as u32);
        }
    }
    out
}

/// Characters that render as nothing: zero-width spaces and joiners, the soft hyphen, the BOM,
/// directional marks, variation selectors.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{E0000}'..='\u{E0FFF}')
}

/// A letter or digit of a script written with spaces between words: a match next to one is
/// inside a longer word.
fn wordlike(c: char) -> bool {
    c.is_alphanumeric() && !unspaced(c)
}

/// Scripts written without spaces between words: CJK ideographs, kana, Hangul syllables, Thai,
/// Lao, Khmer, Myanmar.
fn unspaced(c: char) -> bool {
    matches!(c,
        '\u{0E00}'..='\u{0EFF}' | '\u{1000}'..='\u{109F}' | '\u{1780}'..='\u{17FF}'
        | '\u{3040}'..='\u{30FF}' | '\u{3400}'..='\u{4DBF}' | '\u{4E00}'..='\u{9FFF}'
        | '\u{AC00}'..='\u{D7AF}' | '\u{F900}'..='\u{FAFF}' | '\u{20000}'..='\u{3FFFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> WordList {
        WordList::parse(text).unwrap()
    }

    #[test]
    fn rejects_and_masks_by_list() {
        let l = list("# a comment\nspam\n[mask]\ndarn\nheck it\n[reject]\nscam link\n");
        assert_eq!((l.rejects, l.masks), (2, 2));
        assert_eq!(l.check("hello there"), Verdict::Pass);
        assert_eq!(l.check("buy SPAM now"), Verdict::Reject);
        assert_eq!(l.check("a scam \t\u{3000} link"), Verdict::Reject);
        assert_eq!(l.check("heck  it"), Verdict::Mask("********".into()));
        assert_eq!(l.check("a scam link!"), Verdict::Reject);
        assert_eq!(
            l.check("oh darn, heck it"),
            Verdict::Mask("oh ****, *******".into())
        );
        // A reject anywhere wins over masks.
        assert_eq!(l.check("darn spam"), Verdict::Reject);
    }

    #[test]
    fn case_width_accents_and_invisible_characters_are_ignored() {
        let l = list("[mask]\nnaive\n");
        for t in [
            "NAIVE",
            "naïve",
            "ｎａｉｖｅ",
            "na\u{200B}ive",
            "nai\u{0308}ve",
        ] {
            match l.check(t) {
                Verdict::Mask(m) => assert!(m.chars().all(|c| c == '*'), "{t:?} -> {m:?}"),
                other => panic!("{t:?}: {other:?}"),
            }
        }
        // The mask covers the original characters, invisible ones and combining marks included.
        assert_eq!(
            l.check("so na\u{200B}ive."),
            Verdict::Mask("so ******.".into())
        );
        assert_eq!(l.check("x nai\u{0308}ve"), Verdict::Mask("x ******".into()));
        // An entry written with accents or in full width matches plain text too.
        assert_eq!(list("ＣＡＦÉ").check("cafe"), Verdict::Reject);
    }

    #[test]
    fn latin_entries_match_whole_words_and_cjk_anywhere() {
        let l = list("ass\n[mask]\n傻瓜\n");
        assert_eq!(l.check("a class act"), Verdict::Pass);
        assert_eq!(l.check("assistant"), Verdict::Pass);
        assert_eq!(l.check("what an ass!"), Verdict::Reject);
        assert_eq!(l.check("ass"), Verdict::Reject);
        assert_eq!(l.check("你这个傻瓜啊"), Verdict::Mask("你这个**啊".into()));
        // Overlapping candidates: the one inside a word is skipped, the free one still found.
        let l = list("[mask]\nab\n");
        assert_eq!(l.check("abab ab"), Verdict::Mask("abab **".into()));
    }

    #[test]
    fn bad_files_are_refused_with_the_line() {
        let e = WordList::parse("ok\n[block]\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = WordList::parse(&format!("ok\n{}\n", "x".repeat(MAX_ENTRY_CHARS + 1))).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = WordList::parse("\u{200B}\n").unwrap_err();
        assert_eq!(e.line, 1, "{e}");
        assert!(WordList::parse("").unwrap().is_empty());
        assert!(WordList::parse("# nothing\n\n[mask]\n").unwrap().is_empty());
    }

    #[test]
    fn a_word_in_both_lists_rejects() {
        let l = list("[mask]\nfoo\n[reject]\nFOO\n");
        assert_eq!((l.rejects, l.masks), (1, 0));
        assert_eq!(l.check("foo"), Verdict::Reject);
    }
}
