//! The live heap of the controller's pure state at N synthetic routes, for
//! a heap profiler (system allocator, so `heaptrack` sees every
//! allocation): `heaptrack target/release/examples/heap_probe 5000 STAGE`,
//! STAGE `decoded` (exits holding the decoded inputs) or `translated`
//! (exits holding the inputs and an engine after two full translations).
//! What the process still holds at exit is what `heaptrack_print` reports
//! as leaked.
fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(5000);
    let stage = args.next().unwrap_or_else(|| "translated".into());
    let inputs = switchyard::synthetic::inputs(n, 50, 2);
    if stage == "decoded" {
        std::process::exit(0);
    }
    let mut engine = switchyard::engine::Engine::new(switchyard::xds::cache::Cache::new());
    for _ in 0..2 {
        let (up, snap) = engine.translate(&inputs, &switchyard::inputs::Changes::everything());
        drop((up, snap));
        // The index of the previous translation is freed on another thread.
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::process::exit(if inputs.object_count() > 0 { 0 } else { 1 });
}
