//! Limits that keep one reload bounded in time and memory whatever the
//! directory holds, and the text check that enforces the per-document ones
//! before any text reaches the YAML parser.

use std::time::Duration;

/// Bounds on what one reload reads. [`Limits::default`] holds the documented
/// values (README, standalone section).
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Largest file read (bytes).
    pub max_file_bytes: u64,
    /// Largest YAML document (bytes of text between `---` separators): what
    /// a Kubernetes API server (etcd's 1.5 MiB request limit) would store.
    pub max_document_bytes: usize,
    /// Deepest nesting of collections (block and flow) in a document.
    pub max_depth: usize,
    /// Most YAML files read under the directory.
    pub max_files: usize,
    /// Deepest subdirectory read (the directory itself is depth 0).
    pub max_dir_depth: usize,
    /// Most directory entries looked at in one scan.
    pub max_dir_entries: usize,
    /// Longest time one file may take to parse and decode.
    pub parse_timeout: Duration,
    /// How long objects that vanished from a file (the file emptied,
    /// truncated or removed) are kept before they are removed, in case the
    /// file is being rewritten in place.
    pub settle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 8 << 20,
            max_document_bytes: 1536 << 10,
            max_depth: 64,
            max_files: 10_000,
            max_dir_depth: 16,
            max_dir_entries: 100_000,
            parse_timeout: Duration::from_secs(5),
            settle: Duration::from_millis(500),
        }
    }
}

/// Whether `tok` is a block scalar header (`|`, `>-`, `|2+`...).
fn block_scalar_header(tok: &str) -> bool {
    let mut c = tok.chars();
    matches!(c.next(), Some('|' | '>')) && c.all(|c| matches!(c, '+' | '-' | '1'..='9'))
}

