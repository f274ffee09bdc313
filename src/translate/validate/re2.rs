//! What Envoy's RE2 accepts, checked before a pattern reaches Envoy.
//!
//! The `regex` crate is not RE2: it accepts syntax RE2 rejects (`\u0041`,
//! `\<`, `\b{start}`, class set operations `[a&&b]`, nested classes,
//! `(?x)`/`(?u)`/`(?R)` flags, `a**`, repetitions above 1000, Unicode
//! property names RE2 does not know), and reads some syntax differently
//! (`a{ 2}` and `a{01}` are counted repetitions to it, literal text to RE2).
//! A pattern is accepted only when it is in the subset both understand the
//! same way, see [`check`] and `docs/regex.md`.
//!
//! Envoy 1.40 runs RE2 in Latin-1 mode (`re2_use_latin1_mode`, on by
//! default): a pattern is read one byte per character, so `\x{100}` and
//! above are errors and a UTF-8 `é` is two characters. With that runtime
//! feature off, RE2 reads UTF-8. A pattern is accepted only if both
//! readings accept it (`[ü-é]` is a valid range of bytes but not of
//! characters), and its size is the larger of the two estimates.
//!
//! Envoy also refuses a regex whose compiled RE2 program is larger than
//! `re2.max_program_size.error_level` (default 100 instructions). RE2's
//! program size cannot be computed exactly without RE2, so [`program_size`]
//! is a conservative over-estimate (an upper bound of the instructions RE2
//! emits): each literal byte costs 1; a character class costs the total
//! length of its UTF-8 byte-range sequences (RE2 shares common suffixes, so
//! it needs no more; a Latin-1 class needs fewer); `\d`, `\w`, `\s` are
//! ASCII as in RE2; with `(?i)` anywhere, every class and literal is
//! case-folded; `x?` costs x+1, `x*` and `x+` x+2, `x{n,m}` m·x+m, a
//! capture group 2, an alternation of k branches k-1; the program's fixed
//! part (fail, match, the unanchored `.*?` prefix) costs 5. A pattern whose
//! estimate is over 100 is refused, even if RE2 would have squeezed it
//! under the limit.

use regex_syntax::ast::{self, Ast};
use regex_syntax::hir::{self, ClassUnicode, ClassUnicodeRange};

/// Envoy's default `re2.max_program_size.error_level`.
pub const MAX_PROGRAM_SIZE: u32 = 100;

/// RE2's largest repetition count.
const MAX_REPEAT: u32 = 1000;

/// Unicode classes accepted: general categories (RE2 names them with one or
/// two letters) and the most common scripts. RE2 knows more scripts; the
/// `regex` crate knows many names RE2 does not (`Letter`, `Emoji`, ...).
const UNICODE_NAMES: &[&str] = &[
    "L",
    "Lu",
    "Ll",
    "Lt",
    "Lm",
    "Lo",
    "M",
    "Mn",
    "Mc",
    "Me",
    "N",
    "Nd",
    "Nl",
    "No",
    "P",
    "Pc",
    "Pd",
    "Ps",
    "Pe",
    "Pi",
    "Pf",
    "Po",
    "S",
    "Sm",
    "Sc",
    "Sk",
    "So",
    "Z",
    "Zs",
    "Zl",
    "Zp",
    "C",
    "Cc",
    "Cf",
    "Co",
    "Cs",
    "Latin",
    "Greek",
    "Cyrillic",
    "Han",
    "Arabic",
    "Hebrew",
    "Hiragana",
    "Katakana",
    "Hangul",
    "Thai",
    "Devanagari",
    "Armenian",
    "Georgian",
    "Common",
    "Inherited",
    "Any",
];

/// Checks that RE2 (as Envoy configures it) accepts `pattern`.
pub fn check(pattern: &str) -> Result<(), String> {
    let why = |why: String| format!("invalid regular expression {pattern:?}: {why}");
    let size = if pattern.is_ascii() {
        // Both readings are the same text; Latin-1 adds the \xFF limit.
        view(pattern, true).map_err(why)?
    } else {
        let utf8 = view(pattern, false).map_err(why)?;
        let bytes = view(&latin1(pattern), true)
            .map_err(|e| why(format!("read as Latin-1 (as Envoy does): {e}")))?;
        utf8.max(bytes)
    };
    if size > MAX_PROGRAM_SIZE {
        return Err(why(format!(
            "too large for Envoy: its RE2 program would have about {size} instructions (at most {MAX_PROGRAM_SIZE} allowed)"
        )));
    }
    Ok(())
}

