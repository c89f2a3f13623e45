"""`inference.GRPCInferenceService`: what each RPC answers, whichever gRPC stack carries it.

Owns the method table (`Service.methods`), converting protobuf tensors to numpy and back, and
which InferenceError ends a call with which status. The messages are the ones tritonclient
ships, so the wire format is exactly the one Triton's clients speak. Reading and writing gRPC
is `grpc_fastpath`'s (the default: HTTP/2 framing written for these calls) or `grpc_aio`'s
(grpcio, `--grpc-frontend grpcio`), so both answer alike. Everything about a model is
`model`'s; BYTES framing comes from `protocol`.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
import time
import types
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from google.protobuf import json_format

import kubeinfer_onnx
from kubeinfer_onnx import errors, metrics, model, protocol
from kubeinfer_onnx.http_server import EXTENSIONS, RETRY_AFTER_SECONDS, SERVER_NAME, InFlight

SERVICE = "inference.GRPCInferenceService"
_PACKAGE = "tritonclient.grpc"


def _messages() -> tuple[Any, Any]:
    """tritonclient's generated message modules (model_config_pb2, service_pb2).

    Without running `tritonclient.grpc`'s package init when nothing has yet: that imports
    grpcio, tritonclient's client and packaging (~0.15 s of every start, a fifth of it) for
    nothing this server uses, and the image installs tritonclient without them (the two
    modules need protobuf alone), so there it could not run at all. A bare package stands in
    while the two modules load; it is then removed, so a later `import tritonclient.grpc`
    runs the real init, which finds the two modules already loaded and uses them (protobuf
    registers each descriptor once).
    """
    spec = None if _PACKAGE in sys.modules else importlib.util.find_spec(_PACKAGE)
    if spec is not None and spec.submodule_search_locations is not None:
        bare = types.ModuleType(_PACKAGE)
        bare.__path__ = list(spec.submodule_search_locations)
        sys.modules[_PACKAGE] = bare
        try:
            importlib.import_module(f"{_PACKAGE}.service_pb2")  # imports model_config_pb2
        finally:
            del sys.modules[_PACKAGE]
            parent = sys.modules["tritonclient"]
            if getattr(parent, "grpc", None) is bare:
                delattr(parent, "grpc")
    else:
        importlib.import_module(f"{_PACKAGE}.service_pb2")
    return sys.modules[f"{_PACKAGE}.model_config_pb2"], sys.modules[f"{_PACKAGE}.service_pb2"]


model_config_pb2, service_pb2 = _messages()

# Which InferTensorContents field carries each datatype when raw_input_contents is not used.
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def decode_inputs(request: Any) -> dict[str, npt.NDArray[Any]]:
    """ModelInferRequest inputs -> arrays; raw_input_contents, if used, holds every input."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise protocol.ProtocolError(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; "
            "raw contents must be given for all inputs or none"
        )
    inputs: dict[str, npt.NDArray[Any]] = {}
    for index, tensor in enumerate(request.inputs):
        name, datatype, shape = tensor.name, tensor.datatype, list(tensor.shape)
        dtype = protocol.dtype_of(datatype)
        if any(d < 0 for d in shape):
            raise protocol.ProtocolError(f"input {name!r} has a negative dimension in {shape}")
        if name in inputs:
            raise protocol.ProtocolError(f"input {name!r} is given twice")
        if raw:
            inputs[name] = protocol.decode_binary_tensor(name, datatype, shape, raw[index])
            continue
        field = _CONTENTS_FIELD.get(datatype)
        if field is None:
            raise protocol.ProtocolError(f"input {name!r}: {datatype} needs raw_input_contents")
        values = getattr(tensor.contents, field)
        count = protocol.element_count(shape)
        if len(values) != count:
            raise protocol.ProtocolError(
                f"input {name!r}: got {len(values)} elements, shape {shape} needs {count}"
            )
        if datatype == "BYTES":
            array = np.empty(count, dtype=np.object_)
            array[:] = list(values)
        else:
            array = np.asarray(values, dtype=dtype)
        inputs[name] = array.reshape(shape)
    if not inputs:
        raise protocol.ProtocolError("request must have at least one input")
    return inputs


def encode_response(
    served: model.ServedModel, request_id: str, outputs: dict[str, npt.NDArray[Any]]
) -> Any:
    response = service_pb2.ModelInferResponse(
        model_name=served.name, model_version=served.version, id=request_id
    )
    for name, array in outputs.items():
        tensor = response.outputs.add()
        tensor.name = name
        tensor.datatype = protocol.datatype_of(array.dtype)
        tensor.shape.extend(array.shape)
        response.raw_output_contents.append(
            protocol.encode_bytes_tensor(array)
            if array.dtype == np.object_
            else np.ascontiguousarray(array).tobytes()
        )
    return response


