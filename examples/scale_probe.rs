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
        // The controller's full path: a translator and builder that keep
        // their state (a full translation follows e.g. a Gateway change).
        let mut t = switchyard::translate::Translator::default();
        let mut b = switchyard::xds::build::Builder::default();
        let mut best = (f64::MAX, f64::MAX);
        let mut bytes = 0;
        // The first run: a fresh translator and builder (start-up).
        let mut first = None;
        for _ in 0..5 {
            let t0 = std::time::Instant::now();
            let up = t.update(&inputs, &switchyard::inputs::Changes::everything());
            let t1 = t0.elapsed().as_secs_f64() * 1e3;
            let snap = b.build(&up.model);
            let t2 = t0.elapsed().as_secs_f64() * 1e3 - t1;
            first.get_or_insert(t1 + t2);
            best = (best.0.min(t1), best.1.min(t2));
            bytes = snap
                .gateways
                .values()
                .flat_map(|s| s.by_type.values())
                .flat_map(|m| m.values())
                .map(|r| r.any.value.len())
                .sum();
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // One route edited, incrementally (best of 20 alternating edits).
        let mut inputs = inputs;
        let mut t = switchyard::translate::Translator::default();
        let mut b = switchyard::xds::build::Builder::default();
        b.build(
            &t.update(&inputs, &switchyard::inputs::Changes::everything())
                .model,
        );
        let mut inc = f64::MAX;
        for i in 0..20u32 {
            let m = switchyard::synthetic::route(7, 50, 2, i % 2);
            let (kind, key) = inputs.insert_value(m).expect("route decodes");
            let mut ch = switchyard::inputs::Changes::default();
            ch.record(kind, &key);
            let t0 = std::time::Instant::now();
            let up = t.update(&inputs, &ch);
            let snap = b.build(&up.model);
            inc = inc.min(t0.elapsed().as_secs_f64() * 1e3);
            drop(snap);
        }
        println!("{n:>6} routes: translate {:8.2} ms  build {:8.2} ms  total {:8.2} ms  incremental {inc:6.3} ms  xds {bytes} bytes  first {:.2} ms", best.0, best.1, best.0 + best.1, first.unwrap_or(0.0));
    }
}
