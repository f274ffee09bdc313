//! Copies the Envoy protobuf descriptor set shipped inside the `envoy-types`
//! crate into OUT_DIR, so the binary can render Envoy resources as JSON/YAML
//! (the same canonical proto-JSON that Envoy's /config_dump prints).
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=Cargo.lock");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let meta = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .current_dir(&manifest_dir)
        .output()
        .expect("run cargo metadata");
    assert!(
        meta.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&meta.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&meta.stdout).expect("parse cargo metadata");
    let manifest = v["packages"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "envoy-types"))
        .and_then(|p| p["manifest_path"].as_str())
        .expect("envoy-types in cargo metadata");
    let src = PathBuf::from(manifest)
        .parent()
        .expect("crate dir")
        .join("src/generated/types.bin");
    std::fs::copy(&src, out.join("envoy_descriptors.bin"))
        .unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
}
