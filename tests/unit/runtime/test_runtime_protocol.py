"""protocol: v2 JSON and binary tensor encode/decode, and the errors it names."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kubeinfer_onnx import protocol


def binary_body(inputs: list[tuple[str, np.ndarray]], **extra: object) -> tuple[bytes, str]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": protocol.datatype_of(a.dtype),
                    "shape": list(a.shape),
                    "parameters": {"binary_data_size": a.nbytes},
                }
                for name, a in inputs
            ],
            **extra,
        }
    ).encode()
    return header + b"".join(a.tobytes() for _, a in inputs), str(len(header))


def test_json_request_round_trip() -> None:
    body = json.dumps(
        {
            "id": "r1",
            "inputs": [
                {"name": "A", "datatype": "INT64", "shape": [2, 2], "data": [[1, 2], [3, 4]]},
                {"name": "S", "datatype": "BYTES", "shape": [2], "data": ["x", "yz"]},
            ],
            "outputs": [{"name": "O", "parameters": {"binary_data": True}}],
        }
    ).encode()
    request = protocol.decode_infer_request(body, None)
    assert request.id == "r1"
    np.testing.assert_array_equal(request.inputs["A"], [[1, 2], [3, 4]])
    assert request.inputs["A"].dtype == np.int64
    assert list(request.inputs["S"]) == [b"x", b"yz"]
    assert request.outputs == [protocol.RequestedOutput("O", binary=True)]


def test_binary_request_is_a_view_with_the_right_values() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([[True, False]])
    body, length = binary_body([("A", a), ("B", b)], parameters={"binary_data_output": True})
    request = protocol.decode_infer_request(body, length)
    np.testing.assert_array_equal(request.inputs["A"], a)
    np.testing.assert_array_equal(request.inputs["B"], b)
    assert request.outputs is None and request.binary_default


@pytest.mark.parametrize(
    ("body", "length", "message"),
    [
        (b"{", None, "malformed JSON"),
        (b"\xff\xfe", None, "malformed JSON"),
        (b"[]", None, "must be a JSON object"),
        (b'{"inputs": {}}', None, "non-empty 'inputs' list"),
        (
            b'{"inputs": [{"name": "A", "datatype": "FP32", "shape": [2], "data": [1]}]}',
            None,
            "got 1 elements, shape [2] needs 2",
        ),
        (
            b'{"inputs": [{"name": "A", "datatype": "FP32", "shape": [-1], "data": [1]}]}',
            None,
            "non-negative integers",
        ),
        (
            b'{"inputs": [{"name": "A", "datatype": "F", "shape": [1], "data": [1]}]}',
            None,
            "unknown datatype 'F'",
        ),
        (
            b'{"inputs": [{"name": "A", "datatype": "FP32", "shape": [1], "data": ["x"]}]}',
            None,
            "FP32 data must be numbers, got strings",
        ),
        (
            b'{"inputs": [{"name": "A", "datatype": "FP32", "shape": [1]}]}',
            None,
            "neither 'data' nor binary_data_size",
        ),
        (
            b'{"inputs": [{"name": "A", "datatype": "FP32", "shape": [1], "data": [1]},'
            b'{"name": "A", "datatype": "FP32", "shape": [1], "data": [1]}]}',
            None,
            "given twice",
        ),
        (
            b'{"inputs": [{"name": "A", "datatype": "FP32", "shape": [1], "data": [1]}]}',
            "999",
            "outside the body",
        ),
        (
            b'{"inputs": [{"name": "A", "datatype": "FP32", "shape": [1], "data": [1]}]}XYZ',
            "74",
            "no input claims them",
        ),
    ],
)
def test_malformed_requests_name_the_problem(body: bytes, length: str | None, message: str) -> None:
    with pytest.raises(protocol.ProtocolError, match=message.replace("[", r"\[")):
        protocol.decode_infer_request(body, length)


def test_binary_size_must_match_shape() -> None:
    body, length = binary_body([("A", np.zeros(3, dtype=np.float32))])
    body = body.replace(b'"shape": [3]', b'"shape": [4]')
    length = str(int(length))
    with pytest.raises(
        protocol.ProtocolError, match="got 12 bytes, shape \\[4\\] of FP32 needs 16"
    ):
        protocol.decode_infer_request(body, length)


def test_response_json_and_binary() -> None:
    out = {"O": np.array([[1.5, 2.5]], dtype=np.float32), "N": np.array([7], dtype=np.int32)}
    body, length = protocol.encode_infer_response(
        model_name="m",
        model_version="3",
        request_id="x",
        outputs=out,
        binary={"O": True, "N": False},
    )
    assert length is not None
    header = json.loads(body[:length])
    assert header["model_version"] == "3" and header["id"] == "x"
    assert header["outputs"][0] == {
        "name": "O",
        "datatype": "FP32",
        "shape": [1, 2],
        "parameters": {"binary_data_size": 8},
    }
    assert header["outputs"][1]["data"] == [7]
    np.testing.assert_array_equal(np.frombuffer(body[length:], np.float32), [1.5, 2.5])
    only_json, none = protocol.encode_infer_response(
        model_name="m", model_version="1", request_id=None, outputs=out, binary={}
    )
    assert none is None and "id" not in json.loads(only_json)


def test_bytes_tensor_binary_round_trip() -> None:
    array = np.array([b"ab", b"", b"xyz"], dtype=np.object_)
    raw = protocol.encode_bytes_tensor(array)
    assert list(protocol.decode_binary_tensor("S", "BYTES", [3], raw)) == list(array)
    with pytest.raises(protocol.ProtocolError, match="truncated"):
        protocol.decode_binary_tensor("S", "BYTES", [3], raw + b"\0")


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("FP32", [1.0, None, 2.0, 3.0], "null"),  # was silently NaN, and answered 200
        ("FP32", ["1", "2", "3", "4"], "strings"),
        ("FP32", [True, False, True, False], "booleans"),
        ("INT32", [1.5, 2, 3, 4], "fractions"),
        ("UINT8", [1, 2, 3, 300], "out of range"),
        ("FP32", [[1.0, 2.0], [3.0]], "not a regular list"),
    ],
)
def test_json_data_that_would_only_convert_by_accident_is_refused(
    datatype: str, data: list[object], message: str
) -> None:
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": [4], "datatype": datatype, "data": data}]}
    ).encode()
    with pytest.raises(protocol.ProtocolError, match=message):
        protocol.decode_infer_request(body, None)