/// Checks one reading of a pattern (`latin1`: each character stands for a
/// byte); returns its estimated program size.
fn view(pattern: &str, latin1: bool) -> Result<u32, String> {
    let tree = ast::parse::ParserBuilder::new()
        .nest_limit(100)
        .build()
        .parse(pattern)
        .map_err(|e| e.kind().to_string())?;
    // The `regex` crate must accept it too (its translation catches what the
    // parser leaves, such as unknown Unicode classes).
    if let Err(e) = regex_syntax::ParserBuilder::new()
        .nest_limit(100)
        .build()
        .parse(pattern)
    {
        let msg = e.to_string();
        return Err(msg.lines().last().unwrap_or("").trim().to_string());
    }
    let w = Walker {
        pattern,
        case_insensitive: pattern.contains("(?") && has_ci_flag(&tree),
        latin1,
    };
    w.syntax(&tree, 1)?;
    Ok(w.cost(&tree).saturating_add(5))
}

/// The Latin-1 reading of a pattern: each UTF-8 byte is one character.
fn latin1(pattern: &str) -> String {
    pattern.bytes().map(char::from).collect()
}

/// The estimated RE2 program size of a pattern that passes the syntax check
/// (`None` if it does not parse): the larger of its two readings.
pub fn program_size(pattern: &str) -> Option<u32> {
    let size = |p: &str| {
        let tree = ast::parse::Parser::new().parse(p).ok()?;
        let w = Walker {
            pattern: p,
            case_insensitive: has_ci_flag(&tree),
            latin1: false,
        };
        Some(w.cost(&tree).saturating_add(5))
    };
    let utf8 = size(pattern)?;
    if pattern.is_ascii() {
        return Some(utf8);
    }
    Some(utf8.max(size(&latin1(pattern))?))
}

fn has_ci_flag(a: &Ast) -> bool {
    let flags_ci = |f: &ast::Flags| {
        f.items
            .iter()
            .any(|i| i.kind == ast::FlagsItemKind::Flag(ast::Flag::CaseInsensitive))
    };
    match a {
        Ast::Flags(f) => flags_ci(&f.flags),
        Ast::Group(g) => {
            matches!(&g.kind, ast::GroupKind::NonCapturing(f) if flags_ci(f)) || has_ci_flag(&g.ast)
        }
        Ast::Repetition(r) => has_ci_flag(&r.ast),
        Ast::Alternation(x) => x.asts.iter().any(has_ci_flag),
        Ast::Concat(x) => x.asts.iter().any(has_ci_flag),
        _ => false,
    }
}

struct Walker<'a> {
    pattern: &'a str,
    case_insensitive: bool,
    /// The Latin-1 reading: no character above U+00FF.
    latin1: bool,
}

