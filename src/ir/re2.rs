//! RE2 matching as Envoy does it, on top of the `regex` crate.
//!
//! Envoy matches a `safe_regex` (path, header value, query parameter value)
//! with `RE2::FullMatch`, and Envoy 1.40 runs RE2 in Latin-1 mode (the
//! runtime feature `envoy.reloadable_features.re2_use_latin1_mode`, on by
//! default): the pattern and the text are read one byte per character. The
//! `regex` crate is unanchored and Unicode-aware, so a pattern is rewritten
//! before it is compiled:
//!
//! - **Latin-1**: every byte of the pattern and of the text becomes the
//!   character U+0000–U+00FF of the same number ([`latin1`]). A UTF-8 `é` is
//!   two characters (`Ã©`) on both sides: `.` matches one of them, `[é]`
//!   means "`Ã` or `©`", `\x{E9}` matches the byte 0xE9 (never a UTF-8 `é`).
//!   Unicode classes, case folding and negated classes then apply to those
//!   256 characters only, as in RE2 (which drops everything above U+00FF).
//! - **Perl classes are ASCII** in RE2: `\d` is `[0-9]`, `\w` is
//!   `[0-9A-Za-z_]`, `\s` is `[\t\n\f\r ]` (no `\v`), also inside brackets
//!   (`[\d_]`); `\D`, `\W`, `\S` are their complements (a negated class
//!   nested in the bracket, which keeps RE2's case-folding order).
//! - **Word boundaries are ASCII**: `\b` and `\B` become `(?-u:\b)` and
//!   `(?-u:\B)`.
//! - **Full match**: the result is anchored as `\A(?:...)\z`, so `a|b` does
//!   not match `ab` and flags set inside the pattern stay inside the group.
//!
//! What needs no rewriting: `.` excludes only `\n` in both; `^`/`$` are the
//! text's ends unless `(?m)` in both; a negated class matches `\n` in both;
//! POSIX classes (`[[:alpha:]]`) are ASCII in both; `(?i)` uses Unicode
//! simple case folding in both (RE2's `(?i)\w` folds to the Kelvin sign
//! U+212A and long s U+017F, as the regex crate's `(?i)[0-9A-Za-z_]` does,
//! and neither exists in Latin-1 anyway). The validator
//! (`translate::validate::re2`) refuses the syntax on which the two
//! disagree (`a{ 2}`, `a{01}`, `\<`, nested classes, ...), see `docs/regex.md`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use regex_syntax::ast::{self, Ast};

/// A compiled pattern that answers `RE2::FullMatch` in Latin-1 mode.
#[derive(Clone, Debug)]
pub struct Re2Regex {
    /// Matches the Latin-1 reading of the text ([`latin1`]).
    re: regex::Regex,
}

impl Re2Regex {
    /// Whether RE2 fully matches the bytes of `text` (its UTF-8 encoding).
    pub fn is_match(&self, text: &str) -> bool {
        self.is_match_bytes(text.as_bytes())
    }

    /// Whether RE2 fully matches `text` (any bytes, as Envoy sees a header).
    pub fn is_match_bytes(&self, text: &[u8]) -> bool {
        self.re.is_match(&latin1(text))
    }

    /// The `regex` pattern this was compiled to (it matches the Latin-1
    /// reading of a text).
    pub fn as_str(&self) -> &str {
        self.re.as_str()
    }
}

/// Compiles an RE2 pattern (one the validator accepted) into a matcher
/// whose `is_match(s)` is Envoy's `RE2::FullMatch(s, pattern)`.
pub fn full_match_regex(pattern: &str) -> Result<Re2Regex, String> {
    let translated = translate(pattern)?;
    let re = regex::RegexBuilder::new(&translated)
        .nest_limit(200)
        .size_limit(1 << 24)
        .build()
        .map_err(|e| format!("regex {pattern:?}: {}", last_line(&e.to_string())))?;
    Ok(Re2Regex { re })
}