/// Checks document sizes and collection nesting depth of YAML text, in one
/// linear pass, without parsing it. Returns the 1-based line of the first
/// violation and what it is. The depth is an upper-bound estimate (block
/// indentation levels, `- ` entries and flow brackets outside quotes,
/// comments and block scalars); a document the parser would nest deeper
/// than `max_depth` is always refused.
pub fn check_text(text: &str, limits: &Limits) -> Result<(), (Option<usize>, String)> {
    let mut doc_start_line = 1usize;
    let mut doc_bytes = 0usize;
    // Block context: indentation levels open.
    let mut indents: Vec<usize> = Vec::new();
    // Inside a block scalar whose owner is at this column (-1: document root).
    let mut block_scalar: Option<isize> = None;
    // Flow context and quotes carry over lines.
    let mut flow = 0usize;
    let mut quote: Option<char> = None;
    let mut escape = false;
    let mut prev_nonspace: Option<char> = None;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let lineno = i + 1;
        let content = line.trim_end_matches(['\n', '\r']);
        let marker = (content.starts_with("---") || content.starts_with("..."))
            && content[3..]
                .chars()
                .next()
                .is_none_or(|c| c == ' ' || c == '\t');
        if marker && quote.is_none() {
            if doc_bytes > limits.max_document_bytes {
                break;
            }
            doc_start_line = lineno + 1;
            doc_bytes = 0;
            indents.clear();
            block_scalar = None;
            flow = 0;
            escape = false;
            prev_nonspace = None;
            let rest = content[3..].trim();
            if rest
                .split_whitespace()
                .last()
                .is_some_and(block_scalar_header)
            {
                block_scalar = Some(-1);
            }
            continue;
        }
        doc_bytes += line.len();
        if doc_bytes > limits.max_document_bytes {
            return Err((
                Some(doc_start_line),
                format!(
                    "document is larger than {} bytes (the limit for one object)",
                    limits.max_document_bytes
                ),
            ));
        }
        let indent = content.len() - content.trim_start_matches(' ').len();
        let body = &content[indent..];
        if let Some(owner) = block_scalar {
            if body.trim().is_empty() || indent as isize > owner {
                continue;
            }
            block_scalar = None;
        }
        let mut depth = indents.len();
        let mut rest = body;
        let block = flow == 0 && quote.is_none();
        let mut owner_col = indent;
        if block {
            if body.is_empty() || body.starts_with('#') {
                continue;
            }
            while indents.last().is_some_and(|&top| top > indent) {
                indents.pop();
            }
            if indents.last() != Some(&indent) {
                indents.push(indent);
            }
            // Compact nested sequences: `- - - x`.
            let mut dashes = 0;
            while rest == "-" || rest.starts_with("- ") {
                dashes += 1;
                let after = rest[1..].trim_start_matches(' ');
                owner_col += rest.len() - after.len();
                rest = after;
            }
            depth = indents.len() + dashes;
            prev_nonspace = None;
        }
        let mut max_flow = flow;
        let mut prev: Option<char> = None;
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if let Some(q) = quote {
                if q == '\'' {
                    if c == '\'' {
                        if chars.peek() == Some(&'\'') {
                            chars.next();
                        } else {
                            quote = None;
                        }
                    }
                } else if escape {
                    escape = false;
                } else if c == '\\' {
                    escape = true;
                } else if c == '"' {
                    quote = None;
                }
                prev = Some(c);
                prev_nonspace = Some(c);
                continue;
            }
            // Where a node may start: a quote or bracket there is an
            // indicator, elsewhere (inside a plain scalar) it is text.
            let at_start = match prev_nonspace {
                None | Some(':' | '-' | '?') => true,
                Some('[' | '{' | ',') => flow > 0,
                _ => false,
            };
            let mut text = !c.is_whitespace();
            match c {
                '#' if prev.is_none_or(char::is_whitespace) => break,
                '\'' | '"' if at_start => quote = Some(c),
                '[' | '{' if flow > 0 || at_start => {
                    flow += 1;
                    max_flow = max_flow.max(flow);
                    text = false;
                    prev_nonspace = Some(c);
                }
                ']' | '}' | ',' if flow > 0 => {
                    if c == ',' {
                        prev_nonspace = Some(c);
                    } else {
                        flow -= 1;
                        prev_nonspace = Some('x');
                    }
                    text = false;
                }
                _ => {}
            }
            prev = Some(c);
            if text {
                // Plain text (a scalar, or a `:`/`-` indicator).
                prev_nonspace = Some(c);
            }
        }
        depth += max_flow;
        if depth > limits.max_depth {
            return Err((
                Some(lineno),
                format!(
                    "collections nested deeper than {} levels (the limit)",
                    limits.max_depth
                ),
            ));
        }
        if block && flow == 0 && quote.is_none() {
            let code = match rest.find(" #") {
                Some(p) => &rest[..p],
                None => rest,
            };
            if code
                .split_whitespace()
                .last()
                .is_some_and(block_scalar_header)
            {
                // The scalar's lines are those indented past its owner.
                let key_col = if code.trim_start().starts_with(['|', '>']) {
                    indent
                } else {
                    owner_col
                };
                block_scalar = Some(key_col as isize);
            }
        }
    }
    if doc_bytes > limits.max_document_bytes {
        return Err((
            Some(doc_start_line),
            format!(
                "document is larger than {} bytes (the limit for one object)",
                limits.max_document_bytes
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim() -> Limits {
        Limits {
            max_depth: 8,
            max_document_bytes: 1000,
            ..Limits::default()
        }
    }

    #[test]
    fn flow_bomb_is_refused_in_linear_time() {
        let bomb = format!("a: {}", "[".repeat(200_000));
        let t = std::time::Instant::now();
        let err = check_text(&bomb, &Limits::default()).unwrap_err();
        assert!(t.elapsed() < std::time::Duration::from_millis(500));
        assert_eq!(err.0, Some(1));
        assert!(err.1.contains("nested deeper than 64"), "{}", err.1);
        // Also when the brackets span lines and follow a plain scalar.
        let multi = format!("- [x\n{}", "[\n".repeat(100));
        assert!(check_text(&multi, &lim()).is_err());
    }

    #[test]
    fn block_nesting_counts_indentation_and_compact_sequences() {
        let deep: String = (0..20)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert!(check_text(&deep, &lim())
            .unwrap_err()
            .1
            .contains("deeper than 8"));
        let dashes = format!("{}x\n", "- ".repeat(20));
        assert!(check_text(&dashes, &lim()).is_err());
        let shallow: String = (0..6)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert!(check_text(&shallow, &lim()).is_ok());
    }

    #[test]
    fn brackets_in_strings_comments_and_block_scalars_do_not_count() {
        let text = format!(
            "a: '{b}'\nb: \"{b}\"\nc: x[{b}\n# {b}\nd: |\n  {b}\n  {b}\ne: don't {b}\n- key: >-\n    {b}\n",
            b = "[".repeat(50)
        );
        assert_eq!(check_text(&text, &lim()), Ok(()));
        // A block scalar ends where indentation returns to its owner.
        let after = format!("d: |\n  text\nx: {}\n", "[".repeat(50));
        assert!(check_text(&after, &lim()).is_err());
    }

    #[test]
    fn document_size_is_per_document_and_names_its_first_line() {
        let doc = format!("a: {}\n", "x".repeat(600));
        assert!(check_text(&format!("{doc}---\n{doc}"), &lim()).is_ok());
        let big = format!("{doc}---\n{doc}{doc}");
        let (line, msg) = check_text(&big, &lim()).unwrap_err();
        assert_eq!(line, Some(3));
        assert!(msg.contains("larger than 1000 bytes"), "{msg}");
    }

    #[test]
    fn real_manifests_pass() {
        for f in ["examples/quickstart"] {
            for e in std::fs::read_dir(f).expect("examples").flatten() {
                let text = std::fs::read_to_string(e.path()).expect("read");
                assert_eq!(
                    check_text(&text, &Limits::default()),
                    Ok(()),
                    "{}",
                    e.path().display()
                );
            }
        }
    }
}
