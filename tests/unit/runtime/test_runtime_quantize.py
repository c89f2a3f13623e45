"""kubeinfer_onnx.quantize: the INT8 copy is made without writing beside the original (model
repositories are read-only volumes in a cluster), once when several processes load the model
at the same time (`--workers`), and from a model whose weights are stored beside it."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from kubeinfer_onnx import quantize
from tests.integration.runtime import runtime_models

# The INT8 copy answers close to the FP32 model (test_runtime_extras measures the heavy one).
TOLERANCE = 0.05


def heavy(root: pathlib.Path) -> pathlib.Path:
    return runtime_models.build_heavy(
        root / "repo" / "heavy" / "1" / "model.onnx", width=64, layers=2
    )


def run(path: pathlib.Path, data: np.ndarray) -> np.ndarray:
    out: np.ndarray = ort.InferenceSession(str(path)).run(None, {"INPUT0": data})[0]
    return out


def assert_close(source: pathlib.Path, quantized: pathlib.Path) -> None:
    data = np.random.default_rng(5).standard_normal((4, 64)).astype(np.float32)
    fp32, int8 = run(source, data), run(quantized, data)
    assert not np.array_equal(fp32, int8)  # Quantized, not a copy.
    assert np.abs(fp32 - int8).max() <= TOLERANCE * np.abs(fp32).max()


def test_nothing_is_written_beside_the_original(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnxruntime writes a shape-inferred copy next to the path it is given: that must not be
    the model's own folder (as root, a read-only folder would not stop the write, so the test
    watches where the copy goes)."""
    source = heavy(tmp_path)
    before = sorted(os.listdir(source.parent))
    written: list[pathlib.Path] = []
    infer_shapes_path = onnx.shape_inference.infer_shapes_path

    def watched(model_path: str, output_path: str = "", *args: object, **kwargs: object) -> None:
        written.append(pathlib.Path(output_path or model_path))
        infer_shapes_path(model_path, output_path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes_path", watched)
    quantized = quantize.quantize_int8(source, scratch=tmp_path / "scratch")
    assert written, "onnxruntime wrote no shape-inferred copy: this test no longer checks it"
    assert all(path.parent != source.parent for path in written), written
    assert sorted(os.listdir(source.parent)) == before
    assert quantized.parent == tmp_path / "scratch"
    assert_close(source, quantized)


_QUANTIZE_WHEN_TOLD = """
import pathlib, sys
from kubeinfer_onnx import quantize
print("ready", flush=True)
sys.stdin.readline()
print(quantize.quantize_int8(pathlib.Path(sys.argv[1]), scratch=pathlib.Path(sys.argv[2])))
"""


def test_processes_quantizing_one_model_at_once_share_one_copy(tmp_path: pathlib.Path) -> None:
    """Each worker of a `--workers 2` server quantizes its models as it loads them; both at
    once once made one delete the other's shape-inferred copy (FileNotFoundError, the worker
    exited and took the server down)."""
    source, scratch = heavy(tmp_path), tmp_path / "scratch"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _QUANTIZE_WHEN_TOLD, str(source), str(scratch)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        # Every process past its imports, then all told at once.
        for process in processes:
            assert process.stdout is not None and process.stderr is not None
            if process.stdout.readline() != "ready\n":  # It exited: say why.
                pytest.fail(f"a quantizing process did not start:\n{process.stderr.read()}")
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [p.communicate(timeout=120) for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    (quantized,) = {pathlib.Path(out.strip()) for out, _ in outputs}
    assert sorted(p.name for p in scratch.iterdir()) == sorted(
        [quantized.name, quantized.with_suffix(".lock").name]
    )
    assert_close(source, quantized)


def test_weights_stored_beside_the_model_are_found(tmp_path: pathlib.Path) -> None:
    """ONNX's external data: the weights in a file next to model.onnx, found by its folder."""
    source = heavy(tmp_path)
    onnx.save_model(
        onnx.load(str(source)),
        str(source),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    assert (source.parent / "weights.bin").stat().st_size > source.stat().st_size
    quantized = quantize.quantize_int8(source, scratch=tmp_path / "scratch")
    assert_close(source, quantized)  # After the private folder is gone: nothing refers to it.
