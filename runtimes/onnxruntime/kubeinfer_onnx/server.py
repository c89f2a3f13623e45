"""`kubeinfer-onnx-server`: flags, start-up, and the SIGTERM drain.

Owns the process: parse Triton-like flags, hand over to `workers` to supervise several server
processes when asked for more than one, load CUDA's libraries when a GPU may be used, load
the repository, open NVML for the GPU metrics, bind HTTP, gRPC and metrics on their
addresses, and on SIGTERM/SIGINT turn readiness false, keep answering for the drain delay,
stop listening, finish every accepted request, then exit. Nothing else here: each piece it
starts is built by its own module.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import importlib.util
import logging
import os
import pathlib
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

import onnxruntime as ort

from kubeinfer_onnx import (
    cpus,
    device,
    grpc_fastpath,
    grpc_server,
    http_fastpath,
    http_server,
    metrics,
    model,
    nvml,
    repository,
    tls,
    workers,
)

log = logging.getLogger("kubeinfer_onnx")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kubeinfer-onnx-server",
        description="Serve ONNX models over KServe v2 HTTP/gRPC with Triton-compatible metrics.",
    )
    parser.add_argument(
        "--model-repository",
        required=True,
        type=pathlib.Path,
        help="folder laid out as <model>/<version>/model.onnx",
    )
    parser.add_argument(
        "--address",
        default="127.0.0.1",
        help="default bind address for all three ports (0.0.0.0 in a pod)",
    )
    parser.add_argument("--http-address", help="bind address for HTTP (default: --address)")
    parser.add_argument("--grpc-address", help="bind address for gRPC (default: --address)")
    parser.add_argument("--metrics-address", help="bind address for metrics (default: --address)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--allow-grpc", type=_bool, default=True)
    parser.add_argument(
        "--grpc-frontend",
        choices=["fast", "grpcio"],
        default="fast",
        help="fast: HTTP/2 read by this server (grpc_fastpath); grpcio: grpc.aio",
    )
    tls.add_flags(parser, _bool)
    parser.add_argument("--allow-metrics", type=_bool, default=True)
    parser.add_argument(
        "--intra-op-threads",
        type=int,
        default=None,
        help="onnxruntime intra-op threads per model in each worker (default: the CPU limit, "
        "else the cores this process may run on, shared among the workers)",
    )
    parser.add_argument("--inter-op-threads", type=int, default=1)
    parser.add_argument(
        "--workers",
        type=_workers,
        default=None,
        help="server processes sharing the ports (SO_REUSEPORT), each with its own event loop "
        "and copy of every model; statistics and metrics are summed across them. More than "
        "one lifts the bound of one event-loop thread, at the cost of that many copies of the "
        "models in memory. Default auto: " + workers.DEFAULT_COUNT_RULE,
    )
    parser.add_argument(
        "--allow-spinning",
        type=_spinning_flag,
        default=None,
        help="let onnxruntime threads busy-wait for work (lower latency when cores are to "
        "spare, wasted CPU and quota when they are not): true (also between runs), in-runs "
        "(between a run's parallel sections only), false, or auto (the default): "
        + cpus.SPIN_RULE,
    )
    parser.add_argument(
        "--emulate-device-ms",
        type=float,
        default=0.0,
        help="make every model execution (one batch) take at least this long, sleeping off "
        "what onnxruntime did not use: emulates an accelerator's kernel time on a CPU-only "
        "host, so demos and tests get a service time that does not depend on the host's "
        "speed or on how busy its cores are (default 0: off)",
    )
    parser.add_argument(
        "--device",
        type=device.Device,
        choices=list(device.Device),
        default=os.environ.get(device.ENV) or device.Device.AUTO.value,
        help="where models compute: gpu (TensorRT, then CUDA; on CPU, reported in /metrics "
        "as kubeinfer_execution_provider, when no GPU provider starts), cpu, or auto (GPU "
        f"providers when this onnxruntime build has them). Default: ${device.ENV}, else auto",
    )
    parser.add_argument(
        "--max-queue-size",
        type=int,
        default=256,
        help="requests queued per model before 503/UNAVAILABLE",
    )
    parser.add_argument(
        "--max-request-bytes",
        type=int,
        default=64 * 1024 * 1024,
        help="largest request body accepted (HTTP 400 / gRPC past it)",
    )
    parser.add_argument(
        "--latest-version-only",
        action="store_true",
        help="load only the newest version of each model",
    )
    parser.add_argument(
        "--drain-delay-secs",
        type=float,
        default=0.0,
        help="after SIGTERM, keep serving (not ready) this long so endpoints "
        "can drop the pod before listeners close",
    )
    parser.add_argument(
        "--exit-timeout-secs",
        type=float,
        default=30.0,
        help="longest wait for in-flight requests after SIGTERM",
    )
    parser.add_argument(
        "--event-loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="auto: uvloop when installed",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if args.grpc_frontend == "grpcio" and importlib.util.find_spec("grpc") is None:
        parser.error(
            "--grpc-frontend grpcio needs grpcio, which is not installed here (the server "
            "image leaves it out): pip install 'kubeinfer-onnx[grpcio]', or use the default "
            "frontend, --grpc-frontend fast"
        )
    try:  # Bad TLS flags or files fail once, here, naming the flag or the file.
        args.grpc_tls = tls.from_args(args) if args.allow_grpc else None
    except tls.TlsError as exc:
        parser.error(str(exc))
    return args


def _workers(text: str) -> int | None:
    """A worker count, or None for auto."""
    if text == "auto":
        return None
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected auto or a count >= 1, got {text!r}")
    return count


def _spinning_flag(text: str) -> cpus.Spinning | None:
    """`--allow-spinning`: None for auto; true and false as before in-runs existed."""
    if text.lower() == "auto":
        return None
    if text.lower() == cpus.Spinning.IN_RUNS.value:
        return cpus.Spinning.IN_RUNS
    try:
        return cpus.Spinning.ON if _bool(text) else cpus.Spinning.OFF
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected auto, true, in-runs or false, got {text!r}"
        ) from None


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


async def serve(
    args: argparse.Namespace,
    *,
    ready: asyncio.Event | None = None,
    peers: workers.Peers | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or until cancelled), then drain and return. `peers`: this
    process is one of several workers on the same ports."""
    host = cpus.Cpus.read()
    threads = args.intra_op_threads or host.threads_per_worker(args.workers or 1)
    options = model.ServerOptions(
        intra_op_threads=threads,
        inter_op_threads=args.inter_op_threads,
        max_queue_size=args.max_queue_size,
        spinning=_spinning(args, host, threads),
        emulate_device_s=args.emulate_device_ms / 1000.0,
        device=args.device,
    )
    # From the first moment, not only once serving: a SIGTERM while the models load (the pod
    # deleted during its start-up) must stop this server as it would a ready one, exit status 0,
    # not kill it with the default action (143). A worker is forked with these signals held
    # back (workers.supervise) so that none is lost before this point; they are let in here.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    _preload_cuda(args.device)
    entries = repository.scan(args.model_repository)
    log.info("loading %s from %s", ", ".join(sorted(entries)) or "no models", args.model_repository)
    models = await asyncio.to_thread(
        model.load, entries, options=options, all_versions=not args.latest_version_only
    )
    if stop.is_set():
        # Never listened, so nothing to drain: nobody was sent here.
        log.info("stopped while loading the models")
        return
    gpus = nvml.Gpus.open() if args.device is not device.Device.CPU else None
    registry = metrics.Metrics(gpus=gpus)
    for served in models:
        served.attach_metrics(registry)
        served.batcher.start()
    in_flight = http_server.InFlight()
    if peers is not None:
        # Before binding: from its first connection, this worker's statistics add up with
        # its siblings'.
        await peers.start(registry)
        models.siblings_up = peers.all_up
    shared = peers is not None

    http_address = args.http_address or args.address
    endpoints = http_server.v2_endpoints(
        models, registry=registry, max_request_bytes=args.max_request_bytes, in_flight=in_flight
    )
    http = await _listen(
        endpoints,
        http_address,
        args.http_port,
        args.max_request_bytes,
        args.exit_timeout_secs,
        shared=shared,
    )
    metrics_http: _Listener | None = None
    if args.allow_metrics:
        metrics_http = await _listen(
            http_server.metrics_endpoints(registry),
            args.metrics_address or args.address,
            args.metrics_port,
            args.max_request_bytes,
            args.exit_timeout_secs,
            shared=shared,
        )
    grpc: Any = None
    if args.allow_grpc:
        grpc = await _grpc(args, grpc_server.Service(models, registry, in_flight), shared=shared)
    log.info(
        "serving %s on http %s:%d, grpc %s, metrics %s; %d intra-op threads, on %s",
        ", ".join(f"{m.name}/{m.version}" for m in models),
        http_address,
        args.http_port,
        f"{args.grpc_address or args.address}:{args.grpc_port} ({args.grpc_frontend}"
        f"{', ' + args.grpc_tls.label if args.grpc_tls is not None else ''})"
        if grpc
        else "off",
        f"{args.metrics_address or args.address}:{args.metrics_port}" if metrics_http else "off",
        threads,
        sorted({f"{m.placement.provider} (--device {m.placement.requested})" for m in models}),
    )

    # Everything loaded so far (modules, sessions, protobuf descriptors: ~60k objects) lives as
    # long as the process. Frozen, the collector stops scanning it: a full collection under
    # load took up to 73 ms, an event-loop stall every request in flight waited out (p99).
    gc.freeze()
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await _drain(args, models, in_flight, http, grpc, metrics_http)
        if peers is not None:
            await peers.close()
        if gpus is not None:
            gpus.close()


