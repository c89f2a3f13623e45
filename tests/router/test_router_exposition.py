"""exposition: the queue gauge out of recorded Triton and kubeinfer-onnx-server pages."""

from __future__ import annotations

import pathlib

import pytest

from kubeinfer_router import exposition

HERE = pathlib.Path(__file__).parent
TRITON = HERE.parents[1] / "tests" / "unit" / "scaling" / "fixtures" / "triton_t0.prom"
PENDING = "nv_inference_pending_request_count"


def test_sums_every_model_and_version_of_a_triton_page() -> None:
    assert exposition.sum_samples(TRITON.read_text(), PENDING) == 4.0  # resnet50 3 + densenet 1


def test_reads_the_onnx_server_page() -> None:
    text = (HERE / "fixtures" / "onnx_server.prom").read_text()
    assert exposition.sum_samples(text, PENDING) == 7.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("# HELP x\n", None),
        ("x 3\n", 3.0),
        ("x 3", 3.0),  # no trailing newline
        ("x 3 1700000000000\n", 3.0),  # with a timestamp
        ('x{a="1"} 2\nx{a="2"} 5e0\n', 7.0),
        ('x{a="}"} 2\n', 2.0),  # a brace inside a label value
        ("x_total 9\nxy 4\nx 1\n", 1.0),  # longer names are other metrics
        ('y{note="x 5"} 1\n', None),  # the name inside a label value is not a sample
        ("x NaN\nx 2\n", 2.0),
        ("x garbage\n", None),
        ("x +Inf\n", float("inf")),
    ],
)
def test_edge_cases(text: str, expected: float | None) -> None:
    assert exposition.sum_samples(text, "x") == expected
