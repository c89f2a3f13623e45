"""Dynamic INT8 quantization of an ONNX model at load, with onnxruntime.quantization.

Owns turning a model.onnx into a weight-INT8 copy (activations quantized on the fly at run
time, so no calibration data is needed). Nothing is written next to the original, because
model repositories are usually read-only volumes in a cluster: the copy goes to a scratch
folder, and so does every file onnxruntime writes on the way.
"""

from __future__ import annotations

import fcntl
import hashlib
import pathlib
import tempfile


def quantize_int8(source: pathlib.Path, *, scratch: pathlib.Path | None = None) -> pathlib.Path:
    """Write (or reuse) the INT8 copy of `source` and return its path.

    The name carries a digest of the source bytes, so a changed model is re-quantized and an
    unchanged one is not quantized twice by a restart that keeps the scratch folder, nor by
    the other workers of one server (`--workers`), which load the same models at the same
    time: the first to take the copy's lock writes it, the others wait and reuse it.
    """
    folder = scratch or pathlib.Path(tempfile.gettempdir()) / "kubeinfer-onnx-int8"
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    target = folder / f"{source.parent.parent.name}-{source.parent.name}-{digest}.int8.onnx"
    with target.with_suffix(".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file closes, or the process dies.
        if not target.is_file():
            _quantize(source, target)
    return target


def _quantize(source: pathlib.Path, target: pathlib.Path) -> None:
    """Quantize `source` into `target`, writing nothing beside `source`.

    Given a path, onnxruntime reads the model through a shape-inferred copy that it writes next
    to that path (`<name>-inferred.onnx`) and then deletes: next to the original that fails on a
    read-only repository, and two processes quantizing one model delete each other's copy (a
    worker of a `--workers 2` server died of FileNotFoundError so). Given the loaded model
    (external weights are read from beside it), it writes that copy in a temporary folder of
    its own. The output is written in a private folder beside `target` and renamed over it, so
    a crash mid-write never leaves half a model to load.
    """
    # Imported here: onnxruntime.quantization (and the onnx package it brings) costs every
    # server start ~0.1 s, and few models are quantized.
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(source))
    with tempfile.TemporaryDirectory(prefix=".quantizing-", dir=target.parent) as work:
        output = pathlib.Path(work) / "int8.onnx"
        quantize_dynamic(model, str(output), weight_type=QuantType.QInt8)
        output.replace(target)
