//! One full translation and xDS build of a synthetic configuration, for
//! profilers that count instructions (the scale probe repeats each stage
//! and times it; this runs it once):
//! `valgrind --tool=callgrind --toggle-collect='*Translator*update*'
//! --toggle-collect='*Builder*build*' target/release/examples/translate_once 5000`
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    let inputs = switchyard::synthetic::inputs(n, 50, 2);
    let mut t = switchyard::translate::Translator::default();
    let mut b = switchyard::xds::build::Builder::default();
    let t0 = std::time::Instant::now();
    let up = t.update(&inputs, &switchyard::inputs::Changes::everything());
    let snap = b.build(&up.model);
    let resources: usize = snap.gateways.values().map(|s| s.len()).sum();
    println!(
        "{n} routes: {resources} resources in {:.2} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
}
