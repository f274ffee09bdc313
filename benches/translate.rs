//! Criterion microbenchmarks of the pure stages (issue #5):
//! `cargo bench --bench translate` (about two minutes on two cores).
//!
//! - `translate/N`: Gateway API objects → IR (`translate::translate`).
//! - `build/N`: IR → Envoy resources (`xds::build::build`).
//! - `translate_build/N`: both, what one full re-translation costs.
//! - `edit_one_route/5000`: one HTTPRoute replaced in the `Inputs`, then an
//!   incremental translate + build (`Translator::update` with that one
//!   change, `Builder` reusing unchanged encodings), as the controller does;
//!   the "incremental ≤ 1 ms" target is measured here.
//! - `decode/1000_routes`: `Inputs::insert_value` of 1,000 HTTPRoute manifests.
//!
//! Inputs come from `switchyard::synthetic` (50 namespaces, 2 Gateways).
use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, BenchmarkId, Criterion,
    SamplingMode, Throughput,
};
use switchyard::inputs::{Changes, Inputs};
use switchyard::synthetic;
use switchyard::translate::Translator;
use switchyard::xds::build::Builder;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SIZES: [usize; 3] = [100, 1_000, 5_000];
const NAMESPACES: usize = 50;
const GATEWAYS: usize = 2;

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .nresamples(10_000)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

/// Flat sampling: the 5,000-route cases take 50-150 ms an iteration, and
/// criterion's default linear sampling would need 55 of them per benchmark.
fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sampling_mode(SamplingMode::Flat);
    g
}

fn stages(c: &mut Criterion) {
    let inputs: Vec<(usize, Inputs)> = SIZES
        .iter()
        .map(|&n| (n, synthetic::inputs(n, NAMESPACES, GATEWAYS)))
        .collect();

    let mut g = group(c, "translate");
    for (n, inputs) in &inputs {
        g.throughput(Throughput::Elements(*n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), inputs, |b, i| {
            b.iter(|| switchyard::translate::translate(black_box(i)))
        });
    }
    g.finish();

    let mut g = group(c, "build");
    for (n, inputs) in &inputs {
        let out = switchyard::translate::translate(inputs);
        g.throughput(Throughput::Elements(*n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &out.model, |b, m| {
            b.iter(|| switchyard::xds::build::build(black_box(m)))
        });
    }
    g.finish();

    let mut g = group(c, "translate_build");
    for (n, inputs) in &inputs {
        g.throughput(Throughput::Elements(*n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), inputs, |b, i| {
            b.iter(|| {
                let out = switchyard::translate::translate(black_box(i));
                switchyard::xds::build::build(&out.model)
            })
        });
    }
    g.finish();
}

fn edit_one_route(c: &mut Criterion) {
    let n = 5_000;
    let mut inputs = synthetic::inputs(n, NAMESPACES, GATEWAYS);
    // Alternates the weight of one route so every iteration is a real change.
    let variants = [
        synthetic::route(7, NAMESPACES, GATEWAYS, 1),
        synthetic::route(7, NAMESPACES, GATEWAYS, 0),
    ];
    let mut next = 0usize;
    // The controller's path: a translator and builder that keep their work.
    let mut translator = Translator::default();
    let mut builder = Builder::default();
    builder.build(&translator.update(&inputs, &Changes::everything()).model);
    let mut g = group(c, "edit_one_route");
    g.bench_function(BenchmarkId::from_parameter(n), |b| {
        b.iter_batched(
            || {
                next ^= 1;
                variants[next].clone()
            },
            |manifest| {
                let (kind, key) = inputs
                    .insert_value(manifest)
                    .expect("synthetic route decodes");
                let mut changes = Changes::default();
                changes.record(kind, &key);
                let up = translator.update(&inputs, &changes);
                builder.build(&up.model)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn decode(c: &mut Criterion) {
    let routes: Vec<serde_json::Value> = synthetic::manifests(1_000, NAMESPACES, GATEWAYS)
        .into_iter()
        .filter(|m| m.get("kind").and_then(|k| k.as_str()) == Some("HTTPRoute"))
        .collect();
    assert_eq!(routes.len(), 1_000);
    let mut g = group(c, "decode");
    g.throughput(Throughput::Elements(routes.len() as u64));
    g.bench_function("1000_routes", |b| {
        b.iter_batched(
            || routes.clone(),
            |routes| {
                let mut inputs = Inputs::new(switchyard::inputs::DEFAULT_CONTROLLER_NAME);
                for m in routes {
                    inputs.insert_value(m).expect("synthetic route decodes");
                }
                inputs
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = stages, edit_one_route, decode
}
criterion_main!(benches);
