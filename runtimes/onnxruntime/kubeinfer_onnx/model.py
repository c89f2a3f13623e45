"""A served model version: its onnxruntime session, input checks, batcher, cache and stats.

Owns the path of one inference through a model, whatever the transport: check the inputs
against the session's metadata, try the cache, queue on the batcher, book the stats. Also
owns the session's providers (asked for per `device`, then read back into a `Placement`), the
metadata and config documents that the v2 endpoints return, and `ModelSet`, the lookup by name
and version. Transports convert wire formats to numpy and back; nothing here parses bytes.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from kubeinfer_onnx import batching, cache, cpus, device, errors, metrics, quantize, repository

log = logging.getLogger(__name__)

PLATFORM = "onnxruntime_onnx"

# onnxruntime's type strings -> v2 datatypes.
_ORT_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
_NUMPY = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}


@dataclasses.dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 for a dynamic dimension, as v2 metadata writes it.


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerOptions:
    """Server-wide defaults that a model config may override."""

    intra_op_threads: int
    inter_op_threads: int
    max_queue_size: int
    device: device.Device = device.Device.AUTO
    spinning: cpus.Spinning = cpus.Spinning.OFF
    # Every execution takes at least this long (see --emulate-device-ms); 0 is off.
    emulate_device_s: float = 0.0


def _provider_arguments(names: Sequence[str]) -> list[str | tuple[str, dict[str, str]]]:
    """The providers as InferenceSession takes them, with options where a provider needs any."""
    arguments: list[str | tuple[str, dict[str, str]]] = []
    for name in names:
        if name == "TensorrtExecutionProvider":
            # TensorRT builds an engine on first use (and again for a larger batch); keep the
            # engines under the writable /tmp so a restarted container reuses them.
            cache_dir = str(pathlib.Path(tempfile.gettempdir()) / "kubeinfer-trt-cache")
            arguments.append(
                (name, {"trt_engine_cache_enable": "True", "trt_engine_cache_path": cache_dir})
            )
        else:
            arguments.append(name)
    return arguments


def _spec(node: Any) -> TensorSpec:
    datatype = _ORT_TYPES.get(node.type)
    if datatype is None:
        raise repository.RepositoryError(f"tensor {node.name!r} has unsupported type {node.type}")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in node.shape)
    return TensorSpec(node.name, datatype, shape)


class ServedModel:
    def __init__(
        self, *, entry: repository.ModelEntry, version: int, options: ServerOptions
    ) -> None:
        config = entry.config
        self.name = entry.name
        self.version = str(version)
        self.config = config
        path = entry.versions[version]
        if config.quantize:
            path = quantize.quantize_int8(path)
            log.info("serving %s version %s quantized to INT8 (%s)", self.name, version, path)
        self.path: pathlib.Path = path
        session_options = ort.SessionOptions()
        # Pinned from the container's CPU limit (or the config): onnxruntime's own default
        # is the host's core count, which oversubscribes a pod limited to a few cores.
        session_options.intra_op_num_threads = config.intra_op_threads or options.intra_op_threads
        session_options.inter_op_num_threads = config.inter_op_threads or options.inter_op_threads
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if options.spinning is cpus.Spinning.OFF:
            # onnxruntime's pool threads busy-wait after each run by default; on a few cores
            # that spinning steals the CPU the event loop needs to decode the next requests.
            session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session_options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        elif options.spinning is cpus.Spinning.IN_RUNS:
            # Spin between a run's parallel sections, stop when the last run returns.
            session_options.add_session_config_entry("session.force_spinning_stop", "1")
        available = ort.get_available_providers()
        self.session = ort.InferenceSession(
            str(path),
            sess_options=session_options,
            providers=_provider_arguments(device.choose_providers(options.device, available)),
        )
        self.providers: list[str] = list(self.session.get_providers())
        # What the session runs on, read back: onnxruntime falls back to CPU without raising
        # when a GPU provider cannot start, so the request alone would tell a lie.
        self.placement = device.placement(
            requested=options.device, session_providers=self.providers, available=available
        )
        if self.placement.fell_back:
            log.warning(
                "model %s version %s: a GPU was requested (--device gpu) but it runs on %s: "
                "%s; serving on CPU",
                self.name,
                version,
                self.placement.provider,
                self.placement.fallback_reason,
            )
        self.inputs = [_spec(node) for node in self.session.get_inputs()]
        self.outputs = [_spec(node) for node in self.session.get_outputs()]
        self._input_index = {spec.name: spec for spec in self.inputs}
        self._output_names = [spec.name for spec in self.outputs]
        batchable = all(spec.shape and spec.shape[0] == -1 for spec in self.inputs + self.outputs)
        if config.max_batch_size is None:
            self.max_batch_size = repository.DEFAULT_MAX_BATCH_SIZE if batchable else 0
        elif config.max_batch_size > 0 and not batchable:
            raise repository.RepositoryError(
                f"model {self.name}: max_batch_size {config.max_batch_size} needs a dynamic "
                "first dimension on every input and output"
            )
        else:
            self.max_batch_size = config.max_batch_size
        self.stats = metrics.ModelStats(model=self.name, version=self.version)
        self.cache = (
            cache.ResponseCache(
                max_entries=config.cache_max_entries, max_bytes=config.cache_max_bytes
            )
            if config.cache
            else None
        )
        self.batcher = batching.DynamicBatcher(
            execute=self._execute,
            max_batch_size=self.max_batch_size,
            max_queue_size=config.max_queue_size or options.max_queue_size,
            max_queue_delay_us=config.max_queue_delay_microseconds,
            preferred_batch_sizes=config.preferred_batch_sizes,
            instances=config.instance_count,
            on_batch=self._record_batch,
        )
        self.stats.pending = lambda: self.batcher.pending
        self.stats.running = lambda: self.batcher.running
        self.stats.provider = self.placement.provider
        self.stats.device = self.placement.requested.value
        self._device_s = options.emulate_device_s

    def attach_metrics(self, registry: metrics.Metrics) -> None:
        registry.add_model(self.stats)

    def _execute(self, inputs: Mapping[str, npt.NDArray[Any]]) -> batching.Tensors:
        started = time.monotonic()
        results = self.session.run(self._output_names, dict(inputs))
        if self._device_s:
            # An emulated accelerator: the host waits for the "kernel" without using a core,
            # so N replicas serve N times one replica's rate however few cores the host has.
            # Runs in a batcher worker thread (an execution this long never runs inline).
            time.sleep(max(0.0, started + self._device_s - time.monotonic()))
        return dict(zip(self._output_names, results, strict=True))

    def validate(self, inputs: Mapping[str, npt.NDArray[Any]]) -> int:
        """Check names, dtypes and shapes against the model; return the batch size (rows)."""
        unknown = sorted(set(inputs) - set(self._input_index))
        if unknown:
            raise errors.InvalidInputError(
                f"unexpected input {unknown[0]!r} for model {self.name!r}; "
                f"expected {sorted(self._input_index)}"
            )
        missing = sorted(set(self._input_index) - set(inputs))
        if missing:
            raise errors.InvalidInputError(
                f"expected input {missing[0]!r} for model {self.name!r} is missing"
            )
        rows = 1
        for spec in self.inputs:
            array = inputs[spec.name]
            if array.dtype != _NUMPY[spec.datatype]:
                raise errors.InvalidInputError(
                    f"input {spec.name!r} has datatype {_datatype(array)}, "
                    f"model expects {spec.datatype}"
                )
            if len(array.shape) != len(spec.shape) or any(
                want not in (-1, got) for want, got in zip(spec.shape, array.shape, strict=True)
            ):
                raise errors.InvalidInputError(
                    f"input {spec.name!r} has shape {list(array.shape)}, model expects "
                    f"{list(spec.shape)}"
                )
        if self.max_batch_size > 0:
            batch_sizes = {inputs[spec.name].shape[0] for spec in self.inputs}
            if len(batch_sizes) > 1:
                raise errors.InvalidInputError(
                    f"inputs disagree on the batch size: {sorted(batch_sizes)}"
                )
            rows = batch_sizes.pop()
            if rows < 1:
                raise errors.InvalidInputError("batch size must be at least 1")
            if rows > self.max_batch_size:
                raise errors.InvalidInputError(
                    f"batch size {rows} for model {self.name!r} exceeds its max_batch_size "
                    f"{self.max_batch_size}"
                )
        return rows

    async def infer(
        self,
        inputs: Mapping[str, npt.NDArray[Any]],
        *,
        outputs: Sequence[str] | None = None,
        started_ns: int,
    ) -> batching.Tensors:
        """One request end to end; raises an InferenceError subclass and books it on failure."""
        try:
            if outputs is not None:
                for name in outputs:
                    if name not in self._output_names:
                        raise errors.InvalidInputError(
                            f"unexpected output {name!r} for model {self.name!r}; "
                            f"expected {self._output_names}"
                        )
            rows = self.validate(inputs)
            result = await self._infer_validated(inputs, rows)
        except errors.InferenceError as exc:
            self.record_failure(exc, started_ns=started_ns)
            raise
        finished = time.monotonic_ns()
        self.stats.record_success(duration_ns=finished - started_ns)
        if outputs is None:
            return result
        return {name: result[name] for name in outputs}

    async def _infer_validated(
        self, inputs: Mapping[str, npt.NDArray[Any]], rows: int
    ) -> batching.Tensors:
        key = b""
        if self.cache is not None:
            lookup_started = time.monotonic_ns()
            key = cache.cache_key(inputs)
            hit = self.cache.get(key)
            if hit is not None:
                self.stats.cache_hit.add(time.monotonic_ns() - lookup_started)
                return hit
            self.stats.cache_miss.add(time.monotonic_ns() - lookup_started)
        result, timings = await self.batcher.submit(inputs, rows)
        stats = self.stats
        stats.queue.add(timings.queue_ns)
        stats.compute_input.add(timings.input_ns)
        stats.compute_infer.add(timings.infer_ns)
        stats.compute_output.add(timings.output_ns)
        stats.inference_count += rows
        if self.cache is not None:
            self.cache.put(key, result)
        return result

    def _record_batch(self, timings: batching.Timings) -> None:
        self.stats.record_batch(
            rows=timings.batch_rows,
            input_ns=timings.input_ns,
            infer_ns=timings.infer_ns,
            output_ns=timings.output_ns,
        )

    def record_failure(self, exc: errors.InferenceError, *, started_ns: int) -> None:
        self.stats.record_failure(
            reason=exc.failure_reason, duration_ns=time.monotonic_ns() - started_ns
        )

    def metadata(self, versions: Sequence[str]) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": list(versions),
            "platform": PLATFORM,
            "inputs": [
                {"name": s.name, "datatype": s.datatype, "shape": list(s.shape)}
                for s in self.inputs
            ],
            "outputs": [
                {"name": s.name, "datatype": s.datatype, "shape": list(s.shape)}
                for s in self.outputs
            ],
        }

    def config_document(self) -> dict[str, Any]:
        """Triton's model config JSON, so Triton tooling (perf_analyzer, clients) works."""

        def tensors(specs: list[TensorSpec]) -> list[dict[str, Any]]:
            # Triton's dims leave out the batch dimension when the model batches.
            skip = 1 if self.max_batch_size > 0 else 0
            return [
                {
                    "name": s.name,
                    "data_type": f"TYPE_{_config_type(s.datatype)}",
                    "dims": list(s.shape[skip:]),
                }
                for s in specs
            ]

        gpu = self.placement.on_gpu
        document: dict[str, Any] = {
            "name": self.name,
            "platform": PLATFORM,
            "backend": "onnxruntime",
            "max_batch_size": self.max_batch_size,
            "input": tensors(self.inputs),
            "output": tensors(self.outputs),
            "instance_group": [
                {
                    "name": f"{self.name}_0",
                    "count": self.config.instance_count,
                    "kind": "KIND_GPU" if gpu else "KIND_CPU",
                }
            ],
            "response_cache": {"enable": self.config.cache},
        }
        if self.max_batch_size > 0:
            document["dynamic_batching"] = {
                "preferred_batch_size": list(self.config.preferred_batch_sizes),
                "max_queue_delay_microseconds": self.config.max_queue_delay_microseconds,
            }
        return document


