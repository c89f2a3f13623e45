"""The model repository: Triton's layout, `<repo>/<model>/<version>/model.onnx`, read once at start.

Owns the on-disk layout and the per-model config file (`config.yaml`, `config.yml` or
`config.json` beside the version folders). It only reads files and returns plain data; it does
not load onnxruntime sessions (that is `model`), so it is cheap to test on a temporary folder.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Mapping
from typing import Any

import yaml

MODEL_FILENAME = "model.onnx"
CONFIG_FILENAMES = ("config.yaml", "config.yml", "config.json")


class RepositoryError(ValueError):
    """The repository folder or a model's config file is unusable; the message says where."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Per-model settings. Names follow Triton's config.pbtxt where Triton has the same knob.

    `max_batch_size` None means "decide from the model": the largest the batcher may build when
    the ONNX input's first dimension is dynamic, 0 (no batching) when it is fixed.
    """

    max_batch_size: int | None = None
    max_queue_delay_microseconds: int = 0  # Triton's default: no added delay when idle.
    preferred_batch_sizes: tuple[int, ...] = ()
    instance_count: int = 1
    intra_op_threads: int | None = None  # None: the server-wide default (the cgroup CPU limit).
    inter_op_threads: int | None = None
    max_queue_size: int | None = None  # None: the server-wide --max-queue-size.
    cache: bool = False
    cache_max_entries: int = 1024
    cache_max_bytes: int = 64 * 1024 * 1024
    quantize: bool = False  # Dynamic INT8 quantization at load (onnxruntime.quantization).


DEFAULT_MAX_BATCH_SIZE = 128


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelEntry:
    """One model folder: its versions (number -> model.onnx path) and its config."""

    name: str
    versions: Mapping[int, pathlib.Path]
    config: ModelConfig

    @property
    def latest_version(self) -> int:
        return max(self.versions)


def parse_config(raw: Mapping[str, Any], *, where: str) -> ModelConfig:
    """Validate a config mapping into a ModelConfig; unknown keys are errors (typos bite later)."""
    known = {field.name for field in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise RepositoryError(f"{where}: unknown config keys {unknown}; known: {sorted(known)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("cache", "quantize"):
            if not isinstance(value, bool):
                raise RepositoryError(f"{where}: {key} must be true or false, got {value!r}")
            values[key] = value
        elif key == "preferred_batch_sizes":
            if not isinstance(value, list) or not all(_is_positive_int(v) for v in value):
                raise RepositoryError(f"{where}: {key} must be a list of positive integers")
            values[key] = tuple(sorted(value))
        elif value is None and key in (
            "max_batch_size",
            "intra_op_threads",
            "inter_op_threads",
            "max_queue_size",
        ):
            values[key] = None
        else:
            minimum = 0 if key in ("max_batch_size", "max_queue_delay_microseconds") else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise RepositoryError(
                    f"{where}: {key} must be an integer >= {minimum}, got {value!r}"
                )
            values[key] = value
    config = ModelConfig(**values)
    too_big = [
        s
        for s in config.preferred_batch_sizes
        if config.max_batch_size is not None and s > config.max_batch_size
    ]
    if too_big:
        raise RepositoryError(
            f"{where}: preferred_batch_sizes {too_big} exceed max_batch_size "
            f"{config.max_batch_size}"
        )
    return config


def read_config(model_dir: pathlib.Path) -> ModelConfig:
    """Read the first config file present in a model folder; none present means defaults."""
    for filename in CONFIG_FILENAMES:
        path = model_dir / filename
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        try:
            raw = json.loads(text) if filename.endswith(".json") else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise RepositoryError(f"{path}: not valid {filename.rsplit('.', 1)[1]}: {exc}") from exc
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise RepositoryError(f"{path}: expected a mapping at the top level")
        return parse_config(raw, where=str(path))
    return ModelConfig()


def scan(root: pathlib.Path) -> dict[str, ModelEntry]:
    """Every model folder with at least one `<version>/model.onnx`; other folders are ignored.

    Ignoring stray folders (README, .git) keeps a shared volume usable; a model folder whose
    config is broken is an error, because serving it with defaults would hide the mistake.
    """
    if not root.is_dir():
        raise RepositoryError(f"model repository {root} is not a directory")
    models: dict[str, ModelEntry] = {}
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        versions = {
            int(version_dir.name): version_dir / MODEL_FILENAME
            for version_dir in model_dir.iterdir()
            if version_dir.name.isdigit() and (version_dir / MODEL_FILENAME).is_file()
        }
        if not versions:
            continue
        models[model_dir.name] = ModelEntry(
            name=model_dir.name, versions=versions, config=read_config(model_dir)
        )
    if not models:
        raise RepositoryError(
            f"model repository {root} holds no <model>/<version>/{MODEL_FILENAME}"
        )
    return models


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
