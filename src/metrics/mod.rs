//! A small Prometheus text-format registry.
//!
//! Control-plane events are rare (per config change, per xDS message), so one
//! mutex-guarded map is plenty; nothing here sits on Envoy's data path.
//!
//! Every metric is declared once in [`catalogue`] as a typed handle
//! ([`Counter`], [`Gauge`], [`Histogram`]) whose label count is part of its
//! type: `catalogue::XDS_NACKS.inc(["lds"])` compiles, a wrong number of
//! label values does not. The catalogue's families are registered when the
//! registry is first touched, so `/metrics` shows their `# HELP`/`# TYPE`
//! lines from process start, before any sample. The free functions below
//! are the engine under the handles (and stay for code not yet converted).

pub mod catalogue;
pub mod refgrants;
pub mod status;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{LazyLock, Mutex};

const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// This binary's version (Cargo.toml).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit it was built from (build.rs; "unknown" outside a checkout).
pub const COMMIT: &str = env!("SWITCHYARD_GIT_COMMIT");

/// Sets `switchyard_build_info{version,commit}` to 1.
pub fn record_build_info() {
    catalogue::BUILD_INFO.set([VERSION, COMMIT], 1.0);
}

/// The Prometheus type of a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
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

/// One metric of the catalogue: name, help, type and label names.
#[derive(Debug)]
pub struct Desc {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

static REGISTRY: LazyLock<Mutex<BTreeMap<&'static str, Family>>> = LazyLock::new(|| {
    let mut reg = BTreeMap::new();
    for d in catalogue::ALL {
        reg.insert(
            d.name,
            Family {
                help: d.help,
                kind: d.kind,
                values: BTreeMap::new(),
                hists: BTreeMap::new(),
            },
        );
    }
    Mutex::new(reg)
});

/// The `name="value",...` key of one series: label names paired with values.
fn typed_key(names: &[&str], values: &[&str]) -> String {
    let pairs: Vec<(&str, &str)> = names.iter().copied().zip(values.iter().copied()).collect();
    label_key(&pairs)
}

/// A counter with `N` labels.
pub struct Counter<const N: usize>(pub Desc);

impl<const N: usize> Counter<N> {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str; N],
    ) -> Self {
        Counter(Desc {
            name,
            help,
            kind: Kind::Counter,
            labels,
        })
    }
    pub fn inc(&self, values: [&str; N]) {
        self.add(values, 1)
    }
    pub fn add(&self, values: [&str; N], v: u64) {
        let key = typed_key(self.0.labels, &values);
        with_family(self.0.name, self.0.help, Kind::Counter, |f| {
            *f.values.entry(key).or_insert(0.0) += v as f64
        });
    }
    /// Current value (0 when the series has no sample yet).
    pub fn get(&self, values: [&str; N]) -> f64 {
        get_key(self.0.name, &typed_key(self.0.labels, &values)).unwrap_or(0.0)
    }
}

/// A gauge with `N` labels.
pub struct Gauge<const N: usize>(pub Desc);

impl<const N: usize> Gauge<N> {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str; N],
    ) -> Self {
        Gauge(Desc {
            name,
            help,
            kind: Kind::Gauge,
            labels,
        })
    }
    pub fn set(&self, values: [&str; N], v: f64) {
        let key = typed_key(self.0.labels, &values);
        with_family(self.0.name, self.0.help, Kind::Gauge, |f| {
            f.values.insert(key, v);
        });
    }
    /// Removes one series (a deleted object must not leave a stale series).
    pub fn remove(&self, values: [&str; N]) {
        remove_key(self.0.name, &typed_key(self.0.labels, &values));
    }
    /// Applies removals then sets, under one lock.
    pub fn update<'a>(
        &self,
        remove: impl IntoIterator<Item = [&'a str; N]>,
        set: impl IntoIterator<Item = ([&'a str; N], f64)>,
    ) {
        let labels = self.0.labels;
        with_family(self.0.name, self.0.help, Kind::Gauge, |f| {
            for v in remove {
                f.values.remove(&typed_key(labels, &v));
            }
            for (v, x) in set {
                f.values.insert(typed_key(labels, &v), x);
            }
        });
    }
    pub fn get(&self, values: [&str; N]) -> Option<f64> {
        get_key(self.0.name, &typed_key(self.0.labels, &values))
    }
    /// How many series the gauge has (tests: cardinality stays bounded).
    pub fn series(&self) -> usize {
        let reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
        reg.get(self.0.name).map_or(0, |f| f.values.len())
    }
}

/// A histogram (seconds, [`BUCKETS`]) with `N` labels.
pub struct Histogram<const N: usize>(pub Desc);

impl<const N: usize> Histogram<N> {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str; N],
    ) -> Self {
        Histogram(Desc {
            name,
            help,
            kind: Kind::Histogram,
            labels,
        })
    }
    pub fn observe(&self, values: [&str; N], secs: f64) {
        let key = typed_key(self.0.labels, &values);
        observe_key(self.0.name, self.0.help, key, secs);
    }
}

