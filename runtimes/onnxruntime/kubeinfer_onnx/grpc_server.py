"""`inference.GRPCInferenceService` on grpc.aio, built on the servicer and messages that
tritonclient ships, so the wire format is exactly the one Triton's clients speak.

Owns converting protobuf tensors to numpy and back and mapping InferenceErrors to status
codes. Everything about a model is `model`'s; BYTES framing comes from `protocol`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
from google.protobuf import json_format
from tritonclient.grpc import (
    model_config_pb2,
    service_pb2,
    service_pb2_grpc,
)

from kubeinfer_onnx import __version__, errors, metrics, model, protocol
from kubeinfer_onnx.http_server import EXTENSIONS, RETRY_AFTER_SECONDS, SERVER_NAME, InFlight

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


class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, models: model.ModelSet, in_flight: InFlight) -> None:
        self._models = models
        self._in_flight = in_flight

    async def _abort(self, context: Any, exc: errors.InferenceError) -> None:
        if exc.grpc_code == "UNAVAILABLE":
            context.set_trailing_metadata((("retry-after", RETRY_AFTER_SECONDS),))
        await context.abort(getattr(grpc.StatusCode, exc.grpc_code), str(exc))

    async def _lookup(self, context: Any, name: str, version: str) -> model.ServedModel:
        try:
            return self._models.get(name, version or None)
        except errors.InferenceError as exc:
            await self._abort(context, exc)
            raise  # abort() raises; this line only satisfies the type checker.

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerReadyResponse(ready=not self._models.draining)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        try:
            self._models.get(request.name, request.version or None)
        except errors.ModelNotFoundError:
            return service_pb2.ModelReadyResponse(ready=False)
        return service_pb2.ModelReadyResponse(ready=not self._models.draining)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerMetadataResponse(
            name=SERVER_NAME, version=__version__, extensions=EXTENSIONS
        )

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        served = await self._lookup(context, request.name, request.version)
        document = served.metadata(self._models.versions(served.name))
        return json_format.ParseDict(document, service_pb2.ModelMetadataResponse())

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        served = await self._lookup(context, request.name, request.version)
        config = json_format.ParseDict(served.config_document(), model_config_pb2.ModelConfig())
        return service_pb2.ModelConfigResponse(config=config)

    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        if request.name:
            served = await self._lookup(context, request.name, request.version)
            selected = (
                [served.stats]
                if request.version
                else [m.stats for m in self._models if m.name == served.name]
            )
        else:
            selected = [m.stats for m in self._models]
        return json_format.ParseDict(
            metrics.statistics_document(selected), service_pb2.ModelStatisticsResponse()
        )

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
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

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        self._in_flight.count += 1
        try:
            return await self._infer(request)
        except errors.InferenceError as exc:
            await self._abort(context, exc)
        finally:
            self._in_flight.count -= 1

    async def ModelStreamInfer(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        # Requests on one stream are answered in order; errors go in-band, as Triton does, so
        # one bad request does not end the stream.
        async for request in request_iterator:
            self._in_flight.count += 1
            try:
                response = await self._infer(request)
            except errors.InferenceError as exc:
                yield service_pb2.ModelStreamInferResponse(error_message=str(exc))
            else:
                yield service_pb2.ModelStreamInferResponse(infer_response=response)
            finally:
                self._in_flight.count -= 1


def build_server(
    models: model.ModelSet, *, address: str, port: int, max_request_bytes: int, in_flight: InFlight
) -> tuple[Any, int]:
    """The grpc.aio server bound to address:port (not started); returns it and the bound port."""
    server = grpc.aio.server(
        options=[
            # The same body limit as HTTP: gRPC answers RESOURCE_EXHAUSTED past it.
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),  # A second server on a taken port must fail, not share it.
        ]
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(models, in_flight), server)
    bound = server.add_insecure_port(f"{address}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind gRPC to {address}:{port}")
    return server, bound
