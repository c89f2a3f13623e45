"""Write kubeconform JSON schemas for offline validation: the built-in kinds from a live API
server's OpenAPI v2 document, and kubeinfer's kinds from the generated CRDs.

kubeconform downloads schemas by default; here nothing may leave the machine, and the API server
the tests start is the authority anyway. The layout matches kubeconform's
``-schema-location 'DIR/{{ .ResourceKind }}{{ .KindSuffix }}.json'``: ``deployment-apps-v1.json``,
``service-v1.json``, ``inferenceservice-kubeinfer-v1alpha1.json``. Schemas are strict
(``additionalProperties: false`` where the API lists properties), like kubeconform ``-strict``.

Run it by hand: ``python -m tests.integration.helm.kubeconform_schemas KUBECONFIG OUT_DIR``.
Never commit the output: it is regenerated from whatever API server the tests run against.
"""

from __future__ import annotations

import copy
import json
import pathlib
import re
import subprocess
import sys
from typing import Any

import yaml

REPO = pathlib.Path(__file__).resolve().parents[3]
# What kubeconform's KindSuffix does: the group's first label, then the version.
LOCATION = "{{ .ResourceKind }}{{ .KindSuffix }}.json"
_INT_OR_STRING = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
_QUANTITY = {"oneOf": [{"type": "string"}, {"type": "number"}]}
_NOT_MANIFESTS = {"WatchEvent", "DeleteOptions", "Status", "Eviction", "Scale"}
_REF = re.compile(r'"#/definitions/([^"]+)"')


def file_name(group: str, version: str, kind: str) -> str:
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind.lower()}{suffix}.json"


def _strict(schema: Any) -> Any:
    """Forbid unknown fields wherever properties are listed, recursively (like openapi2jsonschema
    --strict); the Kubernetes extensions that mean "anything goes" keep their openness. Walks
    schema keywords only: a property may be named like a keyword (JSONSchemaProps has them all)."""
    if not isinstance(schema, dict):
        return schema
    if schema.get("x-kubernetes-int-or-string") is True:
        return dict(_INT_OR_STRING)
    out = dict(schema)
    for key in ("properties", "patternProperties", "definitions"):
        if isinstance(out.get(key), dict):
            out[key] = {name: _strict(sub) for name, sub in out[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = _strict(out[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(out.get(key), list):
            out[key] = [_strict(sub) for sub in out[key]]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and out.get("x-kubernetes-preserve-unknown-fields") is not True
    ):
        out["additionalProperties"] = False
    if out.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def builtin_schemas(openapi_v2: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One self-contained schema per kind: the kind's definition plus every definition (local
    ``#/definitions/...`` references resolve inside the file)."""
    definitions = copy.deepcopy(openapi_v2["definitions"])
    for name, definition in definitions.items():
        if definition.get("format") == "int-or-string":
            definitions[name] = dict(_INT_OR_STRING)
        elif name.endswith(".api.resource.Quantity"):
            definitions[name] = dict(_QUANTITY)
    for definition in definitions.values():
        # JSONSchemaProps has properties literally named "$ref" and "$schema": a JSON schema
        # compiler reads an object key "$ref" as a reference and gives up on the whole file.
        for key in ("$ref", "$schema"):
            definition.get("properties", {}).pop(key, None)
    definitions = {name: _strict(definition) for name, definition in definitions.items()}
    out: dict[str, dict[str, Any]] = {}
    for name, definition in definitions.items():
        for gvk in openapi_v2["definitions"][name].get("x-kubernetes-group-version-kind", []):
            # Lists, watch events and delete options are never in a manifest.
            if gvk["kind"].endswith("List") or gvk["kind"] in _NOT_MANIFESTS:
                continue
            schema = {
                "$schema": "http://json-schema.org/draft-04/schema#",
                **definition,
                "definitions": {d: definitions[d] for d in _reachable(definition, definitions)},
            }
            out[file_name(gvk["group"], gvk["version"], gvk["kind"])] = schema
    return out


def _reachable(root: Any, definitions: dict[str, Any]) -> set[str]:
    """Names of the definitions ``root`` refers to, transitively (a Deployment needs ~100 of
    the ~900, so each file stays small)."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        for ref in _REF.findall(json.dumps(todo.pop())):
            if ref not in seen:
                seen.add(ref)
                todo.append(definitions[ref])
    return seen


def crd_schemas(crd_dir: pathlib.Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(crd_dir.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        spec = crd["spec"]
        for version in spec["versions"]:
            schema = _strict(version["schema"]["openAPIV3Schema"])
            # The API server adds the standard metadata; the CRD only says "object".
            schema.setdefault("properties", {})["metadata"] = {"type": "object"}
            name = file_name(spec["group"], version["name"], spec["names"]["kind"])
            out[name] = {"$schema": "http://json-schema.org/draft-04/schema#", **schema}
    return out


def write(kubectl: pathlib.Path, env: dict[str, str], out_dir: pathlib.Path) -> pathlib.Path:
    """Generate every schema into ``out_dir``; returns it. About 1,000 files, a second or two."""
    raw = subprocess.run(
        [str(kubectl), "get", "--raw", "/openapi/v2"],
        env=env,
        check=True,
        capture_output=True,
    ).stdout
    schemas = builtin_schemas(json.loads(raw))
    schemas.update(crd_schemas(REPO / "crds"))
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas.items():
        (out_dir / name).write_text(json.dumps(schema, separators=(",", ":")))
    return out_dir


def main(argv: list[str]) -> int:
    import os

    from kubeinfer_cluster import build

    kubeconfig, out_dir = argv
    env = dict(os.environ, KUBECONFIG=kubeconfig)
    kubectl = build.ensure_tools(with_helm=False).kubectl
    print(write(kubectl, env, pathlib.Path(out_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