fn get_key(name: &str, key: &str) -> Option<f64> {
    let reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    reg.get(name).and_then(|f| f.values.get(key).copied())
}

fn remove_key(name: &str, key: &str) {
    let mut reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = reg.get_mut(name) {
        f.values.remove(key);
    }
}

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
    remove_key(name, &label_key(labels));
}

/// Records one observation (seconds) in a histogram.
pub fn observe(name: &'static str, help: &'static str, labels: &[(&str, &str)], secs: f64) {
    observe_key(name, help, label_key(labels), secs)
}

fn observe_key(name: &'static str, help: &'static str, key: String, secs: f64) {
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
    get_key(name, &label_key(labels))
}

/// HELP text escaping of the exposition format: backslash and newline.
fn escape_help(h: &str) -> String {
    h.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Renders every family in the Prometheus text exposition format.
pub fn render() -> String {
    let reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = String::new();
    for (name, f) in reg.iter() {
        let kind = f.kind.as_str();
        let _ = writeln!(
            out,
            "# HELP {name} {}\n# TYPE {name} {kind}",
            escape_help(f.help)
        );
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

    static T_COUNTER: Counter<2> =
        Counter::new("sy_typed_total", "typed \\ help\nline two", &["a", "b"]);
    static T_GAUGE: Gauge<1> = Gauge::new("sy_typed_gauge", "typed gauge", &["x"]);
    static T_HIST: Histogram<0> = Histogram::new("sy_typed_seconds", "typed hist", &[]);

    #[test]
    fn typed_handles_render_and_remove() {
        T_COUNTER.inc(["1", "2"]);
        T_COUNTER.add(["1", "2"], 2);
        assert_eq!(T_COUNTER.get(["1", "2"]), 3.0);
        T_GAUGE.set(["p"], 4.0);
        T_GAUGE.set(["q"], 5.0);
        T_HIST.observe([], 0.2);
        let text = render();
        assert!(
            text.contains(
                "# HELP sy_typed_total typed \\\\ help\\nline two\n# TYPE sy_typed_total counter\n"
            ),
            "{text}"
        );
        assert!(text.contains("sy_typed_total{a=\"1\",b=\"2\"} 3\n"));
        assert!(text.contains("sy_typed_gauge{x=\"p\"} 4\n"));
        assert!(text.contains("sy_typed_seconds_bucket{le=\"0.25\"} 1\n"));
        assert!(text.contains("sy_typed_seconds_count 1\n"));
        T_GAUGE.update([["p"]], [(["r"], 1.0)]);
        assert_eq!(T_GAUGE.get(["p"]), None);
        assert_eq!(T_GAUGE.series(), 2);
        T_GAUGE.remove(["q"]);
        let text = render();
        assert!(!text.contains("sy_typed_gauge{x=\"q\"}"));
        assert!(text.contains("sy_typed_gauge{x=\"r\"} 1\n"));
    }

    /// Every catalogue metric has its HELP and TYPE lines before any sample.
    #[test]
    fn catalogue_declared_from_start() {
        let text = render();
        for d in catalogue::ALL {
            assert!(text.contains(&format!("# HELP {} ", d.name)), "{}", d.name);
            assert!(
                text.contains(&format!("# TYPE {} {}\n", d.name, d.kind.as_str())),
                "{}",
                d.name
            );
        }
    }
}
