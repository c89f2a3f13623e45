"""Where fetched files land in the model repository, so the runtime finds
``<repository>/<model-name>/<version>/model.onnx``.

Owns: the rule that classifies what was fetched (one file, a version directory, a model
directory, a whole repository) and the target it is installed at; the validation of model
names and versions. Pure: it looks at relative paths only, never at the filesystem.
"""

from __future__ import annotations

import dataclasses
import enum
import posixpath
import re
from collections.abc import Iterable

# Triton and kubeinfer's onnxruntime server both load numeric version directories only.
_VERSION = re.compile(r"^[1-9][0-9]*$")
# A directory name that is safe on every filesystem and is never hidden or '..'.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


class LayoutKind(enum.StrEnum):
    SINGLE_FILE = "SingleFile"  # one object -> <model>/<version>/<file>
    VERSION_DIRECTORY = "VersionDirectory"  # files at the top -> <model>/<version>/
    MODEL_DIRECTORY = "ModelDirectory"  # numeric version dirs at the top -> <model>/
    REPOSITORY = "Repository"  # only directories at the top -> copied as-is


@dataclasses.dataclass(frozen=True)
class Layout:
    kind: LayoutKind
    # Relative to the repository root; "" for REPOSITORY (each top-level entry lands beside
    # whatever else the repository holds).
    target: str


def validate_model_name(name: str) -> str:
    if not _MODEL_NAME.match(name):
        raise ValueError(
            f"model name {name!r} must start with a letter or digit and hold only letters, "
            "digits, '.', '_' and '-'"
        )
    return name


def validate_version(version: str) -> str:
    if not _VERSION.match(version):
        raise ValueError(f"model version {version!r} must be a positive integer")
    return version


def safe_relative_path(path: str) -> str:
    """``path`` normalised, or ``ValueError`` if it would escape the directory it lands in.

    Object keys and archive members are attacker-controlled text: a key such as
    ``../../etc/passwd`` must never become a write outside the repository.
    """
    if path.startswith("/") or "\\" in path:
        raise ValueError(f"refusing object path {path!r}: it is absolute or uses backslashes")
    segments = [s for s in path.split("/") if s not in ("", ".")]
    if not segments or ".." in segments:
        raise ValueError(f"refusing object path {path!r}: it is empty or contains '..'")
    return "/".join(segments)


def decide_layout(
    relative_paths: Iterable[str],
    *,
    single_file: bool,
    model_name: str,
    version: str,
) -> Layout:
    """Classify the fetched tree (``relative_paths`` are its files) and say where it goes.

    A single object is always a model file. A tree whose top level holds only directories is
    a repository already (``resnet/1/model.onnx``); one whose top level has numeric version
    directories is a model directory (``config.pbtxt``, ``1/model.onnx``); anything else is
    the contents of one version (``model.onnx``, ``vocab.txt``).
    """
    model_name = validate_model_name(model_name)
    version = validate_version(version)
    version_target = posixpath.join(model_name, version)
    if single_file:
        return Layout(kind=LayoutKind.SINGLE_FILE, target=version_target)

    top_files: set[str] = set()
    top_dirs: set[str] = set()
    for path in relative_paths:
        head, sep, _ = safe_relative_path(path).partition("/")
        (top_dirs if sep else top_files).add(head)
    if not top_files and not top_dirs:
        raise ValueError("nothing was fetched: the directory or prefix is empty")
    if any(_VERSION.match(d) for d in top_dirs):
        return Layout(kind=LayoutKind.MODEL_DIRECTORY, target=model_name)
    if not top_files:
        return Layout(kind=LayoutKind.REPOSITORY, target="")
    return Layout(kind=LayoutKind.VERSION_DIRECTORY, target=version_target)
