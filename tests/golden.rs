//! Golden tests of the pure pipeline: `tests/golden/<case>/input.yaml` →
//! `xds.yaml` (Envoy resources) + `status.yaml` (Gateway API status).
//!
//! Regenerate on purpose with `make golden` (UPDATE_GOLDEN=1) and review the diff.

use std::path::{Path, PathBuf};

use switchyard::inputs::{Inputs, DEFAULT_CONTROLLER_NAME};
use switchyard::pipeline;
use switchyard::provider::addresses::AddressPool;
use switchyard::provider::file::parse_documents;

fn render(input: &Path) -> (String, String) {
    let text = std::fs::read_to_string(input).expect("read input");
    let docs =
        parse_documents(&text).unwrap_or_else(|(l, e)| panic!("{}:{l:?}: {e}", input.display()));
    let mut inputs = Inputs::new(DEFAULT_CONTROLLER_NAME);
    for d in docs {
        inputs
            .insert_value(d)
            .unwrap_or_else(|e| panic!("{}: {e}", input.display()));
    }
    // A case that depends on certificate expiry fixes "now" (unix seconds)
    // in a `now` file next to its input; the others do not check expiry.
    if let Ok(now) = std::fs::read_to_string(input.with_file_name("now")) {
        inputs.now = Some(now.trim().parse().expect("now: unix seconds"));
    }
    AddressPool::parse("127.0.0.0/24")
        .expect("pool")
        .assign(&mut inputs);
    let (out, snap) = pipeline::run(&inputs);
    let xds = pipeline::to_yaml(&pipeline::xds_document(&snap).expect("render xds"));
    let status = pipeline::to_yaml(&pipeline::status_documents(&out));
    (xds, status)
}

fn check(path: &Path, actual: &str, update: bool, failures: &mut Vec<String>) {
    if update {
        std::fs::write(path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    if expected != actual {
        let mut diff = String::new();
        for (i, (e, a)) in expected.lines().zip(actual.lines()).enumerate() {
            if e != a {
                diff = format!(
                    "first difference at line {}:\n  expected: {e}\n  actual:   {a}",
                    i + 1
                );
                break;
            }
        }
        if diff.is_empty() {
            diff = format!(
                "length differs: expected {} lines, got {}",
                expected.lines().count(),
                actual.lines().count()
            );
        }
        failures.push(format!("{}: {diff}", path.display()));
    }
}

#[test]
fn golden_cases() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/golden")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("input.yaml").is_file())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 8,
        "golden cases missing: found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let (xds, status) = render(&case.join("input.yaml"));
        check(&case.join("xds.yaml"), &xds, update, &mut failures);
        check(&case.join("status.yaml"), &status, update, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "golden mismatches (run `make golden` if intended):\n{}",
        failures.join("\n")
    );
}
