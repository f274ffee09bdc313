//! Parsing one file: limits first, then YAML, then decoding every document
//! into its typed form (and checking its name) — on a worker thread that is
//! abandoned when it overruns [`Limits::parse_timeout`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use super::limits::{check_text, Limits};
use super::names;
use crate::inputs::{InputError, Inputs, Kind, ObjKey};

/// A parse failure: 1-based line when known, and what is wrong.
pub type ParseError = (Option<usize>, String);

/// One decoded object of a file.
#[derive(Clone, Debug)]
pub struct ParsedObject {
    pub kind: Kind,
    pub key: ObjKey,
    /// Content hash of the manifest.
    pub hash: u64,
    pub value: serde_json::Value,
}

/// Parses one file into JSON documents (`kind: List` flattened), after
/// checking document sizes and nesting depth with the default [`Limits`].
pub fn parse_documents(text: &str) -> Result<Vec<serde_json::Value>, ParseError> {
    parse_documents_with(text, &Limits::default())
}

/// [`parse_documents`] with explicit limits.
pub fn parse_documents_with(
    text: &str,
    limits: &Limits,
) -> Result<Vec<serde_json::Value>, ParseError> {
    use serde::Deserialize;
    check_text(text, limits)?;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = serde_yaml::Value::deserialize(doc)
            .map_err(|e| (e.location().map(|l| l.line()), e.to_string()))?;
        if v.is_null() {
            continue;
        }
        let json: serde_json::Value =
            serde_json::to_value(&v).map_err(|e| (None, e.to_string()))?;
        match json {
            serde_json::Value::Object(ref m)
                if m.get("kind").and_then(|k| k.as_str()) == Some("List") =>
            {
                if let Some(items) = m.get("items").and_then(|i| i.as_array()) {
                    docs.extend(items.iter().cloned());
                }
            }
            other => docs.push(other),
        }
    }
    Ok(docs)
}

/// Line where the n-th document (0-based) starts, for error messages.
pub(super) fn document_line(text: &str, n: usize) -> Option<usize> {
    let mut idx = 0;
    let mut seen_content = false;
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("---") {
            if seen_content {
                idx += 1;
                seen_content = false;
            }
            continue;
        }
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if !seen_content {
            seen_content = true;
            if idx == n {
                return Some(i + 1);
            }
        }
    }
    None
}

/// Content hash of a manifest.
fn doc_hash(d: &serde_json::Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    d.to_string().hash(&mut h);
    h.finish()
}

/// Kind and key of a manifest as [`Inputs::insert_value`] will file it
/// (`None` when it has no known kind or no name: decoding reports that).
fn key_of(d: &serde_json::Value) -> Option<(Kind, ObjKey)> {
    fn s(v: Option<&serde_json::Value>) -> Option<&str> {
        v.and_then(|v| v.as_str())
    }
    let kind = Kind::from_type_meta(s(d.get("apiVersion"))?, s(d.get("kind"))?)?;
    let meta = d.get("metadata");
    let name = s(meta.and_then(|m| m.get("name"))).filter(|n| !n.is_empty())?;
    let namespace = if kind.namespaced() {
        s(meta.and_then(|m| m.get("namespace"))).unwrap_or("default")
    } else {
        ""
    };
    Some((kind, ObjKey::new(namespace, name)))
}

/// Parses a file and decodes every document (a file is good only when all
/// of them decode and carry valid names); synchronous, no timeout.
pub fn parse_file(text: &str, limits: &Limits) -> Result<Vec<ParsedObject>, ParseError> {
    let docs = parse_documents_with(text, limits)?;
    let mut probe = Inputs::new("");
    let mut out = Vec::with_capacity(docs.len());
    for (i, d) in docs.into_iter().enumerate() {
        let hash = doc_hash(&d);
        // Names first: a hostile name never reaches a message unescaped.
        if let Some((kind, key)) = key_of(&d) {
            if let Err((field, why)) = names::check_key(kind, &key) {
                return Err((
                    document_line(text, i),
                    names::key_error(kind, &key, field, &why),
                ));
            }
        }
        let (kind, key) = probe
            .insert_value(d.clone())
            .map_err(|e: InputError| (document_line(text, i), e.to_string()))?;
        out.push(ParsedObject {
            kind,
            key,
            hash,
            value: d,
        });
    }
    Ok(out)
}

type Job = (Arc<str>, Limits);
type Answer = Result<Vec<ParsedObject>, ParseError>;

struct Worker {
    jobs: mpsc::Sender<Job>,
    answers: mpsc::Receiver<Answer>,
}

/// Runs [`parse_file`] on a worker thread with a deadline. A parse that
/// overruns is abandoned (its thread finishes on its own and exits) and the
/// file is reported; while [`MAX_RUNAWAY`] abandoned parses still run, further
/// parses are refused at once instead of piling up threads.
pub struct BoundedParser {
    limits: Limits,
    worker: Option<Worker>,
    runaway: Arc<AtomicUsize>,
}

