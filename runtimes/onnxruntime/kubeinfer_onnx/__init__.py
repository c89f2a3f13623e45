"""kubeinfer's ONNX Runtime serving runtime: KServe v2 over HTTP and gRPC, Triton's metric names.

The package is laid out one job per module: `repository` reads the model folder, `model` owns an
onnxruntime session and its input checks, `batching` merges requests, `protocol` encodes and
decodes the v2 wire format, `http_server` says what each REST endpoint answers, `http_fastpath`
reads plain HTTP requests and hands the rest to `http_aiohttp`, `grpc_server` says what each gRPC
call answers, `grpc_fastpath` reads gRPC off HTTP/2 (`grpc_aio` is grpcio's alternative), `metrics`
keeps the counters, `cache` and `quantize` are the optional extras, `server` wires it all up and
`profile` is the offline model profiler behind `kubeinfer profile`.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    # The repository's VERSION, through the package's metadata; looked up when first asked
    # for, since importlib.metadata costs the server ~0.1 s of its start (bench/runtime).
    if name == "__version__":
        import importlib.metadata

        version = importlib.metadata.version("kubeinfer-onnx")
        globals()["__version__"] = version
        return version
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
