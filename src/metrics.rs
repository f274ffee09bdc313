//! A small Prometheus text-format registry.
//!
//! Control-plane events are rare (per config change, per xDS message), so one
//! mutex-guarded map is plenty; nothing here sits on Envoy's data path.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{LazyLock, Mutex};

const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Default, Clone)]
struct Hist {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

struct Family {
    help: &'static str,
    kind: Kind,
    values: BTreeMap<String, f64>,
    hists: BTreeMap<String, Hist>,
}

static REGISTRY: LazyLock<Mutex<BTreeMap<&'static str, Family>>> =
    LazyLock::new(|| Mutex::new(BTreeMap::new()));

fn label_key(labels: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(s, "{k}=\"{v}\"");
    }
    s
}

fn with_family(name: &'static str, help: &'static str, kind: Kind, f: impl FnOnce(&mut Family)) {
    let mut reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    let fam = reg.entry(name).or_insert_with(|| Family {
        help,
        kind,
        values: BTreeMap::new(),
        hists: BTreeMap::new(),
    });
    f(fam)
}

/// Adds `v` to a counter.
pub fn counter_add(name: &'static str, help: &'static str, labels: &[(&str, &str)], v: u64) {
    let key = label_key(labels);
    with_family(name, help, Kind::Counter, |f| {
        *f.values.entry(key).or_insert(0.0) += v as f64
    });
}

/// Sets a gauge.
pub fn gauge_set(name: &'static str, help: &'static str, labels: &[(&str, &str)], v: f64) {
    let key = label_key(labels);
    with_family(name, help, Kind::Gauge, |f| {
        f.values.insert(key, v);
    });
}

/// Removes one labelled series of a gauge (e.g. a disconnected node).
pub fn gauge_remove(name: &'static str, labels: &[(&str, &str)]) {
    let key = label_key(labels);
    let mut reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = reg.get_mut(name) {
        f.values.remove(&key);
    }
}

/// Records one observation (seconds) in a histogram.
pub fn observe(name: &'static str, help: &'static str, labels: &[(&str, &str)], secs: f64) {
    let key = label_key(labels);
    with_family(name, help, Kind::Histogram, |f| {
        let h = f.hists.entry(key).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    });
}

/// Current value of a counter or gauge series (tests and diagnostics).
pub fn value(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let key = label_key(labels);
    let reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    reg.get(name).and_then(|f| f.values.get(&key).copied())
}

/// Renders every family in the Prometheus text exposition format.
pub fn render() -> String {
    let reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = String::new();
    for (name, f) in reg.iter() {
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", f.help);
        for (labels, v) in &f.values {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {v}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
        for (labels, h) in &f.hists {
            let sep = if labels.is_empty() { "" } else { "," };
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                    h.buckets[i]
                );
            }
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.count);
            let lb = if labels.is_empty() {
                String::new()
            } else {
                format!("{{{labels}}}")
            };
            let _ = writeln!(
                out,
                "{name}_sum{lb} {}\n{name}_count{lb} {}",
                h.sum, h.count
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counter_gauge_histogram() {
        counter_add("sy_test_total", "test counter", &[("kind", "a\"b")], 2);
        counter_add("sy_test_total", "test counter", &[("kind", "a\"b")], 3);
        gauge_set("sy_test_gauge", "test gauge", &[], 1.5);
        observe("sy_test_seconds", "test hist", &[("stage", "x")], 0.003);
        let text = render();
        assert!(text.contains("# TYPE sy_test_total counter"));
        assert!(text.contains("sy_test_total{kind=\"a\\\"b\"} 5"));
        assert!(text.contains("sy_test_gauge 1.5"));
        assert!(text.contains("sy_test_seconds_bucket{stage=\"x\",le=\"0.0025\"} 0"));
        assert!(text.contains("sy_test_seconds_bucket{stage=\"x\",le=\"0.005\"} 1"));
        assert!(text.contains("sy_test_seconds_count{stage=\"x\"} 1"));
        assert_eq!(value("sy_test_total", &[("kind", "a\"b")]), Some(5.0));
    }
}
