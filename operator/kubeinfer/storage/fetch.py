"""Fetch a model into the model repository: dispatch by scheme, stage, install atomically.

Owns: the staging directory (a hidden sibling inside ``dest``, so every final step is a rename
on one filesystem), ``file://`` copies, the ``pvc://`` no-op, and installing the staged tree
where ``layout`` says. The network lives in ``http_source`` and ``s3_source``.

Atomicity: the runtime never sees a half-written model. Downloads land in staging; a single
file is renamed over its target; a directory replaces its target by two renames (old aside,
new in) and the old one is deleted afterwards. A crashed attempt leaves only a hidden staging
directory, which the next attempt removes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Callable

from kubeinfer.core import storage_uri as uri
from kubeinfer.storage import credentials as credentials_
from kubeinfer.storage import errors, http_source, layout, retrying, s3_source

logger = logging.getLogger(__name__)

STAGING_PREFIX = ".storage-init-"
DEFAULT_MODEL_NAME = "model"
DEFAULT_VERSION = "1"


@dataclasses.dataclass(frozen=True)
class FetchResult:
    """What ``fetch`` did; ``layout`` is None when nothing was copied (``pvc://``)."""

    source: str  # the URI's display form: safe to log
    layout: layout.Layout | None
    installed: tuple[pathlib.Path, ...]  # the paths created or replaced in the repository
    size: int


def fetch(
    source: str | uri.StorageUri,
    dest: pathlib.Path,
    *,
    credentials: credentials_.Credentials,
    model_name: str = DEFAULT_MODEL_NAME,
    version: str = DEFAULT_VERSION,
    file_name: str | None = None,
    retry: retrying.RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> FetchResult:
    """Fetch ``source`` into the repository at ``dest``.

    ``file_name`` is the name a single downloaded file is installed under (the runtime opens
    ``model.onnx``, ``model.plan``... whatever the URL called it); trees keep their names.

    Raises ``ValueError`` for a malformed URI, model name or version (before any I/O) and a
    ``errors.StorageError`` subclass for everything the store or the filesystem refuses.
    """
    parsed = uri.parse_storage_uri(source) if isinstance(source, str) else source
    layout.validate_model_name(model_name)
    layout.validate_version(version)
    if file_name is not None:
        layout.validate_model_name(file_name)
    policy = retry or retrying.RetryPolicy()

    if isinstance(parsed, uri.PvcUri):
        # The pod builder mounts the claim itself (uri.build_storage_plan); storage-init only
        # runs here when someone invokes it by hand, and must not copy a shared claim.
        logger.info("%s is mounted read-only at %s; nothing to copy", parsed.display, dest)
        return FetchResult(source=parsed.display, layout=None, installed=(), size=0)

    try:
        dest.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(dest)
        staging = pathlib.Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=dest))
        # mkdtemp makes 0700; the runtime may run as another user than the init container,
        # and a directory tree is installed by renaming this very directory.
        staging.chmod(0o755)
    except OSError as err:
        raise errors.StorageError(f"cannot prepare {dest}: {err.strerror or err}") from None
    try:
        single_file, files, size = _download(parsed, staging, credentials, policy, sleep)
        try:
            placement = layout.decide_layout(
                files, single_file=single_file, model_name=model_name, version=version
            )
        except ValueError as err:
            raise errors.ObjectNotFound(f"{parsed.display}: {err}") from None
        installed = _install(staging, dest, placement, files, file_name)
    except OSError as err:
        raise errors.StorageError(
            f"{parsed.display}: writing into {dest} failed: {err.strerror or err}"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "fetched %s (%d files, %d bytes) into %s as %s",
        parsed.display,
        len(files),
        size,
        dest / placement.target,
        placement.kind,
    )
    return FetchResult(source=parsed.display, layout=placement, installed=installed, size=size)


def _download(
    parsed: uri.HttpUri | uri.S3Uri | uri.FileUri,
    staging: pathlib.Path,
    credentials: credentials_.Credentials,
    policy: retrying.RetryPolicy,
    sleep: Callable[[float], None],
) -> tuple[bool, tuple[str, ...], int]:
    """Fill ``staging``; return (single file?, relative file paths, total bytes)."""
    if isinstance(parsed, uri.HttpUri):
        name = _file_name(urllib.parse.urlsplit(parsed.url).path)
        size = http_source.download(
            parsed, staging / name, credentials=credentials, policy=policy, sleep=sleep
        )
        return True, (name,), size
    if isinstance(parsed, uri.S3Uri):
        got = s3_source.download(
            parsed, staging, credentials=credentials, policy=policy, sleep=sleep
        )
        return got.single_file, got.files, got.size
    return _copy_local(parsed, staging)


def _file_name(url_path: str) -> str:
    """The URL's last segment as a file name, or ``model`` when it is unusable."""
    name = urllib.parse.unquote(url_path.rsplit("/", 1)[-1])
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        return DEFAULT_MODEL_NAME
    return name


def _copy_local(parsed: uri.FileUri, staging: pathlib.Path) -> tuple[bool, tuple[str, ...], int]:
    source = pathlib.Path(parsed.path)
    if source.is_file():
        shutil.copyfile(source, staging / source.name)
        return True, (source.name,), source.stat().st_size
    if not source.is_dir():
        raise errors.ObjectNotFound(f"{parsed.display}: no such file or directory")
    files: list[str] = []
    size = 0
    for path in sorted(source.rglob("*")):
        if path.is_file():
            relative = path.relative_to(source).as_posix()
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            # copyfile, not copy2: the repository must be readable whatever the source's
            # mode bits; symlinks are followed so the repository holds real files.
            shutil.copyfile(path, target)
            files.append(relative)
            size += target.stat().st_size
    return False, tuple(files), size


def _install(
    staging: pathlib.Path,
    dest: pathlib.Path,
    placement: layout.Layout,
    files: tuple[str, ...],
    file_name: str | None,
) -> tuple[pathlib.Path, ...]:
    if placement.kind is layout.LayoutKind.SINGLE_FILE:
        target_dir = dest / placement.target
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / (file_name or files[0])
        os.replace(staging / files[0], target)
        return (target,)
    if placement.kind is layout.LayoutKind.REPOSITORY:
        # Each model directory replaces its namesake; other models in dest are left alone.
        tops = sorted({f.split("/", 1)[0] for f in files})
        return tuple(_replace_tree(staging / top, dest / top, dest) for top in tops)
    # The staging root is the tree itself; once renamed, fetch's cleanup finds nothing left.
    return (_replace_tree(staging, dest / placement.target, dest),)


def _replace_tree(new: pathlib.Path, target: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
    """Put directory ``new`` at ``target``, replacing what is there, by renames only."""
    target.parent.mkdir(parents=True, exist_ok=True)
    aside = None
    if target.exists():
        # Aside in dest itself, where _remove_stale_staging looks if we die before cleanup.
        aside = pathlib.Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=dest))
        os.replace(target, aside / "old")
    os.replace(new, target)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return target


def _remove_stale_staging(dest: pathlib.Path) -> None:
    # Left by an attempt that was killed (OOM, node drain); the runtime must not see it.
    for stale in dest.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
