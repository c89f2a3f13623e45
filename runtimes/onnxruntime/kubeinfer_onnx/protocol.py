"""KServe v2 / Open Inference Protocol tensors: JSON and the binary tensor data extension.

Pure functions from bytes to tensors and back; no I/O, no model knowledge (whether an input
fits the model is `model`'s job). Every malformed body raises ProtocolError with a message
that names the problem, which the transports send back as `{"error": "..."}` with a 400.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from kubeinfer_onnx import errors

HEADER_LENGTH = "Inference-Header-Content-Length"

# v2 datatype name -> numpy dtype. BYTES is a numpy object array of `bytes` values.
DTYPES: dict[str, np.dtype[Any]] = {
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
_DATATYPES = {dtype: name for name, dtype in DTYPES.items()}


class ProtocolError(errors.InvalidInputError):
    """The request body is not a valid v2 inference request."""


@dataclasses.dataclass(frozen=True, slots=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class InferRequest:
    id: str | None
    inputs: dict[str, npt.NDArray[Any]]
    # None: every model output, in the encoding `binary_default` says.
    outputs: list[RequestedOutput] | None
    binary_default: bool


def datatype_of(dtype: np.dtype[Any]) -> str:
    try:
        return _DATATYPES[np.dtype(dtype)]
    except KeyError:
        raise ProtocolError(f"numpy dtype {dtype} has no v2 datatype") from None


def dtype_of(datatype: str) -> np.dtype[Any]:
    try:
        return DTYPES[datatype]
    except KeyError:
        raise ProtocolError(
            f"unknown datatype {datatype!r}; expected one of {sorted(DTYPES)}"
        ) from None


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)


def decode_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """Decode a POST /v2/models/{m}/infer body (JSON, optionally followed by binary tensors)."""
    json_end = len(body)
    if header_length is not None:
        try:
            json_end = int(header_length)
        except ValueError:
            raise ProtocolError(
                f"{HEADER_LENGTH} must be an integer, got {header_length!r}"
            ) from None
        if not 0 <= json_end <= len(body):
            raise ProtocolError(
                f"{HEADER_LENGTH} {json_end} is outside the body of {len(body)} bytes"
            )
    try:
        header = json.loads(body[:json_end])
    # RecursionError: deeply nested JSON ([[[[...) exhausts the parser's stack.
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(f"malformed JSON in request body: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("request body must be a JSON object")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("request must have a non-empty 'inputs' list")
    binary = memoryview(body)[json_end:]
    offset = 0
    inputs: dict[str, npt.NDArray[Any]] = {}
    for raw in raw_inputs:
        name, datatype, shape, params = _tensor_header(raw, kind="input")
        if name in inputs:
            raise ProtocolError(f"input {name!r} is given twice")
        size = params.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0:
                raise ProtocolError(f"input {name!r}: binary_data_size must be a count of bytes")
            if offset + size > len(binary):
                raise ProtocolError(
                    f"input {name!r}: binary_data_size {size} runs past the end of the body"
                )
            inputs[name] = decode_binary_tensor(
                name, datatype, shape, binary[offset : offset + size]
            )
            offset += size
        else:
            if "data" not in raw:
                raise ProtocolError(f"input {name!r} has neither 'data' nor binary_data_size")
            inputs[name] = _decode_json_tensor(name, datatype, shape, raw["data"])
    if offset != len(binary):
        raise ProtocolError(
            f"{len(binary) - offset} bytes of binary data follow the JSON but no input claims them"
        )
    params = header.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError("'parameters' must be an object")
    binary_default = bool(params.get("binary_data_output", False))
    outputs: list[RequestedOutput] | None = None
    if "outputs" in header:
        raw_outputs = header["outputs"]
        if not isinstance(raw_outputs, list):
            raise ProtocolError("'outputs' must be a list")
        outputs = []
        for raw in raw_outputs:
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise ProtocolError("each requested output must be an object with a 'name'")
            out_params = raw.get("parameters") or {}
            if not isinstance(out_params, dict):
                raise ProtocolError(f"output {raw['name']!r}: 'parameters' must be an object")
            outputs.append(
                RequestedOutput(
                    name=raw["name"],
                    binary=bool(out_params.get("binary_data", binary_default)),
                )
            )
    request_id = header.get("id")
    return InferRequest(
        id=str(request_id) if request_id is not None else None,
        inputs=inputs,
        outputs=outputs,
        binary_default=binary_default,
    )


def decode_binary_tensor(
    name: str, datatype: str, shape: Sequence[int], raw: bytes | memoryview
) -> npt.NDArray[Any]:
    """Raw little-endian bytes (or length-prefixed strings for BYTES) to an array of `shape`."""
    dtype = dtype_of(datatype)
    count = element_count(shape)
    if datatype == "BYTES":
        values = _split_bytes(name, raw)
        if len(values) != count:
            raise ProtocolError(
                f"input {name!r}: got {len(values)} elements, shape {list(shape)} needs {count}"
            )
        array = np.empty(count, dtype=np.object_)
        array[:] = values
        return array.reshape(shape)
    if len(raw) != count * dtype.itemsize:
        raise ProtocolError(
            f"input {name!r}: got {len(raw)} bytes, shape {list(shape)} of {datatype} needs "
            f"{count * dtype.itemsize}"
        )
    # frombuffer is a view on the request body: no copy on the hot path.
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def encode_bytes_tensor(array: npt.NDArray[Any]) -> bytes:
    """BYTES elements as the v2 binary form: a 4-byte little-endian length before each."""
    parts: list[bytes] = []
    for item in array.reshape(-1):
        value = item if isinstance(item, bytes) else str(item).encode()
        parts.append(len(value).to_bytes(4, "little"))
        parts.append(value)
    return b"".join(parts)


def encode_infer_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Mapping[str, npt.NDArray[Any]],
    binary: Mapping[str, bool],
) -> tuple[bytes, int | None]:
    """JSON response, with the binary outputs appended after it when any output asks for them.

    Returns the body and the JSON header length for `Inference-Header-Content-Length` (None
    when the body is JSON only).
    """
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, array in outputs.items():
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": datatype_of(array.dtype),
            "shape": list(array.shape),
        }
        if binary.get(name, False):
            blob = (
                encode_bytes_tensor(array)
                if array.dtype == np.object_
                else np.ascontiguousarray(array).tobytes()
            )
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif array.dtype == np.object_:
            tensor["data"] = [
                v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                for v in array.reshape(-1)
            ]
        else:
            tensor["data"] = array.reshape(-1).tolist()
        tensors.append(tensor)
    document: dict[str, Any] = {
        "model_name": model_name,
        "model_version": model_version,
        "outputs": tensors,
    }
    if request_id is not None:
        document["id"] = request_id
    header = json.dumps(document, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def _tensor_header(raw: Any, *, kind: str) -> tuple[str, str, list[int], dict[str, Any]]:
    if not isinstance(raw, dict):
        raise ProtocolError(f"each {kind} must be a JSON object")
    name = raw.get("name")
    if not isinstance(name, str):
        raise ProtocolError(f"each {kind} needs a string 'name'")
    datatype = raw.get("datatype")
    if not isinstance(datatype, str):
        raise ProtocolError(f"{kind} {name!r} needs a string 'datatype'")
    dtype_of(datatype)  # Raises on unknown names with the list of known ones.
    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ProtocolError(f"{kind} {name!r} needs a 'shape' list of non-negative integers")
    params = raw.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError(f"{kind} {name!r}: 'parameters' must be an object")
    return name, datatype, shape, params


def _decode_json_tensor(name: str, datatype: str, shape: list[int], data: Any) -> npt.NDArray[Any]:
    count = element_count(shape)
    if datatype == "BYTES":
        flat = _flatten(data)
        if not all(isinstance(v, str) for v in flat):
            raise ProtocolError(f"input {name!r}: BYTES data must be strings")
        array = np.empty(len(flat), dtype=np.object_)
        array[:] = [v.encode() for v in flat]
    else:
        array = _json_numbers(name, datatype, data)
    if array.size != count:
        raise ProtocolError(
            f"input {name!r}: got {array.size} elements, shape {shape} needs {count}"
        )
    return array.reshape(shape)


# JSON values each datatype accepts, by numpy kind: b bool, i/u integers, f floats.
_JSON_KINDS = {"BOOL": "b", "FP16": "iuf", "FP32": "iuf", "FP64": "iuf"}


def _json_numbers(name: str, datatype: str, data: Any) -> npt.NDArray[Any]:
    """JSON ``data`` as a flat array of ``datatype``, refusing what would only convert by
    accident: null (NaN), strings, booleans for numbers, fractions or out-of-range values for
    integers. A bad request must get a 400, never an answer computed from garbage."""
    try:
        parsed = np.asarray(data)
    except ValueError as exc:  # ragged nesting
        raise ProtocolError(f"input {name!r}: data is not a regular list: {exc}") from None
    allowed = _JSON_KINDS.get(datatype, "iu")
    if parsed.dtype.kind not in allowed:
        found = {"O": "null or mixed values", "U": "strings", "b": "booleans", "f": "fractions"}
        raise ProtocolError(
            f"input {name!r}: {datatype} data must be "
            f"{'true/false' if datatype == 'BOOL' else 'numbers'}, got "
            f"{found.get(parsed.dtype.kind, parsed.dtype.name)}"
        )
    target = DTYPES[datatype]
    if target.kind in "iu" and parsed.size:
        info = np.iinfo(target)
        if parsed.min() < info.min or parsed.max() > info.max:
            raise ProtocolError(f"input {name!r}: a value is out of range for {datatype}")
    return parsed.astype(target).reshape(-1)


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item))
    return flat


def _split_bytes(name: str, raw: bytes | memoryview) -> list[bytes]:
    values: list[bytes] = []
    view = memoryview(raw)
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise ProtocolError(f"input {name!r}: truncated BYTES length prefix")
        length = int.from_bytes(view[offset : offset + 4], "little")
        offset += 4
        if offset + length > len(view):
            raise ProtocolError(f"input {name!r}: BYTES element runs past its data")
        values.append(bytes(view[offset : offset + length]))
        offset += length
    return values