/// Abandoned parses allowed to run on before new ones are refused.
pub const MAX_RUNAWAY: usize = 2;

impl BoundedParser {
    pub fn new(limits: Limits) -> Self {
        BoundedParser {
            limits,
            worker: None,
            runaway: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn spawn(&self) -> Option<Worker> {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (answer_tx, answers) = mpsc::channel::<Answer>();
        let runaway = self.runaway.clone();
        std::thread::Builder::new()
            .name("yaml-parse".into())
            .spawn(move || {
                while let Ok((text, limits)) = job_rx.recv() {
                    let r = parse_file(&text, &limits);
                    if answer_tx.send(r).is_err() {
                        // Abandoned after a timeout: nobody waits any more.
                        runaway.fetch_sub(1, Ordering::SeqCst);
                        return;
                    }
                }
            })
            .ok()?;
        Some(Worker { jobs, answers })
    }

    /// Parses `text` within the time limit.
    pub fn parse(&mut self, text: Arc<str>) -> Answer {
        let running = self.runaway.load(Ordering::SeqCst);
        if running >= MAX_RUNAWAY {
            return Err((
                None,
                format!(
                    "not parsed: {running} earlier parses overran the time limit and still run"
                ),
            ));
        }
        if self.worker.is_none() {
            self.worker = self.spawn();
        }
        let Some(w) = &self.worker else {
            // No thread could be started: parse here (still limit-checked).
            return parse_file(&text, &self.limits);
        };
        if w.jobs.send((text.clone(), self.limits.clone())).is_err() {
            self.worker = None;
            return parse_file(&text, &self.limits);
        }
        match w.answers.recv_timeout(self.limits.parse_timeout) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.runaway.fetch_add(1, Ordering::SeqCst);
                self.worker = None;
                Err((
                    None,
                    format!(
                        "parsing took longer than {:?} (the limit); abandoned",
                        self.limits.parse_timeout
                    ),
                ))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                self.worker = None;
                Err((None, "the parser thread failed".into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  namespace: n\nspec:\n  ports:\n  - port: 80\n";

    #[test]
    fn nested_bracket_bomb_is_refused_quickly() {
        let mut p = BoundedParser::new(Limits::default());
        let bomb: Arc<str> = format!("{SVC}---\na: {}\n", "[".repeat(200_000)).into();
        let t = Instant::now();
        let (line, msg) = p.parse(bomb).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert_eq!(line, Some(10));
        assert!(msg.contains("nested deeper"), "{msg}");
        // The worker is still usable.
        assert_eq!(p.parse(SVC.into()).expect("parses").len(), 1);
    }

    #[test]
    fn a_parse_that_overruns_is_abandoned_and_runaways_are_bounded() {
        // A large (but limit-abiding) file with a zero timeout overruns.
        let big: String = (0..2000)
            .map(|i| SVC.replace("name: a", &format!("name: a{i}")) + "---\n")
            .collect();
        let mut p = BoundedParser::new(Limits {
            parse_timeout: Duration::ZERO,
            ..Limits::default()
        });
        let (_, msg) = p.parse(big.clone().into()).unwrap_err();
        assert!(msg.contains("longer than"), "{msg}");
        let _ = p.parse(big.clone().into());
        let (_, msg) = p.parse(big.into()).unwrap_err();
        assert!(
            msg.contains("still run") || msg.contains("longer than"),
            "{msg}"
        );
        // Once they finish, parsing works again.
        let deadline = Instant::now() + Duration::from_secs(20);
        while p.runaway.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        p.limits.parse_timeout = Duration::from_secs(5);
        assert_eq!(p.parse(SVC.into()).expect("parses").len(), 1);
    }

    #[test]
    fn hostile_names_fail_the_document_naming_field_and_line() {
        for bad in ["../x", "a/b", "..", "\"a\\0b\"", "A", "é", &"a".repeat(300)] {
            let text = format!(
                "{SVC}---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: {bad}\nspec: {{}}\n"
            );
            let (line, msg) = parse_file(&text, &Limits::default()).unwrap_err();
            assert_eq!(line, Some(10), "{bad}");
            assert!(msg.contains("field `metadata.name`"), "{msg}");
            assert!(msg.starts_with("HTTPRoute \"default\"/"), "{msg}");
            assert!(!msg.contains('\0'));
        }
        let text = SVC.replace("namespace: n", "namespace: ../etc");
        let (_, msg) = parse_file(&text, &Limits::default()).unwrap_err();
        assert!(msg.contains("metadata.namespace"), "{msg}");
        // Checked before decoding: a bad field does not print the name raw.
        let text = SVC
            .replace("name: a", "name: \"a\\nb\"")
            .replace("port: 80", "port: x");
        let (_, msg) = parse_file(&text, &Limits::default()).unwrap_err();
        assert!(
            msg.contains("metadata.name") && !msg.contains('\n'),
            "{msg}"
        );
    }
}