def _datatype(array: npt.NDArray[Any]) -> str:
    for name, dtype in _NUMPY.items():
        if dtype == array.dtype:
            return name
    return str(array.dtype)


def _config_type(datatype: str) -> str:
    # config.pbtxt spells BYTES as STRING; the rest match after the TYPE_ prefix.
    return "STRING" if datatype == "BYTES" else datatype


class ModelSet:
    """Every served model version, looked up by name and optional version."""

    def __init__(self, models: Iterable[ServedModel]) -> None:
        self._by_name: dict[str, dict[str, ServedModel]] = {}
        for model in models:
            self._by_name.setdefault(model.name, {})[model.version] = model
        self.draining = False
        # In a server of several processes: whether every sibling worker is serving too.
        self.siblings_up: Callable[[], bool] = lambda: True

    @property
    def ready(self) -> bool:
        """Ready for traffic: not draining, and (with several workers) the pod at full
        capacity, so the autoscaler never counts a replica whose workers are still loading."""
        return not self.draining and self.siblings_up()

    def __iter__(self) -> Any:
        for versions in self._by_name.values():
            yield from versions.values()

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def versions(self, name: str) -> list[str]:
        return sorted(self._by_name.get(name, {}), key=int)

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """The asked version, or the newest when none is asked (Triton's default policy)."""
        versions = self._by_name.get(name)
        if not versions:
            raise errors.ModelNotFoundError(f"unknown model: {name!r}")
        if not version:
            return versions[max(versions, key=int)]
        model = versions.get(version)
        if model is None:
            raise errors.ModelNotFoundError(
                f"unknown version {version!r} of model {name!r}; have {self.versions(name)}"
            )
        return model


def load(
    entries: Mapping[str, repository.ModelEntry],
    *,
    options: ServerOptions,
    all_versions: bool = True,
) -> ModelSet:
    """Load every version of every model (or only the newest, to save memory)."""
    served = []
    for entry in entries.values():
        versions = sorted(entry.versions) if all_versions else [entry.latest_version]
        for version in versions:
            served.append(ServedModel(entry=entry, version=version, options=options))
            log.info("loaded %s version %s", entry.name, version)
    return ModelSet(served)
