"""OCI image archives: what one holds, and its root filesystem unpacked for runc.

Owns: reading an ``oci-archive`` (index, manifest, image config, layer sizes) as buildah and
skopeo write it, and unpacking its image with umoci into a cache of root filesystems keyed by
manifest digest (shared, read-only: every container of one image uses the same directory),
with pruning of the unused ones. It runs no container (``containers`` does) and builds no
image (``images`` does).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import gzip
import json
import pathlib
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any

REF_ANNOTATION = "org.opencontainers.image.ref.name"


class OciError(RuntimeError):
    """An archive is malformed or could not be unpacked; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class ImageConfig:
    """The parts of an image's config a runtime reads to start its process."""

    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[str, ...]
    user: str
    workdir: str
    exposed_ports: tuple[str, ...]

    @classmethod
    def from_oci(cls, config: Mapping[str, Any]) -> ImageConfig:
        c = config.get("config") or {}
        return cls(
            entrypoint=tuple(c.get("Entrypoint") or ()),
            cmd=tuple(c.get("Cmd") or ()),
            env=tuple(c.get("Env") or ()),
            user=str(c.get("User") or ""),
            workdir=str(c.get("WorkingDir") or "/"),
            exposed_ports=tuple(sorted(c.get("ExposedPorts") or {})),
        )


@dataclasses.dataclass(frozen=True)
class ArchiveInfo:
    """What an OCI archive holds: its one image's reference, digests and sizes."""

    ref: str
    manifest_digest: str
    config: ImageConfig
    layers: tuple[tuple[str, int, str], ...]  # (digest, size in the archive, media type)

    @property
    def compressed_bytes(self) -> int:
        return sum(size for _, size, _ in self.layers)


# --- OCI archives ----------------------------------------------------------------------------


def _blob(archive: tarfile.TarFile, digest: str) -> bytes:
    algorithm, _, hexdigest = digest.partition(":")
    member = archive.extractfile(f"blobs/{algorithm}/{hexdigest}")
    if member is None:
        raise OciError(f"{archive.name!r}: blob {digest} is missing")
    return member.read()


def read_archive(path: pathlib.Path) -> ArchiveInfo:
    """The image in an OCI archive (``oci-archive:`` as buildah and skopeo write it)."""
    with tarfile.open(path) as archive:
        index = json.loads(_blob_or_file(archive, "index.json"))
        if len(index.get("manifests") or []) != 1:
            raise OciError(f"{path}: expected one image, found {index.get('manifests')}")
        entry = index["manifests"][0]
        manifest = json.loads(_blob(archive, entry["digest"]))
        config = json.loads(_blob(archive, manifest["config"]["digest"]))
    return ArchiveInfo(
        ref=str((entry.get("annotations") or {}).get(REF_ANNOTATION, "")),
        manifest_digest=str(entry["digest"]),
        config=ImageConfig.from_oci(config),
        layers=tuple((d["digest"], int(d["size"]), d["mediaType"]) for d in manifest["layers"]),
    )


def _blob_or_file(archive: tarfile.TarFile, name: str) -> bytes:
    member = archive.extractfile(name)
    if member is None:
        raise OciError(f"{archive.name!r}: {name} is missing: not an OCI archive")
    return member.read()


def uncompressed_bytes(path: pathlib.Path) -> int:
    """Sum of the image's layers as unpacked tars (what `docker images` calls its size)."""
    info = read_archive(path)
    total = 0
    with tarfile.open(path) as archive:
        for digest, _, media_type in info.layers:
            algorithm, _, hexdigest = digest.partition(":")
            member = archive.extractfile(f"blobs/{algorithm}/{hexdigest}")
            assert member is not None
            stream: IO[bytes] = member
            if "gzip" in media_type:
                stream = gzip.GzipFile(fileobj=member)  # type: ignore[assignment]
            while chunk := stream.read(1 << 20):
                total += len(chunk)
    return total


# --- unpacking -------------------------------------------------------------------------------


def _run(args: Sequence[str], *, what: str, timeout: float = 600) -> str:
    try:
        proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise OciError(
            f"{what}: {args[0]} is not installed (make images installs it: apt-get install "
            f"{args[0]})"
        ) from exc
    if proc.returncode != 0:
        raise OciError(
            f"{what} failed (exit {proc.returncode}): {' '.join(args)}\n{proc.stderr.strip()}"
        )
    return proc.stdout


@contextlib.contextmanager
def _locked(path: pathlib.Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def unpack(archive: pathlib.Path, cache: pathlib.Path) -> pathlib.Path:
    """The root filesystem of the archive's image, unpacked once per manifest digest under
    ``cache`` (later calls return the same directory). Treat it as read-only: containers
    share it."""
    info = read_archive(archive)
    key = info.manifest_digest.replace(":", "-")
    target = cache / key
    rootfs = target / "rootfs"
    done = target / "unpacked"
    with _locked(cache / f"{key}.lock"):
        if done.exists():
            done.touch()  # recently used: kept by prune()
            return rootfs
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        with tempfile.TemporaryDirectory(dir=cache, prefix="layout-") as layout:
            # umoci reads an OCI layout directory; the archive is that directory as a tar.
            with tarfile.open(archive) as tar:
                tar.extractall(layout, filter="tar")
            ref = info.ref or _tag_layout(pathlib.Path(layout), info.manifest_digest)
            _run(
                ["umoci", "raw", "unpack", "--image", f"{layout}:{ref}", str(rootfs)],
                what=f"unpacking {archive.name}",
            )
        done.touch()
    return rootfs


def prune(cache: pathlib.Path, *, keep: set[str], unused_for_s: float = 86400) -> None:
    """Remove unpacked root filesystems whose manifest digest is not in ``keep`` and that no
    ``unpack()`` returned for ``unused_for_s`` (a container may still run on a recent one)."""
    if not cache.exists():
        return
    now = time.time()
    for marker in cache.glob("*/unpacked"):
        target = marker.parent
        digest = target.name.replace("-", ":", 1)
        if digest in keep or now - marker.stat().st_mtime < unused_for_s:
            continue
        with _locked(cache / f"{target.name}.lock"):
            shutil.rmtree(target, ignore_errors=True)
        (cache / f"{target.name}.lock").unlink(missing_ok=True)


def _tag_layout(layout: pathlib.Path, digest: str) -> str:
    """Give an untagged layout's one manifest a name umoci can address."""
    index_path = layout / "index.json"
    index = json.loads(index_path.read_text())
    for entry in index["manifests"]:
        if entry["digest"] == digest:
            entry.setdefault("annotations", {})[REF_ANNOTATION] = "image"
    index_path.write_text(json.dumps(index))
    return "image"
