"""Build kubeinfer's container images on this machine: no registry, no daemon.

Owns: the list of images and the repository paths each is built from; importing the base
(``baseimage`` makes the Debian one) into a private buildah storage under the cache; the
buildah build (chroot isolation, layer cache); one OCI archive per image under
``<cache>/images`` with a JSON record beside it (reference, inputs digest, sizes); skipping a
build whose inputs did not change. It never writes into the repository and never pushes
anywhere (docs/images.md shows `skopeo copy`).

Why a base made here: no registry serves ``python:3.11-slim-bookworm`` to this machine, and
Debian bookworm's python3 is the same 3.11 minor. The Dockerfiles take the base as the
``PYTHON_IMAGE`` build argument, so elsewhere they build unchanged on the official image.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from kubeinfer_cluster import baseimage, build, hosttools, oci

REPO = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_REGISTRY = "ghcr.io/kubeinfer"

# Archives kept per image (one per inputs digest, most recently used first).
KEEP_BUILDS = 3

# buildah's layer cache keeps every earlier build's layers; past this size they are pruned.
STORAGE_CAP_BYTES = int(float(os.environ.get("KUBEINFER_IMAGES_STORAGE_GB", "12")) * 1e9)

# Source files that never reach an image; excluded from the build context and its digest.
_IGNORED_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
_IGNORED_SUFFIXES = (".pyc", ".pyo", ".egg-info")


class ImageError(RuntimeError):
    """An image could not be built; the message says which step and why."""


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """One image: its name, its Dockerfile, what it copies, and how it is built and tagged."""

    name: str  # what `--only` / IMAGES= selects; also the archive's name
    dockerfile: str  # relative to the repository root, which is the build context
    inputs: tuple[str, ...]  # files and folders the Dockerfile copies
    build_args: tuple[tuple[str, str], ...] = ()  # besides PYTHON_IMAGE
    repository: str = ""  # under the registry; default: the name
    tag_suffix: str = ""  # a variant of an image shares its repository: 0.1.0-gpu
    # Built by a plain `make images` (and so by `make test`); others only when named.
    default: bool = True


IMAGES = (
    # The operator, also the storage initializer (`kubeinfer storage-init`) and the router
    # (`kubeinfer-router`, which the operator's router Deployments run).
    ImageSpec(
        "operator",
        "docker/operator.Dockerfile",
        ("VERSION", "constraints-dev.txt", "operator", "router"),
    ),
    ImageSpec(
        "onnx-server",
        "runtimes/onnxruntime/Dockerfile",
        ("VERSION", "constraints-dev.txt", "runtimes/onnxruntime"),
    ),
    # The ONNX server with onnxruntime-gpu, CUDA and cuDNN from NVIDIA's wheels (several GB)
    # and nvidia-ml-py: only when asked for (IMAGES=onnx-server-gpu make images); this machine
    # has no GPU to run it on, and every test tier runs the CPU image.
    ImageSpec(
        "onnx-server-gpu",
        "runtimes/onnxruntime/Dockerfile",
        ("VERSION", "constraints-dev.txt", "runtimes/onnxruntime"),
        build_args=(("DEVICE", "gpu"),),
        repository="onnx-server",
        tag_suffix="-gpu",
        default=False,
    ),
)


def select(names: Sequence[str] = ()) -> list[ImageSpec]:
    """The images a build makes: the named ones, or (none named) every default one."""
    known = {s.name for s in IMAGES}
    unknown = set(names) - known
    if unknown:
        raise ImageError(f"unknown images {sorted(unknown)}; known: {sorted(known)}")
    return [s for s in IMAGES if (s.name in names if names else s.default)]


def spec_ref(spec: ImageSpec, registry: str = DEFAULT_REGISTRY, tag: str | None = None) -> str:
    """The reference ``spec`` is tagged with: ghcr.io/kubeinfer/onnx-server:0.1.0-gpu."""
    return image_ref(spec.repository or spec.name, registry, tag) + spec.tag_suffix


@dataclasses.dataclass(frozen=True)
class Built:
    """A built image: its archive and what `make images` reports about it."""

    name: str
    ref: str
    archive: pathlib.Path
    manifest_digest: str
    inputs_digest: str
    python_image: str
    size_bytes: int  # uncompressed layers: what `docker images` shows
    compressed_bytes: int  # gzip layers: what a registry stores and a node pulls
    build_seconds: float
    built_at: str

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["archive"] = str(self.archive)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Built:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["archive"] = pathlib.Path(values["archive"])
        return cls(**values)


def images_root() -> pathlib.Path:
    """``<cache>/images``: archives, records, the base, buildah's storage, unpacked rootfs."""
    return build.cache_root() / "images"


