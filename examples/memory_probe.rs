//! Resident memory of the controller's pure state at N synthetic routes,
//! stage by stage (decoded inputs, then one full translation through the
//! engine: translator, builder, xDS cache, NACK quarantine):
//! `cargo run --release --example memory_probe [ROUTES]`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    let start = rss_mib();
    let inputs = switchyard::synthetic::inputs(n, 50, 2);
    let decoded = rss_mib();
    let mut engine = switchyard::engine::Engine::new(switchyard::xds::cache::Cache::new());
    let t0 = std::time::Instant::now();
    let (up, snap) = engine.translate(&inputs, &switchyard::inputs::Changes::everything());
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    drop((up, snap));
    // The index of the previous translation is freed on another thread.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let translated = rss_mib();
    let t0 = std::time::Instant::now();
    let (up, snap) = engine.translate(&inputs, &switchyard::inputs::Changes::everything());
    let ms2 = t0.elapsed().as_secs_f64() * 1e3;
    drop((up, snap));
    std::thread::sleep(std::time::Duration::from_millis(200));
    let again = rss_mib();
    println!(
        "{n} routes: RSS {start:.1} MiB at start, {decoded:.1} decoded, {translated:.1} after a full translation ({ms:.1} ms), {again:.1} after a second ({ms2:.1} ms)"
    );
}
