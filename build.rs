//! Copies the Envoy protobuf descriptor set shipped inside the `envoy-types`
//! crate into OUT_DIR, so the binary can render Envoy resources as JSON/YAML
//! (the same canonical proto-JSON that Envoy's /config_dump prints).
//!
//! The crate's sources are on disk before any build script runs (cargo
//! downloads every needed package first); we find them from Cargo.lock's
//! version in the registry source directories, and fall back to
//! `cargo metadata` for other layouts (vendoring, path overrides).
//!
//! It also compiles the admin API (proto/, see [`compile_admin_proto`]).
use std::path::{Path, PathBuf};
use std::process::Command;

const REL: &str = "src/generated/types.bin";

fn locked_version(manifest_dir: &Path) -> Option<String> {
    let lock = std::fs::read_to_string(manifest_dir.join("Cargo.lock")).ok()?;
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l.trim() == "name = \"envoy-types\"" {
            let v = lines.next()?.trim();
            return v
                .strip_prefix("version = \"")?
                .strip_suffix('"')
                .map(str::to_string);
        }
    }
    None
}

fn from_registry(version: &str) -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    for entry in std::fs::read_dir(home.join("registry/src")).ok()?.flatten() {
        let p = entry
            .path()
            .join(format!("envoy-types-{version}"))
            .join(REL);
        if p.is_file() {
            return Some(p);
        }
    }
    None
}

fn from_metadata(manifest_dir: &Path) -> Option<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(manifest_dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let manifest = v["packages"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == "envoy-types")?["manifest_path"]
        .as_str()?
        .to_string();
    Some(PathBuf::from(manifest).parent()?.join(REL))
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=Cargo.lock");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let src = locked_version(&manifest_dir)
        .and_then(|v| from_registry(&v))
        .or_else(|| from_metadata(&manifest_dir))
        .expect(
            "cannot find the envoy-types crate sources (descriptor set src/generated/types.bin)",
        );
    std::fs::copy(&src, out.join("envoy_descriptors.bin"))
        .unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
    git_commit(&manifest_dir);
    compile_admin_proto(&manifest_dir);
}

/// `SWITCHYARD_GIT_COMMIT`: the short commit of the checkout being built
/// (`switchyard --version`, `switchyard_build_info`), "unknown" outside a git
/// checkout. Rebuilt when HEAD moves (a commit, a checkout).
fn git_commit(manifest_dir: &Path) {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(manifest_dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SWITCHYARD_GIT_COMMIT={commit}");
    // In a worktree .git is a file: ask git where HEAD and the branch ref live.
    for path in [
        git(&["rev-parse", "--git-path", "HEAD"]),
        git(&["rev-parse", "--symbolic-full-name", "HEAD"])
            .and_then(|r| git(&["rev-parse", "--git-path", &r])),
    ]
    .into_iter()
    .flatten()
    .chain(git(&["rev-parse", "--git-path", "packed-refs"]))
    {
        // A path that does not exist would make cargo rerun this on every build.
        let path = manifest_dir.join(path);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

/// Compiles `proto/switchyard/admin/v1/admin.proto` (the gRPC admin API)
/// with `protox`, a protobuf compiler written in Rust, so no system `protoc`
/// is needed; tonic's generator writes `switchyard.admin.v1.rs` to OUT_DIR.
fn compile_admin_proto(manifest_dir: &Path) {
    const PROTO: &str = "proto/switchyard/admin/v1/admin.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let includes = [manifest_dir.join("proto")];
    let fds = protox::compile([manifest_dir.join(PROTO)], includes)
        .unwrap_or_else(|e| panic!("compiling {PROTO}: {e}"));
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)
        .unwrap_or_else(|e| panic!("generating code for {PROTO}: {e}"));
}
