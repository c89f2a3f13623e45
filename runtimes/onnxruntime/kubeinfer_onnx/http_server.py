"""The KServe v2 HTTP/REST endpoints on aiohttp, plus the separate /metrics app.

Owns routing, reading bodies within the size limit, and turning InferenceErrors into the
v2 error JSON with the right status. Tensor encoding is `protocol`'s job and everything about
a model is `model`'s; handlers here only glue the two together.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

import kubeinfer_onnx
from kubeinfer_onnx import errors, metrics, model, protocol

SERVER_NAME = "kubeinfer-onnx"
EXTENSIONS = ["binary_tensor_data", "statistics", "model_configuration"]
RETRY_AFTER_SECONDS = "1"


class InFlight:
    """Counts requests being handled, so a drain can wait for them to finish."""

    def __init__(self) -> None:
        self.count = 0


def _json(document: Any, *, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(document).encode(), status=status, content_type="application/json"
    )


def error_response(exc: errors.InferenceError) -> web.Response:
    reply = Reply.error(exc)
    return web.Response(
        body=reply.body,
        status=reply.status,
        content_type=reply.content_type,
        headers=reply.headers or None,
    )


def build_app(
    models: model.ModelSet,
    *,
    max_request_bytes: int,
    in_flight: InFlight,
) -> web.Application:
    # aiohttp enforces client_max_size while reading; we also check Content-Length up front
    # so an oversized body is refused before any of it is buffered.
    app = web.Application(client_max_size=max_request_bytes)

    def lookup(request: web.Request) -> model.ServedModel:
        return models.get(request.match_info["model"], request.match_info.get("version"))

    def guarded(handler: Callable[[web.Request], Any]) -> Any:
        async def wrapper(request: web.Request) -> web.StreamResponse:
            try:
                response: web.StreamResponse = await handler(request)
            except errors.InferenceError as exc:
                response = error_response(exc)
            if models.draining:
                response.headers["Connection"] = "close"  # Send clients to another replica.
            return response

        return wrapper

    async def live(request: web.Request) -> web.Response:
        return web.Response()

    async def ready(request: web.Request) -> web.Response:
        return web.Response(status=503 if models.draining else 200)

    async def server_metadata(request: web.Request) -> web.Response:
        return _json(
            {"name": SERVER_NAME, "version": kubeinfer_onnx.__version__, "extensions": EXTENSIONS}
        )

    async def model_metadata(request: web.Request) -> web.Response:
        served = lookup(request)
        return _json(served.metadata(models.versions(served.name)))

    async def model_ready(request: web.Request) -> web.Response:
        lookup(request)
        return web.Response(status=503 if models.draining else 200)

    async def model_config(request: web.Request) -> web.Response:
        return _json(lookup(request).config_document())

    async def model_stats(request: web.Request) -> web.Response:
        if "model" in request.match_info:
            selected = (
                [lookup(request).stats]
                if "version" in request.match_info
                else [m.stats for m in models if m.name == lookup(request).name]
            )
        else:
            selected = [m.stats for m in models]
        return _json(metrics.statistics_document(selected))

    async def repository_index(request: web.Request) -> web.Response:
        return _json([{"name": m.name, "version": m.version, "state": "READY"} for m in models])

    async def infer(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > max_request_bytes:
            body = None  # refused before any of it is buffered
        else:
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                body = None
        reply = await run_infer(
            models,
            name=request.match_info["model"],
            version=request.match_info.get("version"),
            body=body,
            content_length=request.content_length,
            header_length=request.headers.get(protocol.HEADER_LENGTH),
            max_request_bytes=max_request_bytes,
            in_flight=in_flight,
        )
        return web.Response(
            body=reply.body,
            status=reply.status,
            content_type=reply.content_type,
            headers=reply.headers or None,
        )

    routes = [
        ("GET", "/v2/health/live", live),
        ("GET", "/v2/health/ready", ready),
        ("GET", "/v2", server_metadata),
        ("GET", "/v2/models/stats", model_stats),
        ("POST", "/v2/repository/index", repository_index),
    ]
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        routes += [
            ("GET", prefix, model_metadata),
            ("GET", prefix + "/ready", model_ready),
            ("GET", prefix + "/config", model_config),
            ("GET", prefix + "/stats", model_stats),
            ("POST", prefix + "/infer", infer),
        ]
    for method, path, handler in routes:
        app.router.add_route(method, path, guarded(handler))
    return app


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """An answer as bytes, for aiohttp or for the fast path (http_fastpath) to send."""

    status: int
    body: bytes
    content_type: str
    headers: dict[str, str]

    @classmethod
    def error(cls, exc: errors.InferenceError) -> Reply:
        headers = {"Retry-After": RETRY_AFTER_SECONDS} if exc.http_status == 503 else {}
        return cls(exc.http_status, protocol.error_body(str(exc)), "application/json", headers)


async def run_infer(
    models: model.ModelSet,
    *,
    name: str,
    version: str | None,
    body: bytes | None,
    content_length: int | None,
    header_length: str | None,
    max_request_bytes: int,
    in_flight: InFlight,
) -> Reply:
    """One POST .../infer, whichever HTTP stack read it; body None means it was over the limit.

    Every InferenceError becomes its v2 error reply here, so both stacks answer alike.
    """
    started = time.monotonic_ns()
    in_flight.count += 1
    try:
        served = models.get(name, version)
        try:
            if body is None:
                size = f"of {content_length} bytes " if content_length is not None else ""
                raise errors.InvalidInputError(
                    f"request body {size}exceeds the limit of {max_request_bytes} bytes"
                )
            decoded = protocol.decode_infer_request(body, header_length)
        except errors.InferenceError as exc:
            served.record_failure(exc, started_ns=started)  # served.infer books the rest.
            raise
        names = None if decoded.outputs is None else [o.name for o in decoded.outputs]
        outputs = await served.infer(decoded.inputs, outputs=names, started_ns=started)
        return _reply(served, decoded, outputs)
    except errors.InferenceError as exc:
        return Reply.error(exc)
    finally:
        in_flight.count -= 1


def _reply(
    served: model.ServedModel, decoded: protocol.InferRequest, outputs: dict[str, Any]
) -> Reply:
    if decoded.outputs is None:
        binary = dict.fromkeys(outputs, decoded.binary_default)
    else:
        binary = {o.name: o.binary for o in decoded.outputs}
    body, header_length = protocol.encode_infer_response(
        model_name=served.name,
        model_version=served.version,
        request_id=decoded.id,
        outputs=outputs,
        binary=binary,
    )
    if header_length is None:
        return Reply(200, body, "application/json", {})
    return Reply(
        200, body, "application/octet-stream", {protocol.HEADER_LENGTH: str(header_length)}
    )


def build_metrics_app(registry: metrics.Metrics) -> web.Application:
    app = web.Application()

    async def scrape(request: web.Request) -> web.Response:
        return web.Response(
            body=registry.render(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    app.router.add_get("/metrics", scrape)
    return app
