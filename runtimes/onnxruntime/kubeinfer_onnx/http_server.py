"""The KServe v2 HTTP/REST endpoints, whichever HTTP stack reads the request.

Owns the route table (`Endpoints`), what each endpoint answers (a `Reply`: status, body,
headers) and turning InferenceErrors into the v2 error JSON with the right status. Reading and
writing HTTP is `http_fastpath`'s (plain requests) or `http_aiohttp`'s (everything else), so
both answer alike. Tensor encoding is `protocol`'s job and everything about a model is
`model`'s; handlers here only glue the two together.

Why no aiohttp here: importing it costs ~0.3 s at every start (its client and two TLS
contexts with the system's certificates), about half of the time from process start to
ready, for requests that almost never come (chunked bodies, Expect, odd paths).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import kubeinfer_onnx
from kubeinfer_onnx import errors, metrics, model, protocol

SERVER_NAME = "kubeinfer-onnx"
EXTENSIONS = ["binary_tensor_data", "statistics", "model_configuration"]
RETRY_AFTER_SECONDS = "1"


class InFlight:
    """Counts requests being handled, so a drain can wait for them to finish."""

    def __init__(self) -> None:
        self.count = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """An answer as bytes, for either HTTP stack to send."""

    status: int
    body: bytes
    content_type: str
    headers: dict[str, str]

    @classmethod
    def error(cls, exc: errors.InferenceError) -> Reply:
        headers = {"Retry-After": RETRY_AFTER_SECONDS} if exc.http_status == 503 else {}
        return cls(exc.http_status, protocol.error_body(str(exc)), "application/json", headers)

    @classmethod
    def json(cls, document: Any) -> Reply:
        return cls(200, json.dumps(document).encode(), "application/json", {})

    @classmethod
    def empty(cls, status: int = 200) -> Reply:
        return cls(status, b"", "application/octet-stream", {})


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """What a handler needs of a request. `body` is None when it was over the size limit
    (refused before it was buffered) and for requests that have none."""

    params: dict[str, str]
    body: bytes | None = None
    content_length: int | None = None
    header_length: str | None = None  # Inference-Header-Content-Length


Handler = Callable[[Request], Awaitable[Reply]]


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str  # segments in braces ("{model}") match one non-empty path segment
    handler: Handler
    has_body: bool = False  # read the body (within the size limit) for the handler
    segments: tuple[str, ...] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(self.path.split("/")))

    def match(self, segments: list[str]) -> dict[str, str] | None:
        params: dict[str, str] = {}
        for mine, theirs in zip(self.segments, segments, strict=True):
            if mine.startswith("{"):
                if not theirs:
                    return None
                params[mine[1:-1]] = theirs
            elif mine != theirs:
                return None
        return params


class Endpoints:
    """A route table: which handler answers a method and path. While `draining()` holds,
    every answer closes its connection, sending clients to another replica."""

    def __init__(
        self, routes: list[Route], *, draining: Callable[[], bool] = lambda: False
    ) -> None:
        self.routes = routes
        self.draining = draining
        # Indexed by method and segment count: an infer request is matched against one or
        # two routes, not the table (this runs once per request on the hot path).
        self._index: dict[tuple[str, int], list[Route]] = {}
        for route in routes:
            self._index.setdefault((route.method, len(route.segments)), []).append(route)

    def __iter__(self) -> Iterator[Route]:
        return iter(self.routes)

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The route and its parameters for an already-decoded path; None when no route
        takes it (the fallback stack then answers 404 or 405). Fixed segments win over
        parameters: routes are tried in table order."""
        segments = path.split("/")
        for route in self._index.get((method, len(segments)), ()):
            params = route.match(segments)
            if params is not None:
                return route, params
        return None


def v2_endpoints(
    models: model.ModelSet,
    *,
    registry: metrics.Metrics,
    max_request_bytes: int,
    in_flight: InFlight,
) -> Endpoints:
    """The KServe v2 REST API over `models` (plus Triton's statistics, from `registry`,
    config and repository index, which its clients and perf_analyzer use)."""

    def lookup(request: Request) -> model.ServedModel:
        return models.get(request.params["model"], request.params.get("version"))

    async def live(request: Request) -> Reply:
        return Reply.empty()

    async def ready(request: Request) -> Reply:
        return Reply.empty(200 if models.ready else 503)

    async def server_metadata(request: Request) -> Reply:
        return Reply.json(
            {"name": SERVER_NAME, "version": kubeinfer_onnx.__version__, "extensions": EXTENSIONS}
        )

    async def model_metadata(request: Request) -> Reply:
        served = lookup(request)
        return Reply.json(served.metadata(models.versions(served.name)))

    async def model_ready(request: Request) -> Reply:
        lookup(request)
        return Reply.empty(200 if models.ready else 503)

    async def model_config(request: Request) -> Reply:
        return Reply.json(lookup(request).config_document())

    async def model_stats(request: Request) -> Reply:
        name = version = None
        if "model" in request.params:
            served = lookup(request)  # Unknown model or version: 400, before any gathering.
            name = served.name
            version = served.version if "version" in request.params else None
        selected = metrics.select(await registry.collect(), name, version)
        return Reply.json(metrics.statistics_document(selected))

    async def repository_index(request: Request) -> Reply:
        return Reply.json(
            [{"name": m.name, "version": m.version, "state": "READY"} for m in models]
        )

    async def infer(request: Request) -> Reply:
        return await run_infer(
            models,
            name=request.params["model"],
            version=request.params.get("version"),
            body=request.body,
            content_length=request.content_length,
            header_length=request.header_length,
            max_request_bytes=max_request_bytes,
            in_flight=in_flight,
        )

    routes = [
        Route("GET", "/v2/health/live", live),
        Route("GET", "/v2/health/ready", ready),
        Route("GET", "/v2", server_metadata),
        Route("GET", "/v2/models/stats", model_stats),
        # Its body (Triton's {"ready": ...} filter) is read and ignored: every model is ready.
        Route("POST", "/v2/repository/index", repository_index, has_body=True),
    ]
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        routes += [
            Route("GET", prefix, model_metadata),
            Route("GET", prefix + "/ready", model_ready),
            Route("GET", prefix + "/config", model_config),
            Route("GET", prefix + "/stats", model_stats),
            Route("POST", prefix + "/infer", infer, has_body=True),
        ]
    return Endpoints(routes, draining=lambda: models.draining)


def metrics_endpoints(registry: metrics.Metrics) -> Endpoints:
    """The separate metrics port: GET /metrics in Prometheus' text format."""

    async def scrape(request: Request) -> Reply:
        return Reply(200, await registry.scrape(), "text/plain; version=0.0.4; charset=utf-8", {})

    return Endpoints([Route("GET", "/metrics", scrape)])


async def answer(route: Route, request: Request) -> Reply:
    """The route's reply to a request; an InferenceError is its v2 error reply."""
    try:
        return await route.handler(request)
    except errors.InferenceError as exc:
        return Reply.error(exc)


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
