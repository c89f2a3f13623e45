"""The gRPC frontend on grpcio's grpc.aio, chosen with `--grpc-frontend grpcio`.

Owns adapting `grpc_server.Service`'s method table to grpc.aio's handlers and starting its
server. The default frontend is `grpc_fastpath`; this one stays for comparison (bench/runtime
measures the two) and as the fallback should a client need something only grpcio speaks. The
only module that imports grpc: its import is ~0.1 s of every start that does not need it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from kubeinfer_onnx import errors, grpc_server, tls


async def _abort(context: Any, exc: errors.InferenceError) -> None:
    context.set_trailing_metadata(grpc_server.trailing_metadata(exc))
    await context.abort(grpc.StatusCode[exc.grpc_code], str(exc))


def _unary(method: grpc_server.Method) -> Callable[[Any, Any], Awaitable[Any]]:
    async def call(request: Any, context: Any) -> Any:
        try:
            return await method.handler(request)
        except errors.InferenceError as exc:
            await _abort(context, exc)

    return call


def _stream(method: grpc_server.Method) -> Callable[[Any, Any], AsyncIterator[Any]]:
    async def call(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for request in requests:  # answered in order, one at a time
            yield await method.handler(request)

    return call


def build_server(
    service: grpc_server.Service,
    *,
    address: str,
    port: int,
    max_request_bytes: int,
    reuse_port: bool = False,
    tls_rotation: tls.Rotation | None = None,
) -> tuple[Any, int]:
    """The grpc.aio server bound to address:port (not started); returns it and the bound port.
    `tls_rotation`: serve over TLS (mutual when its files say so), each new connection with
    the rotation's newest snapshot."""
    handlers: dict[str, Any] = {}
    for method in service.methods().values():
        codec: dict[str, Any] = {
            "request_deserializer": method.request_type.FromString,
            "response_serializer": lambda message: message.SerializeToString(),
        }
        handlers[method.name] = (
            grpc.stream_stream_rpc_method_handler(_stream(method), **codec)
            if method.streaming
            else grpc.unary_unary_rpc_method_handler(_unary(method), **codec)
        )
    server = grpc.aio.server(
        options=[
            # The same body limit as HTTP: gRPC answers RESOURCE_EXHAUSTED past it.
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.max_send_message_length", -1),
            # A second server on a taken port must fail, not share it; sibling workers share.
            ("grpc.so_reuseport", int(reuse_port)),
        ]
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(grpc_server.SERVICE, handlers),)
    )
    if tls_rotation is None:
        bound = server.add_insecure_port(f"{address}:{port}")
    else:
        bound = server.add_secure_port(f"{address}:{port}", _credentials(tls_rotation))
    if bound == 0:
        raise OSError(f"cannot bind gRPC to {address}:{port}")
    return server, bound


def _credentials(rotation: tls.Rotation) -> Any:
    """Credentials that take the rotation's newest snapshot: grpc asks the fetcher before each
    new connection's handshake, and a None answer keeps what it has."""

    def configuration(snapshot: tls.Snapshot) -> Any:
        return grpc.ssl_server_certificate_configuration(
            [(snapshot.key, snapshot.cert)], root_certificates=snapshot.root
        )

    served = [rotation.version]

    def fetch() -> Any:
        version = rotation.version
        if version == served[0]:
            return None
        served[0] = version
        return configuration(rotation.current)

    return grpc.dynamic_ssl_server_credentials(
        configuration(rotation.current),
        fetch,
        require_client_authentication=rotation.files.mutual,
    )