def rootfs_cache() -> pathlib.Path:
    return images_root() / "rootfs"


def archive_path(name: str, digest: str) -> pathlib.Path:
    """One archive per image and inputs digest: worktrees that share the cache but hold
    different sources never overwrite each other's image (or the one a test is running)."""
    return images_root() / f"{name}-{digest[:12]}.oci.tar"


def latest_path(name: str) -> pathlib.Path:
    """``<name>.oci.tar``: a link to the archive built last here (what docs/images.md pushes)."""
    return images_root() / f"{name}.oci.tar"


def _mark_latest(built: Built) -> None:
    record_path(built.name).write_text(json.dumps(built.to_json(), indent=2) + "\n")
    link = latest_path(built.name)
    tmp = link.with_suffix(".link")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(built.archive.name)
    tmp.replace(link)  # atomic: a reader sees the old archive or the new one


def record_path(name: str, digest: str | None = None) -> pathlib.Path:
    """The record of one build, or (no digest) of the latest build of ``name`` here."""
    return images_root() / (f"{name}-{digest[:12]}.json" if digest else f"{name}.json")


def image_ref(name: str, registry: str = DEFAULT_REGISTRY, tag: str | None = None) -> str:
    version = tag or (REPO / "VERSION").read_text().strip()
    return f"{registry.rstrip('/')}/{name}:{version}"


def load_record(name: str, digest: str | None = None) -> Built | None:
    """The build of ``name`` with these inputs (or the latest), when its archive is there."""
    path = record_path(name, digest)
    if not path.exists():
        return None
    built = Built.from_json(json.loads(path.read_text()))
    return built if built.archive.exists() else None


def find_archive(ref: str) -> pathlib.Path | None:
    """The archive built for an image reference such as ``ghcr.io/kubeinfer/operator:0.1.0``
    (what a pod spec names): the latest one built on this machine, or None."""
    for spec in IMAGES:
        built = load_record(spec.name)
        if built is not None and built.ref == ref:
            return built.archive
    return None


# --- buildah ---------------------------------------------------------------------------------


def _storage_args() -> list[str]:
    root = images_root()
    driver = os.environ.get("KUBEINFER_STORAGE_DRIVER", "overlay")
    return [
        f"--root={root / 'storage'}",
        f"--runroot={root / 'storage-run'}",
        f"--storage-driver={driver}",
    ]


