#!/usr/bin/env python3
"""Builds the controller image as an OCI image layout without a container
daemon (`make image-oci`): what `docker build -f Dockerfile .` produces, made
with umoci (built from the Go module proxy into e2e/bin by
`e2e/cluster/build.sh umoci`).

What comes from where:
- The Dockerfile's final stage is parsed: its base image (FROM), the binary
  the builder stage installs (COPY --from=<builder> <src> <dest>), USER,
  EXPOSE, ENV, WORKDIR, ENTRYPOINT, CMD. A change to any of them changes the
  image; an instruction this script does not know fails the build (it is
  never skipped).
- What the builder stage's `cargo build --release --locked --bin switchyard`
  produces is the binary given with --binary (`make image-oci` gives
  target/release/switchyard from `make build`: same sources and Cargo.lock,
  built on this machine).
- The base image is rebuilt from Debian packages: no container registry is
  reachable here. BASES says, for each base image the Dockerfile may name,
  which packages make it and what its image config sets (for
  gcr.io/distroless/cc-debian12:nonroot: glibc, libgcc, CA certificates,
  tzdata, netbase, base-files, the nonroot user 65532). The packages are the
  current ones of this machine's apt sources (`apt-get download`, unpacked
  with `dpkg-deb -x`, no maintainer scripts run), and their names and
  versions are recorded in /var/lib/dpkg/status.d/ inside the image, as
  distroless does, so scanners see them.

Every file gets the same timestamp (SOURCE_DATE_EPOCH, default: the commit
time of HEAD) and layers are written as sorted tar archives with numeric
owners, so the same inputs give the same layer digests.
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Base images the Dockerfile may name, rebuilt from Debian packages. The
# config values are those of the upstream image (`crane config
# gcr.io/distroless/cc-debian12:nonroot`).
BASES = {
    "gcr.io/distroless/cc-debian12:nonroot": {
        "debian": "12",
        "packages": ["base-files", "netbase", "tzdata", "ca-certificates", "libc6", "libgcc-s1"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
        "user": "65532",
        "workdir": "/home/nonroot",
        "passwd": ["root:x:0:0:root:/root:/sbin/nologin",
                   "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin",
                   "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin"],
        "group": ["root:x:0:", "nobody:x:65534:", "tty:x:5:", "staff:x:50:", "nonroot:x:65532:"],
        # (path, mode, uid) of directories the image has beyond the packages'.
        "dirs": [("tmp", 0o1777, 0), ("root", 0o700, 0), ("home/nonroot", 0o700, 65532)],
    },
}

# Package contents an image without a shell or package manager never uses.
PRUNE = ["usr/share/man", "usr/share/info", "usr/share/lintian", "usr/share/locale", "etc/init.d",
         "etc/profile.d", "etc/update-motd.d", "usr/sbin/update-ca-certificates", "usr/sbin/tzconfig"]


class DockerfileError(Exception):
    pass


def parse_dockerfile(text):
    """The final stage of a Dockerfile: {base, copies, user, expose, env,
    workdir, entrypoint, cmd}, plus the builder stages' names. ARGs declared
    before the first FROM are substituted in FROM lines."""
    lines, cur = [], ""
    for raw in text.splitlines():
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        lines.append(cur + s)
        cur = ""
    if cur:
        lines.append(cur)
    args, stages = {}, []
    for line in lines:
        word, _, rest = line.partition(" ")
        word, rest = word.upper(), rest.strip()
        if word == "ARG" and not stages:
            k, _, v = rest.partition("=")
            args[k.strip()] = v.strip()
        elif word == "FROM":
            for k, v in args.items():
                rest = rest.replace("${" + k + "}", v).replace("$" + k, v)
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append({"base": parts[0], "name": name, "lines": []})
        elif not stages:
            raise DockerfileError(f"{word} before the first FROM")
        else:
            stages[-1]["lines"].append((word, rest, line))
    if not stages:
        raise DockerfileError("no FROM")
    final = {"base": stages[-1]["base"], "copies": [], "user": None, "expose": [], "env": [], "workdir": None,
             "entrypoint": None, "cmd": None}
    for word, rest, line in stages[-1]["lines"]:
        if word in ("ENTRYPOINT", "CMD"):
            try:
                value = json.loads(rest)
            except ValueError:
                raise DockerfileError(f"{word} must be in exec form (a JSON array): {rest}")
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise DockerfileError(f"{word} must be a JSON array of strings: {rest}")
            final[word.lower()] = value
        elif word == "USER":
            final["user"] = rest
        elif word == "EXPOSE":
            final["expose"] += [p if "/" in p else p + "/tcp" for p in rest.split()]
        elif word == "ENV":
            words = shlex.split(rest)
            if words and "=" in words[0]:
                final["env"] += [w if "=" in w else f"{w}=" for w in words]
            else:
                k, _, v = rest.partition(" ")
                final["env"].append(f"{k}={' '.join(shlex.split(v))}")
        elif word == "WORKDIR":
            final["workdir"] = rest
        elif word == "COPY":
            parts = rest.split()
            flags = [p for p in parts if p.startswith("--")]
            paths = [p for p in parts if not p.startswith("--")]
            src_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            if src_stage is None or len(paths) != 2 or set(flags) - {f"--from={src_stage}"}:
                raise DockerfileError(
                    f"only `COPY --from=<stage> <file> <dest>` is supported in the final stage: {rest}")
            final["copies"].append({"from": src_stage, "src": paths[0], "dest": paths[1]})
        else:
            raise DockerfileError(f"instruction {word} in the final stage is not supported by this builder: {line}")
    final["builders"] = {s["name"]: [rest for word, rest, _ in s["lines"] if word == "RUN"]
                         for s in stages[:-1] if s["name"]}
    return final


def run(*cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"image-oci: {' '.join(map(str, cmd))} failed:\n{r.stdout}{r.stderr}")
    return r.stdout


def download(packages, cache):
    """The .deb files of `packages` (apt-get download into `cache`; an already
    downloaded file of the candidate version is reused)."""
    cache.mkdir(parents=True, exist_ok=True)
    out = []

    def candidate(pkg):
        policy = run("apt-cache", "policy", pkg)
        return policy.split("Candidate:")[1].split()[0] if "Candidate:" in policy else "(none)"

    if any(candidate(p) == "(none)" for p in packages):
        # A fresh machine (or container) without package lists.
        run("apt-get", "update", "-qq")
    for pkg in packages:
        version = candidate(pkg)
        if version == "(none)":
            sys.exit(f"image-oci: no candidate version of {pkg} in this machine's apt sources")
        found = [p for p in cache.glob(f"{pkg}_*.deb")
                 if run("dpkg-deb", "-f", p, "Version").strip() == version]
        if not found:
            run("apt-get", "download", f"{pkg}={version}", cwd=cache)
            found = [p for p in cache.glob(f"{pkg}_*.deb") if run("dpkg-deb", "-f", p, "Version").strip() == version]
        if not found:
            sys.exit(f"image-oci: apt-get download {pkg}={version} left no .deb in {cache}")
        out.append(found[0])
    return out


def base_rootfs(recipe, debs, rootfs):
    rootfs.mkdir()
    status = rootfs / "var" / "lib" / "dpkg" / "status.d"
    status.mkdir(parents=True)
    for deb in debs:
        run("dpkg-deb", "-x", deb, rootfs)
        control = run("dpkg-deb", "-f", deb, "Package", "Version", "Architecture", "Source", "Maintainer")
        (status / run("dpkg-deb", "-f", deb, "Package").strip()).write_text(control)
    for rel in PRUNE:
        p = rootfs / rel
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
    # What ca-certificates' maintainer script (update-ca-certificates) would make.
    certs = sorted((rootfs / "usr" / "share" / "ca-certificates").rglob("*.crt"))
    if not certs:
        sys.exit("image-oci: the ca-certificates package holds no certificates")
    bundle = rootfs / "etc" / "ssl" / "certs" / "ca-certificates.crt"
    bundle.parent.mkdir(parents=True, exist_ok=True)
    bundle.write_text("".join(c.read_text() for c in certs))
    (rootfs / "etc" / "passwd").write_text("\n".join(recipe["passwd"]) + "\n")
    (rootfs / "etc" / "group").write_text("\n".join(recipe["group"]) + "\n")
    (rootfs / "etc" / "nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files dns\n")
    for rel, mode, uid in recipe["dirs"]:
        d = rootfs / rel
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, mode)
        os.chown(d, uid, uid)


def layer_tar(tree, out, epoch):
    """`tree` as an uncompressed, sorted tar with one timestamp and numeric owners."""
    run("tar", "--create", "--file", out, "--directory", tree, "--sort=name", f"--mtime=@{epoch}",
        "--numeric-owner", "--format=posix", "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
        ".")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dockerfile", default=str(ROOT / "Dockerfile"))
    ap.add_argument("--binary", required=True, help="what the builder stage produces (target/release/switchyard)")
    ap.add_argument("--layout", required=True, help="OCI image layout directory to (re)create")
    ap.add_argument("--tag", default="latest")
    ap.add_argument("--umoci", default=str(ROOT / "e2e" / "bin" / "umoci"))
    ap.add_argument("--cache", default=os.path.join(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"),
                                                    "switchyard", "debs"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("image-oci: run as root (the layers need files owned by root and by 65532)")
    try:
        df = parse_dockerfile(Path(a.dockerfile).read_text())
    except DockerfileError as e:
        sys.exit(f"image-oci: {a.dockerfile}: {e}")
    recipe = BASES.get(df["base"])
    if recipe is None:
        sys.exit(f"image-oci: {a.dockerfile}: no daemonless recipe for the base image {df['base']} "
                 f"(known: {', '.join(BASES)}); add one to scripts/image-oci.py")
    if len(df["copies"]) != 1 or df["copies"][0]["from"] not in df["builders"]:
        sys.exit(f"image-oci: {a.dockerfile}: the final stage must copy exactly one file from the builder stage "
                 f"(found {df['copies']})")
    if not df["entrypoint"]:
        sys.exit(f"image-oci: {a.dockerfile}: no ENTRYPOINT in the final stage")
    binary = Path(a.binary)
    if not os.access(binary, os.X_OK):
        sys.exit(f"image-oci: {binary} is not an executable (cargo build --release --locked --bin switchyard)")
    epoch = os.environ.get("SOURCE_DATE_EPOCH") or subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%ct"], capture_output=True, text=True).stdout.strip() or "0"
    created = subprocess.run(["date", "-u", "-d", f"@{epoch}", "+%Y-%m-%dT%H:%M:%SZ"], capture_output=True,
                             text=True, check=True).stdout.strip()
    debs = download(recipe["packages"], Path(a.cache))
    umoci = a.umoci
    layout = Path(a.layout)
    image = f"{layout}:{a.tag}"
    with tempfile.TemporaryDirectory(prefix="image-oci-") as tmp:
        tmp = Path(tmp)
        base_rootfs(recipe, debs, tmp / "base")
        layer_tar(tmp / "base", tmp / "base.tar", epoch)
        app = tmp / "app"
        dest = app / df["copies"][0]["dest"].lstrip("/")
        dest.parent.mkdir(parents=True)
        shutil.copy(binary, dest)
        os.chmod(dest, 0o755)
        os.chown(dest, 0, 0)
        layer_tar(app, tmp / "app.tar", epoch)
        if layout.exists():
            shutil.rmtree(layout)
        layout.parent.mkdir(parents=True, exist_ok=True)
        run(umoci, "init", "--layout", layout)
        run(umoci, "new", "--image", image)
        versions = " ".join("=".join(run("dpkg-deb", "-f", d, field).strip() for field in ("Package", "Version"))
                            for d in debs)
        run(umoci, "raw", "add-layer", "--image", image, "--history.created", created,
            "--history.created_by", f"{df['base']} rebuilt from Debian {recipe['debian']} packages: {versions}",
            tmp / "base.tar")
        copy = df["copies"][0]
        run(umoci, "raw", "add-layer", "--image", image, "--history.created", created,
            "--history.created_by", f"COPY --from={copy['from']} {copy['src']} {copy['dest']}",
            tmp / "app.tar")
    cfg = ["--os", "linux", "--architecture", "amd64", "--created", created, "--no-history",
           "--config.user", df["user"] or recipe["user"], "--config.workingdir", df["workdir"] or recipe["workdir"]]
    for e in recipe["env"] + df["env"]:
        cfg += ["--config.env", e]
    for p in df["expose"]:
        cfg += ["--config.exposedports", p]
    for arg in df["entrypoint"]:
        cfg += ["--config.entrypoint", arg]
    for arg in df["cmd"] or []:
        cfg += ["--config.cmd", arg]
    run(umoci, "config", "--image", image, *cfg)
    run(umoci, "gc", "--layout", layout)
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    print(f"OCI image layout {layout} (tag {a.tag}, manifest {digest})")
    print(f"  base {df['base']} rebuilt from: {versions}")
    print(f"  user {df['user'] or recipe['user']}, entrypoint {df['entrypoint']}, cmd {df['cmd']}, "
          f"exposed {df['expose']}")


if __name__ == "__main__":
    main()