/// Reads bytes as Latin-1: each byte is the character of the same number.
pub fn latin1(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) if s.is_ascii() => Cow::Borrowed(s),
        _ => Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()),
    }
}

/// The `regex` crate pattern (over Latin-1 text) equivalent to RE2's
/// full match of `pattern`.
pub fn translate(pattern: &str) -> Result<String, String> {
    let wide = latin1(pattern.as_bytes());
    let tree = ast::parse::ParserBuilder::new()
        .nest_limit(100)
        .build()
        .parse(&wide)
        .map_err(|e| format!("regex {pattern:?}: {}", e.kind()))?;
    let mut edits = Vec::new();
    rewrite(&tree, &mut edits);
    edits.sort_by_key(|e| e.0);
    let mut out = String::with_capacity(wide.len() + 16);
    out.push_str("\\A(?:");
    let mut at = 0;
    for (start, end, with) in edits {
        out.push_str(wide.get(at..start).unwrap_or(""));
        out.push_str(with);
        at = end;
    }
    out.push_str(wide.get(at..).unwrap_or(""));
    out.push_str(")\\z");
    Ok(out)
}

/// Replacements (byte range of the Latin-1 pattern, new text).
type Edit = (usize, usize, &'static str);

fn rewrite(a: &Ast, out: &mut Vec<Edit>) {
    match a {
        Ast::ClassPerl(p) => out.push((
            p.span.start.offset,
            p.span.end.offset,
            perl(&p.kind, p.negated, false),
        )),
        Ast::Assertion(x) => {
            let with = match x.kind {
                ast::AssertionKind::WordBoundary => "(?-u:\\b)",
                ast::AssertionKind::NotWordBoundary => "(?-u:\\B)",
                _ => return,
            };
            out.push((x.span.start.offset, x.span.end.offset, with));
        }
        Ast::ClassBracketed(b) => rewrite_set(&b.kind, out),
        Ast::Repetition(r) => rewrite(&r.ast, out),
        Ast::Group(g) => rewrite(&g.ast, out),
        Ast::Alternation(x) => x.asts.iter().for_each(|a| rewrite(a, out)),
        Ast::Concat(x) => x.asts.iter().for_each(|a| rewrite(a, out)),
        Ast::Empty(_) | Ast::Flags(_) | Ast::Literal(_) | Ast::Dot(_) | Ast::ClassUnicode(_) => {}
    }
}

fn rewrite_set(set: &ast::ClassSet, out: &mut Vec<Edit>) {
    match set {
        ast::ClassSet::Item(item) => rewrite_item(item, out),
        ast::ClassSet::BinaryOp(op) => {
            rewrite_set(&op.lhs, out);
            rewrite_set(&op.rhs, out);
        }
    }
}

fn rewrite_item(item: &ast::ClassSetItem, out: &mut Vec<Edit>) {
    match item {
        ast::ClassSetItem::Perl(p) => out.push((
            p.span.start.offset,
            p.span.end.offset,
            perl(&p.kind, p.negated, true),
        )),
        ast::ClassSetItem::Bracketed(b) => rewrite_set(&b.kind, out),
        ast::ClassSetItem::Union(u) => u.items.iter().for_each(|i| rewrite_item(i, out)),
        _ => {}
    }
}

/// RE2's ASCII Perl class, as a class (or, inside brackets and not
/// negated, as class items).
fn perl(kind: &ast::ClassPerlKind, negated: bool, in_class: bool) -> &'static str {
    use ast::ClassPerlKind as K;
    match (kind, negated, in_class) {
        (K::Digit, false, true) => "0-9",
        (K::Digit, false, false) => "[0-9]",
        (K::Digit, true, _) => "[^0-9]",
        (K::Word, false, true) => "0-9A-Za-z_",
        (K::Word, false, false) => "[0-9A-Za-z_]",
        (K::Word, true, _) => "[^0-9A-Za-z_]",
        (K::Space, false, true) => "\\t\\n\\x0C\\r ",
        (K::Space, false, false) => "[\\t\\n\\x0C\\r ]",
        (K::Space, true, _) => "[^\\t\\n\\x0C\\r ]",
    }
}