impl Walker<'_> {
    /// RE2 syntax: refuses what RE2 does not accept. `product` is the
    /// product of the enclosing counted repetitions (RE2 caps it at 1000).
    fn syntax(&self, a: &Ast, product: u64) -> Result<(), String> {
        match a {
            Ast::Empty(_) | Ast::Dot(_) | Ast::ClassPerl(_) => Ok(()),
            Ast::Flags(f) => flags(&f.flags),
            Ast::Literal(l) => self.literal(l),
            Ast::Assertion(x) => {
                use ast::AssertionKind as K;
                match x.kind {
                    K::StartLine
                    | K::EndLine
                    | K::StartText
                    | K::EndText
                    | K::WordBoundary
                    | K::NotWordBoundary => Ok(()),
                    _ => Err(format!("{} is not RE2 syntax", self.text(&x.span))),
                }
            }
            Ast::ClassUnicode(c) => unicode_class(c),
            Ast::ClassBracketed(c) => self.bracketed(c),
            Ast::Repetition(r) => {
                if matches!(*r.ast, Ast::Repetition(_)) {
                    return Err(format!(
                        "bad repetition operator {} (RE2 does not repeat a repetition)",
                        self.text(&r.op.span)
                    ));
                }
                if matches!(r.op.kind, ast::RepetitionKind::Range(_))
                    && !plain_count(self.text(&r.op.span))
                {
                    return Err(format!(
                        "{} is a repetition to the regex crate but literal text to RE2 (write {{n}}, {{n,}} or {{n,m}} without spaces or leading zeros)",
                        self.text(&r.op.span)
                    ));
                }
                let (min, max) = match r.op.kind {
                    ast::RepetitionKind::Range(ast::RepetitionRange::Exactly(n)) => (n, Some(n)),
                    ast::RepetitionKind::Range(ast::RepetitionRange::AtLeast(n)) => (n, None),
                    ast::RepetitionKind::Range(ast::RepetitionRange::Bounded(m, n)) => (m, Some(n)),
                    _ => (0, Some(0)),
                };
                if min > MAX_REPEAT || max.is_some_and(|m| m > MAX_REPEAT) {
                    return Err(format!(
                        "bad repetition operator {}: RE2 allows at most {MAX_REPEAT}",
                        self.text(&r.op.span)
                    ));
                }
                let count = u64::from(max.unwrap_or(min).max(1));
                let product = product.saturating_mul(count);
                if product > u64::from(MAX_REPEAT) {
                    return Err(format!(
                        "bad repetition operator {}: nested repetitions exceed {MAX_REPEAT}",
                        self.text(&r.op.span)
                    ));
                }
                self.syntax(&r.ast, product)
            }
            Ast::Group(g) => {
                match &g.kind {
                    ast::GroupKind::CaptureIndex(_) => {}
                    ast::GroupKind::CaptureName { name, .. } => {
                        if !name
                            .name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                        {
                            return Err(format!("invalid capture group name {:?}", name.name));
                        }
                    }
                    ast::GroupKind::NonCapturing(f) => flags(f)?,
                }
                self.syntax(&g.ast, product)
            }
            Ast::Alternation(x) => x.asts.iter().try_for_each(|a| self.syntax(a, product)),
            Ast::Concat(x) => x.asts.iter().try_for_each(|a| self.syntax(a, product)),
        }
    }

    fn bracketed(&self, c: &ast::ClassBracketed) -> Result<(), String> {
        match &c.kind {
            ast::ClassSet::BinaryOp(op) => Err(format!(
                "class set operation {} is not RE2 syntax",
                self.text(&op.span)
            )),
            ast::ClassSet::Item(item) => self.set_item(item),
        }
    }

    fn set_item(&self, item: &ast::ClassSetItem) -> Result<(), String> {
        use ast::ClassSetItem as I;
        match item {
            I::Empty(_) | I::Ascii(_) | I::Perl(_) => Ok(()),
            I::Literal(l) => self.literal(l),
            I::Range(r) => self.literal(&r.start).and_then(|()| self.literal(&r.end)),
            I::Unicode(u) => unicode_class(u),
            I::Bracketed(b) => Err(format!(
                "nested class {} is not RE2 syntax",
                self.text(&b.span)
            )),
            I::Union(u) => u.items.iter().try_for_each(|i| self.set_item(i)),
        }
    }

    fn literal(&self, l: &ast::Literal) -> Result<(), String> {
        match &l.kind {
            ast::LiteralKind::HexFixed(
                ast::HexLiteralKind::UnicodeShort | ast::HexLiteralKind::UnicodeLong,
            )
            | ast::LiteralKind::HexBrace(
                ast::HexLiteralKind::UnicodeShort | ast::HexLiteralKind::UnicodeLong,
            ) => return Err("\\u and \\U escapes are not RE2 syntax (use \\x{...})".into()),
            ast::LiteralKind::Octal => return Err("octal escapes are not accepted".into()),
            // RE2 takes any escaped ASCII character that is not a letter or
            // a digit literally; the regex crate rejects the others.
            ast::LiteralKind::Superfluous if !(l.c.is_ascii_punctuation() || l.c == ' ') => {
                return Err(format!("escape \\{} is not RE2 syntax", l.c))
            }
            _ => {}
        }
        if self.latin1 && u32::from(l.c) > 0xFF {
            return Err(format!(
                "{}: Envoy's RE2 reads patterns as Latin-1, where there is no character above \\x{{FF}}",
                self.text(&l.span)
            ));
        }
        Ok(())
    }

    fn text(&self, span: &ast::Span) -> &str {
        self.pattern
            .get(span.start.offset..span.end.offset)
            .unwrap_or("")
    }

    /// Upper bound of the RE2 instructions `a` compiles to.
    fn cost(&self, a: &Ast) -> u32 {
        match a {
            Ast::Empty(_) => 1,
            Ast::Flags(_) => 0,
            Ast::Literal(l) => self.literal_cost(l.c),
            Ast::Dot(_) => class_cost(&ClassUnicode::new([ClassUnicodeRange::new(
                '\0',
                char::MAX,
            )])),
            Ast::Assertion(_) => 1,
            Ast::ClassPerl(p) => self.class(perl(p)),
            Ast::ClassUnicode(_) | Ast::ClassBracketed(_) => {
                let span = match a {
                    Ast::ClassUnicode(u) => &u.span,
                    Ast::ClassBracketed(b) => &b.span,
                    _ => unreachable!(),
                };
                match self.bracket_class(a) {
                    Some(c) => self.class(c),
                    None => unicode_text_class(self.text(span))
                        .map(|c| self.class(c))
                        .unwrap_or(u32::MAX / 4),
                }
            }
            Ast::Repetition(r) => {
                let x = self.cost(&r.ast);
                use ast::RepetitionKind as K;
                use ast::RepetitionRange as R;
                match r.op.kind {
                    K::ZeroOrOne => x.saturating_add(1),
                    K::ZeroOrMore | K::OneOrMore => x.saturating_add(2),
                    K::Range(R::Exactly(n)) => x.saturating_add(1).saturating_mul(n),
                    K::Range(R::AtLeast(n)) => {
                        x.saturating_add(1).saturating_mul(n).saturating_add(x + 2)
                    }
                    K::Range(R::Bounded(_, n)) => x.saturating_add(1).saturating_mul(n),
                }
            }
            Ast::Group(g) => {
                let inner = self.cost(&g.ast);
                match g.kind {
                    ast::GroupKind::NonCapturing(_) => inner,
                    _ => inner.saturating_add(2),
                }
            }
            Ast::Alternation(x) => x
                .asts
                .iter()
                .map(|a| self.cost(a))
                .fold(0u32, u32::saturating_add)
                .saturating_add(u32::try_from(x.asts.len()).unwrap_or(u32::MAX)),
            Ast::Concat(x) => x
                .asts
                .iter()
                .map(|a| self.cost(a))
                .fold(0u32, u32::saturating_add),
        }
    }

    /// A literal is one instruction per UTF-8 byte; case-folded, it is one
    /// (RE2 folds ASCII in the instruction) unless its fold set leaves ASCII
    /// (`k` also matches the Kelvin sign, `s` the long s): then a class.
    fn literal_cost(&self, c: char) -> u32 {
        let len = c.len_utf8() as u32;
        if !self.case_insensitive {
            return len;
        }
        let mut cls = ClassUnicode::new([ClassUnicodeRange::new(c, c)]);
        cls.case_fold_simple();
        if cls.is_ascii() {
            len
        } else {
            class_cost(&cls)
        }
    }

    fn class(&self, mut c: ClassUnicode) -> u32 {
        if self.case_insensitive {
            c.case_fold_simple();
        }
        class_cost(&c)
    }

    /// The class of a bracketed expression, with RE2's ASCII Perl classes.
    fn bracket_class(&self, a: &Ast) -> Option<ClassUnicode> {
        let Ast::ClassBracketed(b) = a else {
            return None;
        };
        let ast::ClassSet::Item(item) = &b.kind else {
            return None;
        };
        let mut c = self.item_class(item)?;
        if b.negated {
            c.negate();
        }
        Some(c)
    }

    fn item_class(&self, item: &ast::ClassSetItem) -> Option<ClassUnicode> {
        use ast::ClassSetItem as I;
        Some(match item {
            I::Empty(_) => ClassUnicode::empty(),
            I::Literal(l) => ClassUnicode::new([ClassUnicodeRange::new(l.c, l.c)]),
            I::Range(r) => ClassUnicode::new([ClassUnicodeRange::new(r.start.c, r.end.c)]),
            I::Perl(p) => perl(p),
            I::Ascii(x) => unicode_text_class(&format!("[{}]", self.text(&x.span)))?,
            I::Unicode(u) => unicode_text_class(self.text(&u.span))?,
            I::Bracketed(_) => return None,
            I::Union(u) => {
                let mut c = ClassUnicode::empty();
                for i in &u.items {
                    c.union(&self.item_class(i)?);
                }
                c
            }
        })
    }
}