@dataclasses.dataclass(frozen=True)
class _Listener:
    server: asyncio.Server
    fallback: http_fastpath.Fallback

    async def close(self) -> None:
        self.server.close()
        await self.fallback.close()


async def _listen(
    endpoints: http_server.Endpoints,
    address: str,
    port: int,
    max_request_bytes: int,
    shutdown_timeout: float,
    *,
    shared: bool,
) -> _Listener:
    """A listener whose connections http_fastpath reads; what it does not serve goes to
    aiohttp, loaded the first time a connection needs it. `shared`: on a port its sibling
    workers listen on too."""
    fallback = http_fastpath.Fallback(
        endpoints, max_request_bytes=max_request_bytes, shutdown_timeout=shutdown_timeout
    )
    server = await asyncio.get_running_loop().create_server(
        lambda: http_fastpath.FastProtocol(
            endpoints=endpoints, max_request_bytes=max_request_bytes, fallback=fallback
        ),
        address,
        port,
        backlog=128,
        reuse_port=shared,
    )
    return _Listener(server, fallback)


async def _grpc(args: argparse.Namespace, service: grpc_server.Service, *, shared: bool) -> Any:
    """The gRPC frontend, started: ours (HTTP/2 read here), or grpcio's when asked for;
    `shared`: on a port its sibling workers listen on too."""
    address = args.grpc_address or args.address
    rotation = tls.Rotation(args.grpc_tls) if args.grpc_tls is not None else None
    if rotation is not None and args.grpc_tls_reload_secs > 0:
        _background.add(asyncio.create_task(_rotate(rotation, args.grpc_tls_reload_secs)))
    if args.grpc_frontend == "grpcio":
        from kubeinfer_onnx import grpc_aio  # grpcio's import only where it is used

        server, _ = grpc_aio.build_server(
            service,
            address=address,
            port=args.grpc_port,
            max_request_bytes=args.max_request_bytes,
            reuse_port=shared,
            tls_rotation=rotation,
        )
        await server.start()
        return server
    fast = grpc_fastpath.Server(service, max_request_bytes=args.max_request_bytes)
    context = rotation.context if rotation is not None else None
    await fast.listen(address, args.grpc_port, reuse_port=shared, ssl=context)
    return fast


