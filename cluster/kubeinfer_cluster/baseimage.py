"""The Python base image made from Debian packages, for building where no registry serves one.

Owns: the base's recipe (suite, packages, what dpkg leaves out), running mmdebstrap, and
turning its root filesystem tarball into a one-layer OCI archive (no device nodes, no host
files, an image config with PATH and LANG). Importing it into buildah is ``images``' job.

Why: no registry serves ``python:3.11-slim-bookworm`` to this machine, and Debian bookworm's
python3 is the same 3.11 minor, so the Dockerfiles build on either (their PYTHON_IMAGE
build argument).
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import pathlib
import platform
import tarfile
import tempfile
import time
from typing import Any

from kubeinfer_cluster import hosttools, oci

# The Debian-made base: bookworm's python3 is 3.11, the official slim image's minor.
DEBIAN_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_REF = "localhost/kubeinfer/python:3.11-bookworm"
# Bump when the recipe below changes in a way the package list does not show.
BASE_RECIPE = 1
DEBIAN_MIRROR = os.environ.get("KUBEINFER_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBIAN_SECURITY = os.environ.get(
    "KUBEINFER_DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security"
)
# Documentation, man pages, translations and iconv modules: nothing in a server reads them.
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/lib/*/gconv/*",
)
# Host-specific files mmdebstrap copies in; the container runtime provides its own.
_HOST_FILES = ("./etc/hostname", "./etc/resolv.conf")


def _oci_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def base_recipe() -> dict[str, Any]:
    """Everything that decides the base image's content; its digest names the archive."""
    return {
        "recipe": BASE_RECIPE,
        "suite": DEBIAN_SUITE,
        "packages": list(BASE_PACKAGES),
        "dpkg": list(DPKG_EXCLUDES),
        "arch": _oci_arch(),
    }


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def filter_rootfs(source: tarfile.TarFile, layer: tarfile.TarFile) -> None:
    """Copy a mmdebstrap tarball into an image layer: no device nodes (a runtime makes /dev),
    no host files (hostname, resolv.conf)."""
    for member in source:
        name = member.name if member.name.startswith("./") else f"./{member.name}"
        if member.ischr() or member.isblk() or member.isfifo():
            continue
        if (name.startswith("./dev/") and name != "./dev/") or name.rstrip("/") in _HOST_FILES:
            continue
        fileobj = source.extractfile(member) if member.isfile() else None
        layer.addfile(member, fileobj)


def build_oci_index(
    *, layer_digest: str, layer_size: int, config: bytes, ref: str
) -> tuple[bytes, bytes]:
    """(manifest, index.json) of a one-layer image whose layer is an uncompressed tar."""
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": layer_size,
                }
            ],
        }
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": _digest(manifest),
                    "size": len(manifest),
                    "annotations": {oci.REF_ANNOTATION: ref},
                }
            ],
        }
    ).encode()
    return manifest, index


def _write_base_archive(rootfs_tar: pathlib.Path, out: pathlib.Path, created: str) -> None:
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        layer_path = pathlib.Path(tmp) / "layer.tar"
        with tarfile.open(rootfs_tar) as source, tarfile.open(layer_path, "w") as layer:
            filter_rootfs(source, layer)
        sha = hashlib.sha256()
        with layer_path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                sha.update(chunk)
        layer_digest = "sha256:" + sha.hexdigest()
        config = json.dumps(
            {
                "created": created,
                "architecture": _oci_arch(),
                "os": "linux",
                "config": {
                    "Env": [
                        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                        "LANG=C.UTF-8",
                    ],
                    "Cmd": ["python3"],
                },
                "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
                "history": [
                    {
                        "created": created,
                        "created_by": f"mmdebstrap --variant=minbase {DEBIAN_SUITE} "
                        f"--include={','.join(BASE_PACKAGES)}",
                    }
                ],
            }
        ).encode()
        manifest, index = build_oci_index(
            layer_digest=layer_digest,
            layer_size=layer_path.stat().st_size,
            config=config,
            ref=BASE_REF,
        )
        partial = out.with_suffix(".partial")
        with tarfile.open(partial, "w") as archive:
            _add_bytes(archive, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
            _add_bytes(archive, "index.json", index)
            for blob in (config, manifest):
                _add_bytes(archive, f"blobs/sha256/{_digest(blob)[7:]}", blob)
            archive.add(layer_path, f"blobs/sha256/{layer_digest[7:]}")
        partial.rename(out)


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


def build_base(root: pathlib.Path, *, refresh: bool = False) -> pathlib.Path:
    """The Debian-made Python base as an OCI archive under ``root``, built once per recipe."""
    key = hashlib.sha256(json.dumps(base_recipe(), sort_keys=True).encode()).hexdigest()[:12]
    out = root / "base" / f"python-3.11-{DEBIAN_SUITE}-{key}.oci.tar"
    if out.exists() and not refresh:
        return out
    hosttools.ensure_host_tools(["mmdebstrap"])
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    hosttools.say(
        f"building the Python base from Debian {DEBIAN_SUITE} packages (mmdebstrap, ~1-2 min)"
    )
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        rootfs_tar = pathlib.Path(tmp) / "rootfs.tar"
        args = [
            "mmdebstrap",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            # Merged /usr without the usrmerge package, which would pull in perl (~50 MB).
            "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
            *(f"--dpkgopt={opt}" for opt in DPKG_EXCLUDES),
            DEBIAN_SUITE,
            str(rootfs_tar),
            f"deb {DEBIAN_MIRROR} {DEBIAN_SUITE} main",
            f"deb {DEBIAN_MIRROR} {DEBIAN_SUITE}-updates main",
            f"deb {DEBIAN_SECURITY} {DEBIAN_SUITE}-security main",
        ]
        hosttools.stream(args, log=out.with_suffix(".log"), step="mmdebstrap", show=("I: ", "E: "))
        created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        _write_base_archive(rootfs_tar, out, created)
    for old in out.parent.glob("*.oci.tar"):
        if old != out:
            old.unlink()
    hosttools.say(f"base ready in {time.monotonic() - started:.0f} s: {out}")
    return out
