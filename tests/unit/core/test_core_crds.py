"""crds/ and the chart's copy are exactly what the models generate; the schema is structural."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from kubeinfer.core import chartgen, crdgen

REPO = pathlib.Path(__file__).resolve().parents[3]


def test_generated_files_are_up_to_date() -> None:
    """The CRDs, the chart's copies, its runtimes template and every version stamp are what
    their one source generates."""
    for path, text in crdgen.generated_files().items():
        assert path.exists(), f"{path} missing: run `make crds`"
        assert path.read_text() == text, f"{path} is stale: run `make crds`"


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, value in node.get("properties", {}).items():
            out.extend(_walk(value, f"{path}.{key}"))
        if isinstance(node.get("items"), dict):
            out.extend(_walk(node["items"], f"{path}[]"))
    return out


def test_schema_is_structural() -> None:
    schema = crdgen.inference_service_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "title" not in node, path
        assert "type" in node, f"{path} has no type"
        if node.get("additionalProperties") is False:
            pytest.fail(f"{path}: additionalProperties false is not structural")


def test_cel_rules_and_subresources() -> None:
    crd = crdgen.inference_service_crd()
    version = crd["spec"]["versions"][0]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = [r["rule"] for r in spec["properties"]["scaling"]["x-kubernetes-validations"]]
    assert "self.minReplicas <= self.maxReplicas" in rules
    # Scale to zero needs the router, in the API server too (its message names the field).
    top = {r["rule"]: r["message"] for r in spec["x-kubernetes-validations"]}
    assert top["self.scaling.minReplicas >= 1 || self.router.enabled"].startswith(
        "scaling.minReplicas 0 needs router.enabled"
    )
    assert spec["properties"]["scaling"]["properties"]["minReplicas"]["minimum"] == 0
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    assert crd["spec"]["names"]["shortNames"] == ["kisvc"]
    assert [c["name"] for c in version["additionalPrinterColumns"]][:3] == [
        "Ready",
        "Runtime",
        "Replicas",
    ]


def test_the_chart_sets_a_gpu_image_only_for_kubeinfers_server() -> None:
    """runtimes.onnxruntime.gpuImage reaches the runtime when set and is left out when empty
    (so an upgrade never points GPU services at an image nobody pushed)."""
    defaults = {
        name: (crdgen.REPO / "runtimes" / "defaults" / f"{name}.yaml").read_text()
        for name in ("onnxruntime", "triton")
    }
    template = chartgen.runtimes_template(defaults)
    onnx, triton = template.split("name: triton", 1)
    assert "{{- with .Values.runtimes.onnxruntime.gpuImage }}\n  gpuImage: {{ . | quote }}" in onnx
    assert "gpuImage" not in triton