def buildah(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """buildah on kubeinfer's private image storage under the cache."""
    proc = subprocess.run(
        ["buildah", *_storage_args(), *args], capture_output=True, text=True, timeout=1800
    )
    if check and proc.returncode != 0:
        raise ImageError(f"buildah {' '.join(args)} failed:\n{proc.stderr.strip()[-3000:]}")
    return proc


def _image_id(ref: str) -> str | None:
    proc = buildah("inspect", "--type", "image", "--format", "{{.FromImageID}}", ref, check=False)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def import_base(archive: pathlib.Path) -> str:
    """Make the base archive the local image ``baseimage.BASE_REF``; its image id."""
    wanted = oci.read_archive(archive).manifest_digest
    marker = images_root() / "base" / "imported"
    current = _image_id(baseimage.BASE_REF)
    if current and marker.exists() and marker.read_text() == f"{wanted} {current}":
        return current
    hosttools.say(f"importing the base into buildah's storage as {baseimage.BASE_REF}")
    image_id = buildah("pull", "--quiet", f"oci-archive:{archive}").stdout.strip().splitlines()[-1]
    buildah("tag", image_id, baseimage.BASE_REF)
    marker.write_text(f"{wanted} {image_id}")
    return image_id


def qualify(image: str) -> str:
    """A Docker Hub short name made explicit (buildah refuses to guess a registry)."""
    first = image.split("/", 1)[0]
    if "/" not in image:
        return f"docker.io/library/{image}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{image}"
    return image


# --- build contexts and digests --------------------------------------------------------------


def _ignored(path: pathlib.Path) -> bool:
    return any(part in _IGNORED_DIRS or part.endswith(_IGNORED_SUFFIXES) for part in path.parts)


def stage_context(spec: ImageSpec, dest: pathlib.Path, repo: pathlib.Path = REPO) -> None:
    """Copy what ``spec`` builds from (its Dockerfile and inputs, minus caches) to ``dest``:
    the build sees exactly the files its digest covers, whatever else the checkout holds."""
    shutil.rmtree(dest, ignore_errors=True)
    for rel in (spec.dockerfile, *spec.inputs):
        src = repo / rel
        if src.is_dir():
            shutil.copytree(
                src, dest / rel, ignore=lambda d, names: _ignore_names(names), dirs_exist_ok=True
            )
        else:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _ignore_names(names: list[str]) -> set[str]:
    return {n for n in names if n in _IGNORED_DIRS or n.endswith(_IGNORED_SUFFIXES)}


def tree_digest(root: pathlib.Path) -> str:
    """A digest of every file under ``root``: relative path, executable bit and content."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not _ignored(p)):
        rel = path.relative_to(root).as_posix()
        executable = os.access(path, os.X_OK)
        digest.update(f"{rel}\0{int(executable)}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def inputs_digest(
    context: pathlib.Path,
    *,
    ref: str,
    python_image: str,
    base_id: str,
    build_args: Sequence[tuple[str, str]] = (),
) -> str:
    """What decides whether an image must be rebuilt: its sources, name, base and build
    arguments (none: the digest the images without any always had)."""
    args = "".join(f"\0{key}={value}" for key, value in build_args)
    return hashlib.sha256(
        f"{tree_digest(context)}\0{ref}\0{python_image}\0{base_id}{args}".encode()
    ).hexdigest()


def pip_ca_bundle() -> pathlib.Path | None:
    """The CA bundle this machine's pip trusts, for pip inside the build (the ``pip_ca``
    secret): behind a TLS-inspecting proxy the image's own certifi bundle would fail."""
    for var in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        value = os.environ.get(var)
        if value and pathlib.Path(value).is_file():
            return pathlib.Path(value)
    system = pathlib.Path("/etc/ssl/certs/ca-certificates.crt")
    return system if system.is_file() else None


