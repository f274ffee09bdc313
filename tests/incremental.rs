//! The incremental translator against the from-scratch one: after every
//! step of random route edits (hostnames, parentRefs, rules, removals,
//! re-additions) and endpoint changes, `Translator::update` with only the
//! changed objects must give exactly the IR and status `translate` gives for
//! the same inputs, and the reusing `Builder` exactly the resources a fresh
//! `build` gives.

use std::path::Path;

use serde_json::{json, Value};
use switchyard::inputs::{Changes, Inputs, Kind, ObjKey, DEFAULT_CONTROLLER_NAME};
use switchyard::provider::addresses::AddressPool;
use switchyard::provider::file::parse_documents;
use switchyard::translate::{translate, Translator};
use switchyard::xds::build::{build, Builder};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn is_route(d: &Value) -> bool {
    matches!(
        d.get("kind").and_then(|k| k.as_str()),
        Some("HTTPRoute") | Some("GRPCRoute")
    )
}

/// A changed version of a route manifest.
fn mutate(rng: &mut Rng, doc: &Value) -> Value {
    let mut d = doc.clone();
    let spec = &mut d["spec"];
    match rng.below(7) {
        0 => {
            if let Some(m) = spec.as_object_mut() {
                m.remove("hostnames");
            }
        }
        1 => spec["hostnames"] = json!(["*.example.com"]),
        2 => spec["hostnames"] = json!([format!("h{}.example.com", rng.below(3))]),
        3 => {
            // Drop one rule (keep at least one).
            if let Some(rules) = spec.get_mut("rules").and_then(|r| r.as_array_mut()) {
                if rules.len() > 1 {
                    let i = rng.below(rules.len());
                    rules.remove(i);
                }
            }
        }
        4 => {
            // Drop sectionName/port from the parentRefs (attach to more listeners).
            for pr in spec
                .get_mut("parentRefs")
                .and_then(|p| p.as_array_mut())
                .into_iter()
                .flatten()
            {
                if let Some(m) = pr.as_object_mut() {
                    m.remove("sectionName");
                    m.remove("port");
                }
            }
        }
        5 => {
            // Point the route at a Gateway that does not exist.
            if let Some(p) = spec.get_mut("parentRefs").and_then(|p| p.as_array_mut()) {
                p.push(json!({"name": "no-such-gateway"}));
            }
        }
        _ => {
            // Reverse the rules (changes precedence between equal matches).
            if let Some(rules) = spec.get_mut("rules").and_then(|r| r.as_array_mut()) {
                rules.reverse();
            }
        }
    }
    d
}

fn key_of(d: &Value) -> (Kind, ObjKey) {
    let kind = match d["kind"].as_str() {
        Some("GRPCRoute") => Kind::GRPCRoute,
        Some("HTTPRoute") => Kind::HTTPRoute,
        _ => Kind::EndpointSlice,
    };
    let ns = d["metadata"]["namespace"].as_str().unwrap_or("default");
    (
        kind,
        ObjKey::new(ns, d["metadata"]["name"].as_str().unwrap_or("")),
    )
}

fn check_equal(
    label: &str,
    t: &mut Translator,
    builder: &mut Builder,
    inputs: &Inputs,
    changes: &Changes,
) {
    let up = t.update(inputs, changes);
    let full = translate(inputs);
    assert!(
        up.model == full.model,
        "{label}: incremental IR differs from a full translation\nincremental: {:#?}\nfull: {:#?}",
        up.model,
        full.model
    );
    assert!(
        *t.status() == full.status,
        "{label}: incremental status differs\nincremental: {:#?}\nfull: {:#?}",
        t.status(),
        full.status
    );
    let snap = builder.build(&up.model);
    assert!(
        snap == build(&full.model),
        "{label}: reused encodings differ from a fresh build"
    );
}

fn run_case(name: &str, docs: Vec<Value>, seed: u64, steps: usize) {
    let mut rng = Rng(seed);
    let (routes, rest): (Vec<Value>, Vec<Value>) = docs.into_iter().partition(is_route);
    let slices: Vec<Value> = rest
        .iter()
        .filter(|d| d["kind"] == "EndpointSlice")
        .cloned()
        .collect();
    let mut inputs = Inputs::new(DEFAULT_CONTROLLER_NAME);
    for d in rest {
        inputs.insert_value(d).expect("fixture decodes");
    }
    AddressPool::parse("127.0.0.0/24")
        .expect("pool")
        .assign(&mut inputs);
    // Start with about half the routes.
    let mut present = vec![false; routes.len()];
    for (i, r) in routes.iter().enumerate() {
        if rng.below(2) == 0 {
            inputs.insert_value(r.clone()).expect("route decodes");
            present[i] = true;
        }
    }
    let mut t = Translator::default();
    let mut builder = Builder::default();
    check_equal(
        &format!("{name}: start"),
        &mut t,
        &mut builder,
        &inputs,
        &Changes::everything(),
    );
    for step in 0..steps {
        let mut changes = Changes::default();
        // One to three objects per step, as a debounced batch would have.
        for _ in 0..1 + rng.below(3) {
            if !slices.is_empty() && rng.below(8) == 0 {
                let mut s = slices[rng.below(slices.len())].clone();
                let n = 1 + rng.below(4);
                s["endpoints"] = json!((0..n)
                    .map(|j| json!({"addresses": [format!("10.0.{}.{j}", rng.below(9))]}))
                    .collect::<Vec<_>>());
                let (kind, key) = inputs.insert_value(s).expect("slice decodes");
                changes.record(kind, &key);
                continue;
            }
            if routes.is_empty() {
                continue;
            }
            let i = rng.below(routes.len());
            let (kind, key) = key_of(&routes[i]);
            if present[i] && rng.below(3) == 0 {
                inputs.remove(kind, &key);
                present[i] = false;
            } else {
                let doc = if rng.below(4) == 0 {
                    routes[i].clone()
                } else {
                    mutate(&mut rng, &routes[i])
                };
                inputs.insert_value(doc).expect("mutated route decodes");
                present[i] = true;
            }
            changes.record(kind, &key);
        }
        check_equal(
            &format!("{name}: step {step}"),
            &mut t,
            &mut builder,
            &inputs,
            &changes,
        );
    }
}

#[test]
fn incremental_matches_full_on_golden_inputs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases = 0;
    for e in std::fs::read_dir(&dir).expect("golden dir").flatten() {
        let input = e.path().join("input.yaml");
        let Ok(text) = std::fs::read_to_string(&input) else {
            continue;
        };
        let docs = parse_documents(&text).expect("golden input parses");
        let name = e.file_name().to_string_lossy().to_string();
        for seed in 1..=4u64 {
            run_case(&name, docs.clone(), seed * 7919 + cases, 60);
        }
        cases += 1;
    }
    assert!(cases >= 10, "only {cases} golden cases found");
}

#[test]
fn incremental_matches_full_on_synthetic_config() {
    let mut docs = switchyard::synthetic::manifests(60, 4, 2);
    // Routes without hostnames and with a wildcard: every other virtual host falls back to them.
    let mut catch_all = switchyard::synthetic::route(1000, 4, 2, 0);
    catch_all["spec"]
        .as_object_mut()
        .map(|m| m.remove("hostnames"));
    docs.push(catch_all);
    let mut wildcard = switchyard::synthetic::route(1001, 4, 2, 0);
    wildcard["spec"]["hostnames"] = json!(["*.example.com"]);
    docs.push(wildcard);
    for seed in [3u64, 11, 29] {
        run_case("synthetic", docs.clone(), seed, 150);
    }
}
