"""Dynamic INT8 quantization of an ONNX model at load, with onnxruntime.quantization.

Owns turning a model.onnx into a weight-INT8 copy (activations quantized on the fly at run
time, so no calibration data is needed). The copy goes to a scratch folder, never next to
the original, because model repositories are usually read-only volumes in a cluster.
"""

from __future__ import annotations

import hashlib
import pathlib
import tempfile


def quantize_int8(source: pathlib.Path, *, scratch: pathlib.Path | None = None) -> pathlib.Path:
    """Write (or reuse) the INT8 copy of `source` and return its path.

    The name carries a digest of the source bytes, so a changed model is re-quantized and an
    unchanged one is not quantized twice by a restart that keeps the scratch folder.
    """
    # Imported here: onnxruntime.quantization (and the onnx package it brings) costs every
    # server start ~0.1 s, and few models are quantized.
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder = scratch or pathlib.Path(tempfile.gettempdir()) / "kubeinfer-onnx-int8"
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    target = folder / f"{source.parent.parent.name}-{source.parent.name}-{digest}.int8.onnx"
    if not target.is_file():
        partial = target.with_suffix(".partial")
        quantize_dynamic(str(source), str(partial), weight_type=QuantType.QInt8)
        partial.replace(target)  # Atomic: a crash mid-write never leaves a half model to load.
    return target