fn flags(f: &ast::Flags) -> Result<(), String> {
    for item in &f.items {
        if let ast::FlagsItemKind::Flag(flag) = &item.kind {
            use ast::Flag as F;
            if !matches!(
                flag,
                F::CaseInsensitive | F::MultiLine | F::DotMatchesNewLine | F::SwapGreed
            ) {
                return Err(format!("flag {flag:?} is not RE2 syntax (i, m, s, U are)"));
            }
        }
    }
    Ok(())
}

fn unicode_class(c: &ast::ClassUnicode) -> Result<(), String> {
    let name = match &c.kind {
        ast::ClassUnicodeKind::OneLetter(l) => l.to_string(),
        ast::ClassUnicodeKind::Named(n) => n.clone(),
        ast::ClassUnicodeKind::NamedValue { name, value, .. } => {
            return Err(format!("Unicode class {name}={value} is not RE2 syntax"))
        }
    };
    if UNICODE_NAMES.contains(&name.as_str()) {
        Ok(())
    } else {
        Err(format!(
            "Unicode class {name:?} is not accepted (general categories such as L, Lu, Nd and common scripts are)"
        ))
    }
}

/// Whether a counted repetition operator (`{2}`, `{2,}`, `{2,5}`, with an
/// optional `?`) is one RE2 reads as a repetition: RE2 takes `{` as a
/// literal unless plain decimal numbers without leading zeros follow.
fn plain_count(op: &str) -> bool {
    let op = op.strip_suffix('?').unwrap_or(op);
    let Some(inner) = op.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
        return false;
    };
    let number = |s: &str| {
        !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit())
            && !(s.len() > 1 && s.starts_with('0'))
    };
    match inner.split_once(',') {
        Some((lo, hi)) => number(lo) && (hi.is_empty() || number(hi)),
        None => number(inner),
    }
}

