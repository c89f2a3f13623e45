"""Errors an inference request can end in, each knowing its HTTP status and gRPC code.

One table here keeps the two transports answering the same problem the same way: the HTTP
server sends `http_status` with `{"error": message}`, the gRPC server aborts with `grpc_code`.
"""

from __future__ import annotations


class InferenceError(Exception):
    http_status = 500
    grpc_code = "INTERNAL"
    # The `reason` label of nv_inference_request_failure, with Triton's values.
    failure_reason = "OTHER"


class InvalidInputError(InferenceError):
    """The request does not fit the protocol or the model (name, dtype, shape, size)."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class ModelNotFoundError(InferenceError):
    http_status = 404
    grpc_code = "NOT_FOUND"


class ModelNotReadyError(InferenceError):
    """The server is draining after SIGTERM; retry against another replica."""

    http_status = 503
    grpc_code = "UNAVAILABLE"
    failure_reason = "REJECTED"


class ServerBusyError(InferenceError):
    """The model's bounded queue is full; the client should back off (Retry-After)."""

    http_status = 503
    grpc_code = "UNAVAILABLE"
    failure_reason = "REJECTED"


class ExecutionError(InferenceError):
    """onnxruntime failed on a batch that passed validation."""

    failure_reason = "BACKEND"
