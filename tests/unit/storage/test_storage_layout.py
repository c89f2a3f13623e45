"""Table tests for where fetched files land (kubeinfer.storage.layout)."""

from __future__ import annotations

import pytest

from kubeinfer.storage import layout

K = layout.LayoutKind


@pytest.mark.parametrize(
    ("files", "single", "expected"),
    [
        (["resnet.onnx"], True, layout.Layout(K.SINGLE_FILE, "m/1")),
        (["model.onnx", "vocab.txt"], False, layout.Layout(K.VERSION_DIRECTORY, "m/1")),
        (["model.onnx", "assets/x.bin"], False, layout.Layout(K.VERSION_DIRECTORY, "m/1")),
        (["config.pbtxt", "1/model.onnx"], False, layout.Layout(K.MODEL_DIRECTORY, "m")),
        (["1/model.onnx", "2/model.onnx"], False, layout.Layout(K.MODEL_DIRECTORY, "m")),
        (["resnet/1/model.onnx", "bert/1/model.onnx"], False, layout.Layout(K.REPOSITORY, "")),
        (["resnet/config.pbtxt", "resnet/1/model.onnx"], False, layout.Layout(K.REPOSITORY, "")),
    ],
)
def test_decide_layout(files: list[str], single: bool, expected: layout.Layout) -> None:
    assert layout.decide_layout(files, single_file=single, model_name="m", version="1") == expected


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc/passwd", "a\\b", "", "./"])
def test_unsafe_object_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError, match="refusing object path"):
        layout.safe_relative_path(path)


def test_empty_trees_are_refused() -> None:
    with pytest.raises(ValueError, match="nothing was fetched"):
        layout.decide_layout([], single_file=False, model_name="m", version="1")


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "..", "x" * 300])
def test_bad_model_names(name: str) -> None:
    with pytest.raises(ValueError, match="model name"):
        layout.validate_model_name(name)


@pytest.mark.parametrize("version", ["0", "01", "v1", "", "1.0"])
def test_bad_versions(version: str) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        layout.validate_version(version)
