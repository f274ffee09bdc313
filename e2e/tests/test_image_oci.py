"""The controller image without a daemon (`make image-oci`, scripts/image-oci.py):
the Dockerfile is consistent with the repository (.dockerignore, Rust version,
Cargo.lock), its final stage is what the image config says (a changed
Dockerfile changes the image), and the image unpacked by umoci runs its
entrypoint as UID 65532 in its own root filesystem (chroot, no network), which
proves it holds every library the binary loads."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
UMOCI = ROOT / "e2e" / "bin" / "umoci"
SWITCHYARD = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "switchyard"

_spec = importlib.util.spec_from_file_location("image_oci", ROOT / "scripts" / "image-oci.py")
image_oci = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(image_oci)


def _version(v):
    return tuple(int(x) for x in v.split("."))


def test_dockerfile_is_consistent_with_the_repository():
    text = DOCKERFILE.read_text()
    # The builder's Rust is at least the manifest's rust-version.
    rust = re.search(r"^ARG RUST_VERSION=(\S+)$", text, re.M).group(1)
    cargo_toml = (ROOT / "Cargo.toml").read_text()
    needed = re.search(r'^rust-version = "([^"]+)"$', cargo_toml, re.M).group(1)
    assert _version(rust) >= _version(needed), (rust, needed)
    assert "FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder" in text
    # The builder builds the binary the final stage copies, against Cargo.lock.
    df = image_oci.parse_dockerfile(text)
    copy = df["copies"][0]
    runs = " ".join(df["builders"][copy["from"]])
    assert "cargo build --release --locked --bin switchyard" in runs, runs
    assert f"target/release/switchyard {copy['src']}" in runs, (runs, copy)
    # The build context leaves out build output, virtualenvs, cluster binaries and state.
    ignored = {l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines() if l and not l.startswith("#")}
    assert {".git", "target", ".venv", "e2e/bin", "e2e/run"} <= ignored, ignored
    # `--locked` succeeds with the committed Cargo.lock (resolution only, nothing is built).
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    if not Path(cargo).exists():
        pytest.skip("no cargo")
    r = subprocess.run([cargo, "metadata", "--locked", "--offline", "--format-version", "1"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_final_stage_is_parsed_and_unknown_instructions_refused():
    df = image_oci.parse_dockerfile(DOCKERFILE.read_text())
    assert df["base"] == "gcr.io/distroless/cc-debian12:nonroot"
    assert df["user"] == "65532:65532"
    assert df["expose"] == ["18000/tcp", "18001/tcp"]
    assert df["entrypoint"] == ["/usr/local/bin/switchyard"] and df["cmd"] == ["controller"]
    assert df["copies"] == [{"from": "builder", "src": "/out/switchyard", "dest": "/usr/local/bin/switchyard"}]
    # The allocator options (src/allocator.rs) travel in the image's environment.
    assert df["env"] == ["MIMALLOC_PURGE_DELAY=0", "MIMALLOC_ALLOW_THP=0"]
    changed = image_oci.parse_dockerfile(DOCKERFILE.read_text().replace('CMD ["controller"]', 'CMD ["fleet", "status"]')
                                         + 'ENV A=1 B="two words"\nEXPOSE 53/udp\n')
    assert changed["cmd"] == ["fleet", "status"] and changed["expose"][-1] == "53/udp"
    assert changed["env"] == df["env"] + ["A=1", "B=two words"]
    for bad in ("RUN echo hi", "CMD controller", "COPY . /app", "HEALTHCHECK NONE"):
        with pytest.raises(image_oci.DockerfileError):
            image_oci.parse_dockerfile(DOCKERFILE.read_text() + bad + "\n")


def _build(tmp_path, dockerfile, name):
    if os.geteuid() != 0:
        pytest.skip("image-oci needs root (layer file owners, chroot)")
    if not UMOCI.exists():
        pytest.skip("umoci not built (e2e/cluster/build.sh umoci)")
    if not SWITCHYARD.exists():
        pytest.skip("switchyard not built (make build)")
    layout = tmp_path / name
    r = subprocess.run(["python3", str(ROOT / "scripts" / "image-oci.py"), "--dockerfile", str(dockerfile),
                        "--binary", str(SWITCHYARD), "--layout", str(layout), "--tag", "test"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    bundle = tmp_path / f"{name}-bundle"
    r = subprocess.run([str(UMOCI), "unpack", "--image", f"{layout}:test", str(bundle)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return layout, bundle


def _image_config(layout):
    def blob(digest):
        return json.loads((layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_text())
    index = json.loads((layout / "index.json").read_text())
    manifest = blob(index["manifests"][0]["digest"])
    return blob(manifest["config"]["digest"]), manifest


def _run_in_rootfs(rootfs, *args):
    """`args` inside `rootfs` as UID/GID 65532 (no supplementary groups), with no network."""
    return subprocess.run(["unshare", "--mount", "--pid", "--net", "--fork", "chroot", "--userspec=65532:65532",
                           "--groups=65532", str(rootfs), *args], capture_output=True, text=True, timeout=30)


def test_image_runs_its_entrypoint_as_65532_in_its_own_rootfs(tmp_path):
    layout, bundle = _build(tmp_path, DOCKERFILE, "switchyard")
    config, manifest = _image_config(layout)
    df = image_oci.parse_dockerfile(DOCKERFILE.read_text())
    c = config["config"]
    assert c["User"] == df["user"] and c["Entrypoint"] == df["entrypoint"] and c["Cmd"] == df["cmd"]
    assert sorted(c["ExposedPorts"]) == sorted(df["expose"])
    assert config["os"] == "linux" and config["architecture"] == "amd64"
    assert len(manifest["layers"]) == 2  # the rebuilt base, the binary
    # The runtime config umoci derives: entrypoint + cmd as UID/GID 65532.
    spec = json.loads((bundle / "config.json").read_text())
    assert spec["process"]["args"] == df["entrypoint"] + df["cmd"]
    assert spec["process"]["user"]["uid"] == 65532 and spec["process"]["user"]["gid"] == 65532
    rootfs = bundle / "rootfs"
    # The binary's libraries (ldd) are in the image, from its packages.
    ldd = subprocess.run(["ldd", str(SWITCHYARD)], capture_output=True, text=True, check=True).stdout
    for lib in re.findall(r"^\s*(\S+\.so\S*) =>", ldd, re.M):
        assert list(rootfs.glob(f"lib*/**/{lib}")) or list(rootfs.glob(f"usr/lib*/**/{lib}")), lib
    status = {p.name for p in (rootfs / "var" / "lib" / "dpkg" / "status.d").iterdir()}
    assert {"libc6", "libgcc-s1", "ca-certificates", "tzdata"} <= status, status
    assert "nonroot:x:65532:65532:" in (rootfs / "etc" / "passwd").read_text()
    assert (rootfs / "etc" / "ssl" / "certs" / "ca-certificates.crt").read_text().count("BEGIN CERTIFICATE") > 100
    assert not (rootfs / "bin" / "sh").exists(), "distroless: no shell"
    r = _run_in_rootfs(rootfs, *df["entrypoint"], "--version")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"switchyard \d+\.\d+\.\d+\S* \(commit \S+\)\n", r.stdout), r.stdout
    # The same run without a library the binary needs fails: the check above is not vacuous.
    (rootfs / "lib" / "x86_64-linux-gnu" / "libgcc_s.so.1").unlink()
    r = _run_in_rootfs(rootfs, *df["entrypoint"], "--version")
    assert r.returncode != 0 and "libgcc_s.so.1" in r.stderr, (r.returncode, r.stderr)


def test_a_changed_dockerfile_changes_the_image_config(tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(DOCKERFILE.read_text().replace("EXPOSE 18000 18001", "EXPOSE 18000 18001 18002")
                          .replace('CMD ["controller"]', 'CMD ["fleet", "status"]').replace("USER 65532:65532",
                                                                                        "USER 65532"))
    layout, bundle = _build(tmp_path, dockerfile, "changed")
    c = _image_config(layout)[0]["config"]
    assert "18002/tcp" in c["ExposedPorts"] and c["Cmd"] == ["fleet", "status"] and c["User"] == "65532"
    spec = json.loads((bundle / "config.json").read_text())
    assert spec["process"]["args"] == ["/usr/local/bin/switchyard", "fleet", "status"]