# --- building --------------------------------------------------------------------------------


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """One `make images` at a time per cache (the test tier may start one too)."""
    path = images_root() / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            hosttools.say("another image build is running; waiting for it")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build_one(
    spec: ImageSpec,
    *,
    ref: str,
    python_image: str,
    pull: str,
    base_id: str,
    force: bool,
) -> tuple[Built, bool]:
    """(the image, whether it was built now); skipped when its inputs did not change."""
    root = images_root()
    context = root / "context" / spec.name
    stage_context(spec, context)
    digest = inputs_digest(
        context, ref=ref, python_image=python_image, base_id=base_id, build_args=spec.build_args
    )
    previous = load_record(spec.name, digest)
    if previous is not None and not force:
        previous.archive.touch()  # recently used: kept by _prune
        _mark_latest(previous)
        return previous, False
    started = time.monotonic()
    hosttools.say(f"building {ref} from {spec.dockerfile} (buildah, chroot isolation)")
    old_id = _image_id(ref)
    ca = pip_ca_bundle()
    hosttools.stream(
        [
            "buildah",
            *_storage_args(),
            "bud",
            "--isolation=chroot",
            "--layers",
            f"--pull={pull}",
            "--format=oci",
            f"--build-arg=PYTHON_IMAGE={python_image}",
            *(f"--build-arg={key}={value}" for key, value in spec.build_args),
            *([f"--secret=id=pip_ca,src={ca}"] if ca else []),
            f"--file={context / spec.dockerfile}",
            f"--tag={ref}",
            str(context),
        ],
        log=root / f"{spec.name}.build.log",
        step=spec.name,
        show=("STEP ", "COMMIT", "Error", "error:"),
    )
    archive = archive_path(spec.name, digest)
    partial = archive.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    hosttools.say(f"{spec.name}: writing {archive} (gzip layers, as a registry stores them)")
    buildah("push", "--quiet", ref, f"oci-archive:{partial}:{ref}")
    partial.rename(archive)
    new_id = _image_id(ref)
    if old_id and old_id != new_id:
        # The previous build is now untagged: drop it, or every rebuild keeps ~0.5 GB.
        buildah("rmi", old_id, check=False)
    info = oci.read_archive(archive)
    built = Built(
        name=spec.name,
        ref=ref,
        archive=archive,
        manifest_digest=info.manifest_digest,
        inputs_digest=digest,
        python_image=python_image,
        size_bytes=oci.uncompressed_bytes(archive),
        compressed_bytes=info.compressed_bytes,
        build_seconds=round(time.monotonic() - started, 1),
        built_at=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    record_path(spec.name, digest).write_text(json.dumps(built.to_json(), indent=2) + "\n")
    _mark_latest(built)
    _prune(spec.name)
    return built, True


def _prune(name: str) -> None:
    """Keep the KEEP_BUILDS most recently used archives of ``name`` (other worktrees may
    use the older ones) and drop the rest with their records."""
    archives = sorted(
        (p for p in images_root().glob(f"{name}-*.oci.tar") if not p.is_symlink()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in archives[KEEP_BUILDS:]:
        old.unlink(missing_ok=True)
        old.with_name(old.name.removesuffix(".oci.tar") + ".json").unlink(missing_ok=True)


def build_images(
    *,
    names: Sequence[str] = (),
    registry: str = DEFAULT_REGISTRY,
    tag: str | None = None,
    python_image: str | None = None,
    force: bool = False,
    refresh_base: bool = False,
    report: Callable[[Built, bool], None] | None = None,
) -> list[Built]:
    """Build every default image (or ``names``) whose inputs changed; all of them, built or
    cached.

    ``python_image`` None means the Debian-made base; any other value is pulled by buildah
    (``docker.io/library/python:3.11-slim-bookworm`` where a registry is reachable)."""
    chosen_specs = select(names)
    hosttools.ensure_host_tools()
    images_root().mkdir(parents=True, exist_ok=True)
    out = []
    with _build_lock():
        if python_image is None:
            base_id = import_base(baseimage.build_base(images_root(), refresh=refresh_base))
            chosen, pull = baseimage.BASE_REF, "never"
        else:
            chosen, pull, base_id = qualify(python_image), "true", ""
        # Under the lock no build is running: any working container is a killed build's
        # leftover (they hold whatever its RUN steps wrote, easily gigabytes).
        buildah("rm", "--all", check=False)
        _trim_storage()
        for spec in chosen_specs:
            built, fresh = _build_one(
                spec,
                ref=spec_ref(spec, registry, tag),
                python_image=chosen,
                pull=pull,
                base_id=base_id,
                force=force,
            )
            if report is not None:
                report(built, fresh)
            out.append(built)
        kept = {
            oci.read_archive(path).manifest_digest
            for path in images_root().glob("*-*.oci.tar")
            if not path.is_symlink()
        }
        oci.prune(rootfs_cache(), keep=kept)
    return out


def _trim_storage() -> None:
    """Past STORAGE_CAP_BYTES, drop the layer cache of earlier builds (dangling images): the
    next build of each image then reinstalls its dependencies once."""
    storage = images_root() / "storage"
    if not storage.exists():
        return
    du = subprocess.run(["du", "-sb", str(storage)], capture_output=True, text=True)
    size = int(du.stdout.split()[0]) if du.returncode == 0 and du.stdout else 0
    if size > STORAGE_CAP_BYTES:
        hosttools.say(
            f"image storage at {size / 1e9:.1f} GB: pruning the layer cache of old builds"
        )
        buildah("rmi", "--prune", check=False)
