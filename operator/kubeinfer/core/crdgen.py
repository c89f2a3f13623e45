"""Generate the CustomResourceDefinitions from the pydantic models (like controller-gen for Go).

Owns: the translation of pydantic's JSON schema into a Kubernetes *structural* OpenAPI v3
schema (refs inlined, ``anyOf [X, null]`` -> nullable X, JSON-schema-2020 exclusive bounds ->
OpenAPI 3.0 booleans, ``additionalProperties: false`` dropped since the API server prunes
unknown fields instead), plus names, subresources and printer columns. Pure: ``render_all``
returns text; ``main --write`` is the only writer, used by ``make crds``.
"""

from __future__ import annotations

import copy
import pathlib
import sys
from typing import Any

import pydantic
import yaml

from kubeinfer.core import api, chartgen

REPO = pathlib.Path(__file__).resolve().parents[3]
CRD_DIR = REPO / "crds"
CHART_CRD_DIR = REPO / "charts" / "kubeinfer" / "crds"
RUNTIME_DIR = REPO / "runtimes" / "defaults"
CHART = REPO / "charts" / "kubeinfer"

_DROP = {"title", "discriminator"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[1]])
        # Keys beside a $ref (description, default) override the referenced schema.
        target.update(node)
        node = target
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"only Optional[X] unions are supported, got {options}")
        merged = dict(options[0])
        merged.update(node)
        node = merged
        node["nullable"] = True
        if node.get("default", 0) is None:
            del node["default"]
        return _structural(node, defs)
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node and not isinstance(node[bound], bool):
            node[plain] = node.pop(bound)
            node[bound] = True
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {k: _structural(v, defs) for k, v in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _structural(value, defs)
        elif key == "description":
            # A class docstring's line breaks are the source's, not the reader's.
            out[key] = " ".join(str(value).split())
        else:
            out[key] = value
    if isinstance(out.get("default"), dict):
        # The API server validates a default before leaf defaults apply, so a nested object's
        # default must be complete; None is how pydantic spells "absent".
        out["default"] = _without_nulls(out["default"])
    return out


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


def schema_of(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    result: dict[str, Any] = _structural(raw, defs)
    return result


def _crd(
    *,
    plural: str,
    kind: str,
    scope: str,
    short: list[str],
    spec_model: type[Any],
    status_model: type[Any] | None,
    columns: list[dict[str, Any]],
    scale: bool,
) -> dict[str, Any]:
    properties: dict[str, Any] = {"spec": schema_of(spec_model)}
    if status_model is not None:
        properties["status"] = schema_of(status_model)
    version: dict[str, Any] = {
        "name": api.VERSION,
        "served": True,
        "storage": True,
        "schema": {
            "openAPIV3Schema": {
                "type": "object",
                "required": ["spec"],
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": {"type": "object"},
                    **properties,
                },
            }
        },
        "additionalPrinterColumns": columns,
    }
    subresources: dict[str, Any] = {}
    if status_model is not None:
        subresources["status"] = {}
    if scale:
        subresources["scale"] = {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
    if subresources:
        version["subresources"] = subresources
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{api.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "kubeinfer"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": scope,
            "names": {
                "plural": plural,
                "singular": kind.lower(),
                "kind": kind,
                "listKind": f"{kind}List",
                "shortNames": short,
                "categories": ["kubeinfer"],
            },
            "versions": [version],
        },
    }


def inference_service_crd() -> dict[str, Any]:
    return _crd(
        plural="inferenceservices",
        kind="InferenceService",
        scope="Namespaced",
        short=["kisvc"],
        spec_model=api.InferenceServiceSpec,
        status_model=api.InferenceServiceStatus,
        scale=True,
        columns=[
            {
                "name": "Ready",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
            },
            {"name": "Runtime", "type": "string", "jsonPath": ".status.runtime"},
            {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
            {
                "name": "Ready-Replicas",
                "type": "integer",
                "jsonPath": ".status.readyReplicas",
                "priority": 1,
            },
            {"name": "GPUs", "type": "integer", "jsonPath": ".status.gpus"},
            {"name": "URL", "type": "string", "jsonPath": ".status.url"},
            {
                "name": "Reason",
                "type": "string",
                "priority": 1,
                "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
            },
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def inference_runtime_crd() -> dict[str, Any]:
    return _crd(
        plural="inferenceruntimes",
        kind="InferenceRuntime",
        scope="Cluster",
        short=["kirt"],
        spec_model=api.InferenceRuntimeSpec,
        status_model=None,
        scale=False,
        columns=[
            {"name": "Image", "type": "string", "jsonPath": ".spec.image"},
            {"name": "Formats", "type": "string", "jsonPath": ".spec.formats[*].name"},
            {"name": "GPU", "type": "boolean", "jsonPath": ".spec.supportsGpu"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def all_crds() -> dict[str, dict[str, Any]]:
    crds = [inference_service_crd(), inference_runtime_crd()]
    return {f"{c['metadata']['name']}.yaml": c for c in crds}


def render(crd: dict[str, Any]) -> str:
    header = "# Generated by `make crds` from operator/kubeinfer/core/api.py. Do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=100)


def render_all() -> str:
    return "---\n".join(render(c) for c in all_crds().values())


def generated_files() -> dict[pathlib.Path, str]:
    """Every file ``make crds`` writes, with its content: the CRDs (from the API models), and
    what chartgen derives from VERSION and runtimes/defaults."""
    version = (REPO / "VERSION").read_text().strip()
    files = {
        directory / name: render(crd)
        for directory in (CRD_DIR, CHART_CRD_DIR)
        for name, crd in all_crds().items()
    }
    defaults = {
        path.stem: chartgen.stamp_runtime(path.read_text(), version)
        for path in sorted(RUNTIME_DIR.glob("*.yaml"))
    }
    files.update({RUNTIME_DIR / f"{name}.yaml": text for name, text in defaults.items()})
    files[CHART / "templates" / "runtimes.yaml"] = chartgen.runtimes_template(defaults)
    chart_yaml = CHART / "Chart.yaml"
    files[chart_yaml] = chartgen.stamp_chart(chart_yaml.read_text(), version)
    return files


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--write" not in argv:
        print(render_all(), end="")
        return 0
    for path, text in generated_files().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
