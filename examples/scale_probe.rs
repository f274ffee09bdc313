//! Quick timing of the pure stages on synthetic configurations:
//! `cargo run --release --example scale_probe [ROUTES]`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let sizes: Vec<usize> = match std::env::args().nth(1).and_then(|s| s.parse().ok()) {
        Some(n) => vec![n],
        None => vec![100, 1000, 5000, 10000],
    };
    for n in sizes {
        let inputs = switchyard::synthetic::inputs(n, 50, 2);
        let mut best = (f64::MAX, f64::MAX);
        let mut bytes = 0;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            let out = switchyard::translate::translate(&inputs);
            let t1 = t.elapsed().as_secs_f64() * 1e3;
            let snap = switchyard::xds::build::build(&out.model);
            let t2 = t.elapsed().as_secs_f64() * 1e3 - t1;
            best = (best.0.min(t1), best.1.min(t2));
            bytes = snap
                .gateways
                .values()
                .flat_map(|s| s.by_type.values())
                .flat_map(|m| m.values())
                .map(|r| r.any.value.len())
                .sum();
        }
        println!("{n:>6} routes: translate {:8.2} ms  build {:8.2} ms  total {:8.2} ms  xds {bytes} bytes", best.0, best.1, best.0 + best.1);
    }
}