@dataclasses.dataclass(frozen=True, slots=True)
class Method:
    """One RPC: its request message and the coroutine that answers one request message.

    A `streaming` method is bidirectional: the frontend calls `handler` once per message of
    the stream, in order, and sends each answer back on the same stream.
    """

    name: str
    request_type: Any
    handler: Callable[[Any], Awaitable[Any]]
    streaming: bool = False


def trailing_metadata(exc: errors.InferenceError) -> tuple[tuple[str, str], ...]:
    """What a call that ended in `exc` sends besides its status: overload says when to retry."""
    if exc.grpc_code == "UNAVAILABLE":
        return (("retry-after", RETRY_AFTER_SECONDS),)
    return ()


class Service:
    """The RPCs of GRPCInferenceService. Each raises an InferenceError (with its gRPC code) for
    a call that fails; the frontend turns it into the call's status."""

    def __init__(
        self, models: model.ModelSet, registry: metrics.Metrics, in_flight: InFlight
    ) -> None:
        self._models = models
        self._registry = registry
        self._in_flight = in_flight

    def methods(self) -> dict[str, Method]:
        """Every method by its HTTP/2 path, `/inference.GRPCInferenceService/<name>`."""
        pb = service_pb2
        table = [
            Method("ServerLive", pb.ServerLiveRequest, self.server_live),
            Method("ServerReady", pb.ServerReadyRequest, self.server_ready),
            Method("ModelReady", pb.ModelReadyRequest, self.model_ready),
            Method("ServerMetadata", pb.ServerMetadataRequest, self.server_metadata),
            Method("ModelMetadata", pb.ModelMetadataRequest, self.model_metadata),
            Method("ModelConfig", pb.ModelConfigRequest, self.model_config),
            Method("ModelStatistics", pb.ModelStatisticsRequest, self.model_statistics),
            Method("RepositoryIndex", pb.RepositoryIndexRequest, self.repository_index),
            Method("ModelInfer", pb.ModelInferRequest, self.model_infer),
            Method("ModelStreamInfer", pb.ModelInferRequest, self.stream_infer, streaming=True),
        ]
        return {f"/{SERVICE}/{m.name}": m for m in table}

    async def server_live(self, request: Any) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any) -> Any:
        return service_pb2.ServerReadyResponse(ready=self._models.ready)

    async def model_ready(self, request: Any) -> Any:
        try:
            self._models.get(request.name, request.version or None)
        except errors.ModelNotFoundError:
            return service_pb2.ModelReadyResponse(ready=False)
        return service_pb2.ModelReadyResponse(ready=self._models.ready)

    async def server_metadata(self, request: Any) -> Any:
        return service_pb2.ServerMetadataResponse(
            name=SERVER_NAME, version=kubeinfer_onnx.__version__, extensions=EXTENSIONS
        )

    async def model_metadata(self, request: Any) -> Any:
        served = self._models.get(request.name, request.version or None)
        document = served.metadata(self._models.versions(served.name))
        return json_format.ParseDict(document, service_pb2.ModelMetadataResponse())

    async def model_config(self, request: Any) -> Any:
        served = self._models.get(request.name, request.version or None)
        config = json_format.ParseDict(served.config_document(), model_config_pb2.ModelConfig())
        return service_pb2.ModelConfigResponse(config=config)

    async def model_statistics(self, request: Any) -> Any:
        name = version = None
        if request.name:
            served = self._models.get(request.name, request.version or None)
            name = served.name
            version = served.version if request.version else None
        selected = metrics.select(await self._registry.collect(), name, version)
        return json_format.ParseDict(
            metrics.statistics_document(selected), service_pb2.ModelStatisticsResponse()
        )

    async def repository_index(self, request: Any) -> Any:
        return service_pb2.RepositoryIndexResponse(
            models=[
                service_pb2.RepositoryIndexResponse.ModelIndex(
                    name=m.name, version=m.version, state="READY"
                )
                for m in self._models
            ]
        )

    async def _infer(self, request: Any) -> Any:
        """One ModelInferRequest to its response; raises InferenceError (booked) on failure."""
        started = time.monotonic_ns()
        served = self._models.get(request.model_name, request.model_version or None)
        try:
            inputs = decode_inputs(request)
        except errors.InferenceError as exc:
            served.record_failure(exc, started_ns=started)  # served.infer books the rest.
            raise
        names = [o.name for o in request.outputs] or None
        outputs = await served.infer(inputs, outputs=names, started_ns=started)
        return encode_response(served, request.id, outputs)

    async def model_infer(self, request: Any) -> Any:
        self._in_flight.count += 1
        try:
            return await self._infer(request)
        finally:
            self._in_flight.count -= 1

    async def stream_infer(self, request: Any) -> Any:
        # Errors go in-band, as Triton does, so one bad request does not end the stream.
        self._in_flight.count += 1
        try:
            response = await self._infer(request)
        except errors.InferenceError as exc:
            return service_pb2.ModelStreamInferResponse(error_message=str(exc))
        finally:
            self._in_flight.count -= 1
        return service_pb2.ModelStreamInferResponse(infer_response=response)