/// RE2's Perl classes are ASCII.
fn perl(p: &ast::ClassPerl) -> ClassUnicode {
    let r = |a: char, b: char| ClassUnicodeRange::new(a, b);
    let mut c = match p.kind {
        ast::ClassPerlKind::Digit => ClassUnicode::new([r('0', '9')]),
        ast::ClassPerlKind::Space => {
            ClassUnicode::new([r('\t', '\n'), r('\x0c', '\r'), r(' ', ' ')])
        }
        ast::ClassPerlKind::Word => {
            ClassUnicode::new([r('0', '9'), r('A', 'Z'), r('_', '_'), r('a', 'z')])
        }
    };
    if p.negated {
        c.negate();
    }
    c
}

/// The class a small pattern (one class) denotes.
fn unicode_text_class(text: &str) -> Option<ClassUnicode> {
    match regex_syntax::Parser::new().parse(text).ok()?.into_kind() {
        hir::HirKind::Class(hir::Class::Unicode(c)) => Some(c),
        hir::HirKind::Literal(hir::Literal(bytes)) => {
            let s = std::str::from_utf8(&bytes).ok()?;
            let ch = s.chars().next()?;
            Some(ClassUnicode::new([ClassUnicodeRange::new(ch, ch)]))
        }
        _ => None,
    }
}