fn last_line(s: &str) -> &str {
    s.lines().last().unwrap_or(s).trim()
}

/// Compiled patterns, shared by the requests of one evaluation (or many).
#[derive(Default)]
pub struct RegexCache(Mutex<HashMap<String, Result<Arc<Re2Regex>, String>>>);

impl RegexCache {
    /// Whether Envoy's `RE2::FullMatch(text, pattern)` holds.
    pub fn is_full_match(&self, pattern: &str, text: &str) -> Result<bool, String> {
        Ok(self.get(pattern)?.is_match(text))
    }

    /// [`RegexCache::is_full_match`] on raw bytes.
    pub fn is_full_match_bytes(&self, pattern: &str, text: &[u8]) -> Result<bool, String> {
        Ok(self.get(pattern)?.is_match_bytes(text))
    }

    /// The compiled pattern (compiled once; an error is remembered too).
    pub fn get(&self, pattern: &str) -> Result<Arc<Re2Regex>, String> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(found) = map.get(pattern) {
            return found.clone();
        }
        let made = full_match_regex(pattern).map(Arc::new);
        map.insert(pattern.to_string(), made.clone());
        made
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(pattern: &str, text: &[u8]) -> bool {
        full_match_regex(pattern)
            .unwrap_or_else(|e| panic!("{pattern}: {e}"))
            .is_match_bytes(text)
    }

    /// (pattern, text, RE2 FullMatch in Latin-1 mode, what the regex crate
    /// says used directly): the rows where the two differ are the
    /// differences handled; the others show what needed no handling.
    #[test]
    fn differences_from_the_regex_crate() {
        let rows: &[(&str, &[u8], bool, bool)] = &[
            // Full match, not a search.
            ("abc", b"xabcx", false, true),
            ("a|b", b"ab", false, true),
            ("a|b", b"b", true, true),
            ("(?m)^b$", b"a\nb", false, true),
            ("a*", b"", true, true),
            // Perl classes are ASCII.
            ("\\d", "٣".as_bytes(), false, true),
            ("\\d", b"7", true, true),
            ("\\D", b"7", false, false),
            ("\\w", "é".as_bytes(), false, true),
            ("\\w", b"\xe9", false, true),
            ("\\W", b"\xe9", true, false),
            ("[\\w.]+", b"a.b\xe9", false, true),
            ("[\\d_]+", b"1_2", true, true),
            ("[^\\d]", b"x", true, true),
            ("[\\D]", b"5", false, false),
            // \s is [\t\n\f\r ]: no \v, no NBSP.
            ("\\s", b"\x0b", false, true),
            ("\\s", b"\xa0", false, true),
            ("\\s", b"\x0c", true, true),
            ("\\S", b"\x0b", true, false),
            ("a[\\s]b", b"a\x0bb", false, true),
            // Word boundaries are ASCII: é is not a word character.
            ("foo\\b.+", "fooé".as_bytes(), true, false),
            ("foo\\B.+", "fooé".as_bytes(), false, true),
            ("\\bfoo\\b", b"foo", true, true),
            // Latin-1: one byte is one character, on both sides.
            (".", "é".as_bytes(), false, true),
            ("..", "é".as_bytes(), true, false),
            ("é", "é".as_bytes(), true, true),
            ("[é]", "é".as_bytes(), false, true),
            ("[é]{2}", "é".as_bytes(), true, false),
            ("\\x{E9}", "é".as_bytes(), false, true),
            ("\\x{E9}", b"\xe9", true, true),
            ("\\x{FF}", b"\xff", true, true),
            ("\\pL", "é".as_bytes(), false, true),
            ("\\pL", b"\xe9", true, true),
            ("\\p{Greek}", "α".as_bytes(), false, true),
            ("[^a]", "é".as_bytes(), false, true),
            ("[^a]+", "é".as_bytes(), true, true),
            // A repetition after a non-ASCII character repeats its last byte.
            ("é{2}", "éé".as_bytes(), false, true),
            ("é{2}", b"\xc3\xa9\xa9", true, false),
            // Case folding within Latin-1 only.
            ("(?i)k", "\u{212a}".as_bytes(), false, true),
            ("(?i)s", "\u{17f}".as_bytes(), false, true),
            ("(?i)é", "É".as_bytes(), false, true),
            ("(?i)é", b"\xe3\xa9", true, false),
            ("(?i)\\x{E9}", b"\xc9", true, true),
            ("(?i)\\w", b"K", true, true),
            // POSIX classes are ASCII in both.
            ("[[:alpha:]]", b"\xe9", false, false),
            ("[[:space:]]", b"\x0b", true, true),
            // . excludes only \n; (?s) includes it; negated classes include it.
            (".", b"\n", false, false),
            ("(?s).", b"\n", true, true),
            ("[^a]", b"\n", true, true),
        ];
        for &(pattern, text, re2, unicode) in rows {
            let got = full(pattern, text);
            assert_eq!(got, re2, "RE2 FullMatch({pattern:?}, {text:?})");
            assert_eq!(
                naive(pattern, text),
                unicode,
                "the regex crate on {pattern:?} / {text:?} (the difference this row documents)"
            );
        }
    }