# Tasks that run as long as the server: held here so they are not collected while pending.
_background: set[asyncio.Task[None]] = set()


async def _rotate(rotation: tls.Rotation, interval_s: float) -> None:
    """Read the TLS files again every `interval_s` (a renewed Secret needs no restart)."""
    while True:
        await asyncio.sleep(interval_s)
        rotation.check()


def _preload_cuda(requested: device.Device) -> None:
    """Load CUDA and cuDNN from the nvidia-* wheels the gpu variant installs, before any
    session starts: onnxruntime-gpu does not bundle them, and without them the CUDA provider
    cannot start (onnxruntime >= 1.21 has preload_dlls; a system CUDA install needs none)."""
    if requested is device.Device.CPU:
        return
    if not set(device.GPU_PROVIDERS) & set(ort.get_available_providers()):
        return
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception as exc:  # the libraries may come from the system instead
        log.warning("could not preload CUDA/cuDNN from the nvidia-* wheels: %s", exc)


async def _drain(
    args: argparse.Namespace,
    models: model.ModelSet,
    in_flight: http_server.InFlight,
    http: _Listener,
    grpc: Any,
    metrics_http: _Listener | None,
) -> None:
    # Readiness goes false first, so Kubernetes takes the pod out of its endpoints; requests
    # that still arrive during the drain delay are served, not refused.
    models.draining = True
    log.info(
        "draining: not ready; serving for %.1fs more, then finishing in-flight requests",
        args.drain_delay_secs,
    )
    await asyncio.sleep(args.drain_delay_secs)

    async def finish() -> None:
        # Stop listening (aiohttp, if it was loaded, closes its connections and waits for
        # running handlers); gRPC refuses new calls but completes running ones within the
        # grace. Then wait until every batcher has answered what it accepted.
        stops = [http.close()]
        if grpc is not None:
            stops.append(grpc.stop(grace=args.exit_timeout_secs))
        await asyncio.gather(*stops)
        while in_flight.count:
            await asyncio.sleep(0.01)
        for served in models:
            await served.batcher.close()

    try:
        await asyncio.wait_for(finish(), args.exit_timeout_secs)
    except TimeoutError:
        log.warning("exit timeout: %d requests still in flight", in_flight.count)
    if metrics_http is not None:
        await metrics_http.close()
    log.info("stopped")