/// Instructions of a class: RE2 compiles each UTF-8 byte-range sequence of
/// the class into a chain of byte-range instructions, sharing identical
/// suffixes, joined by one alternation instruction per sequence. The count
/// of distinct suffix chains plus one per sequence is an upper bound.
///
/// RE2 compiles the frequent range U+0080–U+10FFFF (any non-ASCII
/// character, as in `.` or `[^/]`) without precise UTF-8 sequences, in a
/// handful of instructions: such a class costs its ASCII part plus 12
/// (measured: `.` and `[^/]` cost Envoy 2).
fn class_cost(c: &ClassUnicode) -> u32 {
    use std::collections::HashMap;
    let non_ascii = ClassUnicode::new([ClassUnicodeRange::new('\u{80}', char::MAX)]);
    let mut rest = c.clone();
    rest.difference(&non_ascii);
    let mut covered = non_ascii.clone();
    covered.intersect(c);
    if covered == non_ascii {
        return class_cost(&rest).saturating_add(12);
    }
    let mut nodes: HashMap<(u8, u8, usize), usize> = HashMap::new();
    let mut sequences = 0u32;
    for r in c.iter() {
        for seq in regex_syntax::utf8::Utf8Sequences::new(r.start(), r.end()) {
            sequences = sequences.saturating_add(1);
            let mut next = 0usize;
            for br in seq.as_slice().iter().rev() {
                let n = nodes.len() + 1;
                next = *nodes.entry((br.start, br.end, next)).or_insert(n);
            }
        }
    }
    (nodes.len() as u32).saturating_add(sequences).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_re2_rejects() {
        for bad in [
            "a{1001}",
            "(a{100}){100}",
            "\\u0041",
            "\\U00000041",
            "a\\<",
            "\\b{start}x",
            "[a-z&&[^aeiou]]",
            "[a[b]]",
            "(?x)a b",
            "(?u)a",
            "a**",
            "(?<=a)b",
            "(a)\\1",
            "\\p{Letter}",
            "\\p{Emoji}",
            "\\p{sc=Greek}",
            "(",
            "[z-a]",
            // Literal text to RE2, a counted repetition to the regex crate.
            "a{ 2}",
            "a{2 }",
            "a{2, 3}",
            "a{01}",
            "a{1,01}",
            // Latin-1: nothing above \xFF; a range valid only as bytes.
            "\\x{100}",
            "[\\x{80}-\\x{10FFFF}]",
            "[ü-é]",
            "[é-a]",
            "\\é",
            // RE2 syntax the regex crate does not have (refused).
            "\\Qa.b\\E",
            "\\0",
            "\\C",
            "\\p{^Greek}",
            "[[a]]",
        ] {
            assert!(check(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn accepts_common_patterns() {
        for good in [
            "/foo/[0-9]+",
            "^/api/v\\d+/.*$",
            "[\\w.-]+",
            "(?i)/Foo/.*",
            ".*",
            "/(?:[^/]+)/(?:[^/]+)",
            "/[^/]+/Method",
            "a{10}",
            "(?P<name>a)",
            "[[:alpha:]]+",
            "\\.",
            "a|b|c",
            "",
            "\\_",
            "a\\ b",
            "\\#\\~\\%",
            "\\x{FF}",
            "\\x{0000041}",
            "/café",
            "/caf[é]+",
            "\\p{Any}",
            "a{0}",
            "a{10,}",
            "a{2}?",
            "a{0,3}",
            "(?<n>x)",
        ] {
            assert!(check(good).is_ok(), "{good}: {:?}", check(good));
        }
    }

    #[test]
    fn large_unicode_classes_are_refused_for_their_size() {
        for p in ["\\pL", "\\p{L}"] {
            let e = check(p).expect_err(p);
            assert!(e.contains("too large"), "{e}");
        }
        assert!(check("\\p{Letter}")
            .expect_err("long name")
            .contains("not accepted"));
    }

    #[test]
    fn program_size_is_bounded_from_above() {
        assert!(check(&"a".repeat(90)).is_ok());
        assert!(check(&"a".repeat(96)).is_err());
        assert!(check("a{200}").is_err());
        assert!(check("(abc){30}").is_err());
        // A literal costs one instruction per byte.
        assert_eq!(program_size("abc"), Some(8));
        for (p, envoy) in [
            ("a", 5),
            (".", 6),
            (".*", 6),
            ("[^/]+", 7),
            ("\\pL", 11),
            ("(?i)[a-z]+", 6),
            ("\\d+", 6),
            ("\\w+", 8),
            ("[\\w.-]+", 9),
            ("(a)", 7),
            ("a|b|c", 5),
            ("a?", 6),
            ("a{3}", 7),
            ("a{2,5}", 12),
            ("a{2,}", 7),
            ("/(?:[^/]+)/(?:[^/]+)", 12),
            ("\\S+", 9),
            ("[^a]", 6),
            ("é", 6),
            ("(?i)é", 6),
            // Measured with re2_use_latin1_mode off (UTF-8): k and s fold
            // to the Kelvin sign and the long s there.
            ("(?i)kkkkkkkkkk", 44),
            ("(?i)s", 7),
            ("(?i)[a-z]", 10),
            ("(?i)\\w", 12),
            (".{6}", 52),
            ("[^/]{5}", 44),
            ("\\p{Greek}", 66),
            ("\\p{Zs}", 18),
        ] {
            let ours = program_size(p).expect(p);
            eprintln!("{p:24} envoy {envoy:3} ours {ours:4}");
            assert!(ours >= envoy, "{p}: estimate {ours} below Envoy's {envoy}");
        }
    }
}