    /// The regex crate used directly: unanchored, Unicode, on the text read
    /// as UTF-8 (or as Latin-1 when it is not UTF-8).
    fn naive(pattern: &str, text: &[u8]) -> bool {
        let text = match std::str::from_utf8(text) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => Cow::Owned(text.iter().map(|&b| char::from(b)).collect()),
        };
        regex::Regex::new(pattern).is_ok_and(|r| r.is_match(&text))
    }

    #[test]
    fn utf8_text_is_read_byte_by_byte() {
        let r = full_match_regex("/caf..").expect("compiles");
        assert!(r.is_match("/café"));
        assert!(!r.is_match("/cafe"));
        assert_eq!(latin1(b"a\xe9"), "a\u{e9}");
        assert!(matches!(latin1(b"plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn translation_keeps_structure() {
        for (pattern, want) in [
            ("a|b", "\\A(?:a|b)\\z"),
            ("\\d+", "\\A(?:[0-9]+)\\z"),
            ("[\\d_]", "\\A(?:[0-9_])\\z"),
            ("[^\\W]", "\\A(?:[^[^0-9A-Za-z_]])\\z"),
            ("\\s", "\\A(?:[\\t\\n\\x0C\\r ])\\z"),
            ("\\bx\\B", "\\A(?:(?-u:\\b)x(?-u:\\B))\\z"),
            ("(?i)a", "\\A(?:(?i)a)\\z"),
            ("é", "\\A(?:\u{c3}\u{a9})\\z"),
            ("\\\\d", "\\A(?:\\\\d)\\z"),
        ] {
            assert_eq!(translate(pattern).as_deref(), Ok(want), "{pattern}");
        }
        // Flags set inside the pattern stay inside the group.
        assert!(!full("(?m)a$", b"a\n"));
        assert!(full("(?i)a|B", b"b"));
    }

    #[test]
    fn the_cache_compiles_once_and_remembers_errors() {
        let c = RegexCache::default();
        assert_eq!(c.is_full_match("/a/[0-9]+", "/a/12"), Ok(true));
        assert_eq!(c.is_full_match("/a/[0-9]+", "/a/12/"), Ok(false));
        assert_eq!(c.is_full_match_bytes("\\w+", b"ab\xe9"), Ok(false));
        assert!(c.is_full_match("(", "x").is_err());
        assert!(c.is_full_match("(", "x").is_err());
        let a = c.get("x+").expect("compiles");
        let b = c.get("x+").expect("compiles");
        assert!(Arc::ptr_eq(&a, &b));
        fn send_sync<T: Send + Sync>() {}
        send_sync::<RegexCache>();
    }
}