def _run(coroutine: Coroutine[Any, Any, None], event_loop: str) -> None:
    """asyncio.run, on uvloop when asked or (auto) installed: a faster loop, less overhead."""
    if event_loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                raise
        else:
            uvloop.run(coroutine)
            return
    asyncio.run(coroutine)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _log_to_stderr(args.log_level)
    if args.workers is None:
        args.workers = _auto_workers(args)
    if args.workers == 1:
        return _serve_until_stopped(args)
    ports = {
        "--http-port": args.http_port,
        "--grpc-port": args.grpc_port,
        "--metrics-port": args.metrics_port,
    }
    zero = [flag for flag, port in ports.items() if port == 0]
    if zero:
        log.error("--workers %d needs fixed ports: %s is 0", args.workers, ", ".join(zero))
        return 2
    try:  # A broken repository fails once, here, rather than in every worker.
        repository.scan(args.model_repository)
    except repository.RepositoryError as exc:
        log.error("%s", exc)
        return 2

    def worker(peers: workers.Peers) -> int:
        _log_to_stderr(args.log_level, f" [worker {peers.index}]")
        return _serve_until_stopped(args, peers)

    return workers.supervise(args.workers, worker)


def _auto_workers(args: argparse.Namespace) -> int:
    """`--workers auto`, from where the models compute, the CPU and memory limits and the size
    of what would be loaded."""
    providers = device.choose_providers(args.device, ort.get_available_providers())
    return workers.default_count(
        cpus=cpus.Cpus.read().usable,
        on_device=providers[0] != device.CPU_PROVIDER or args.emulate_device_ms > 0,
        model_bytes=_model_bytes(args),
        memory_limit=workers.cgroup_memory_limit(),
    )


def _model_bytes(args: argparse.Namespace) -> int:
    """The size on disk of what this server loads (a broken repository counts as nothing: it
    fails when loaded)."""
    try:
        entries = list(repository.scan(args.model_repository).values())
    except repository.RepositoryError:
        return 0
    return sum(
        path.stat().st_size
        for entry in entries
        for number, path in entry.versions.items()
        if not args.latest_version_only or number == entry.latest_version
    )


def _spinning(args: argparse.Namespace, host: cpus.Cpus, threads: int) -> cpus.Spinning:
    """`--allow-spinning`, with auto decided here and the decision logged."""
    if args.allow_spinning is not None:
        chosen: cpus.Spinning = args.allow_spinning
        return chosen
    spinning, why = cpus.spin_by_default(
        host, workers=args.workers or 1, intra_op_threads=threads, model_bytes=_model_bytes(args)
    )
    log.info("onnxruntime threads spin: %s (auto: %s)", spinning.value, why)
    return spinning


def _serve_until_stopped(args: argparse.Namespace, peers: workers.Peers | None = None) -> int:
    try:
        _run(serve(args, peers=peers), args.event_loop)
    except repository.RepositoryError as exc:
        log.error("%s", exc)
        return 2
    return 0


def _log_to_stderr(level: str, who: str = "") -> None:
    """Log lines to stderr; a worker's (`who`) name it, replacing what it inherited."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s %(name)s{who}: %(message)s",
        force=bool(who),
    )


if __name__ == "__main__":
    sys.exit(main())
