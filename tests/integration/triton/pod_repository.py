"""The model repository a pod would have, built here by the pod's own storage initializer.

``build`` takes an InferenceService document and does what the operator and the init container
do: resolve the runtime from runtimes/defaults, build the ConfigMap and the Deployment, write
the generated config where the ConfigMap would be mounted, and run ``kubeinfer storage-init``
in-process with the init container's own arguments - only the URI points at a local copy of
what the store would hold, and the paths at the test's directory.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
from typing import Any

import yaml

from kubeinfer.core import api, builders, triton
from kubeinfer.storage.main import storage_init_main
from tests.integration.triton import standin

REPO = pathlib.Path(__file__).resolve().parents[3]
RUNTIMES = {
    doc["metadata"]["name"]: api.parse_runtime(doc["spec"])
    for path in sorted((REPO / "runtimes" / "defaults").glob("*.yaml"))
    for doc in yaml.safe_load_all(path.read_text())
}
# A model directory as its authors might ship it: a config.pbtxt of their own (which the
# generated one must not hide) beside the version directory.
SHIPPED_CONFIG = """\
name: "whatever-the-authors-called-it"
max_batch_size: 4
instance_group [ { kind: KIND_GPU, count: 1 } ]  # every visible GPU: not what the pod has
parameters { key: "shipped_by", value: { string_value: "the model's authors" } }
"""


@dataclasses.dataclass(frozen=True)
class PodRepository:
    spec: api.InferenceServiceSpec
    runtime: api.InferenceRuntimeSpec
    server: dict[str, Any]  # the serving container, as built
    root: pathlib.Path  # the repository (the pod's /mnt/models)
    reference: pathlib.Path  # the ONNX graph the stand-in serves, for expected answers

    @property
    def model_dir(self) -> pathlib.Path:
        return self.root / self.spec.model.name

    @property
    def version_dir(self) -> pathlib.Path:
        return self.model_dir / str(self.spec.model.version)

    @property
    def ships_config(self) -> bool:
        return _is_model_directory(self.spec)


def triton_examples() -> list[tuple[str, dict[str, Any]]]:
    """(file name, InferenceService) of every example whose runtime resolves to triton."""
    found = []
    for path in sorted((REPO / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "InferenceService":
                spec = api.parse_spec(doc["spec"])
                if builders.choose_runtime(spec, RUNTIMES)[0] == "triton":
                    found.append((path.name, doc))
    return found


def build(doc: dict[str, Any], work: pathlib.Path) -> PodRepository:
    spec = api.parse_spec(doc["spec"])
    runtime_name, runtime = builders.choose_runtime(spec, RUNTIMES)
    owner = builders.Owner(name=doc["metadata"]["name"], namespace="default", uid="u")
    template = builders.build_deployment(owner, spec, runtime_name, runtime)["spec"]["template"]
    pod = template["spec"]
    reference = standin.build_standin_onnx(spec.model, work / "reference.onnx")

    # The generated config, as the pod's downwardAPI volume projects it from the template.
    generated = work / "generated"
    generated.mkdir()
    [volume] = [v for v in pod["volumes"] if v["name"] == builders.CONFIG_VOLUME]
    for item in volume["downwardAPI"]["items"]:
        content = template["metadata"]["annotations"][builders.CONFIG_ANNOTATION]
        (generated / item["path"]).write_text(content)
    root = work / "repository"
    command, _, _, *options = pod["initContainers"][0]["args"]
    assert command == "storage-init"
    local = [o.replace(builders.GENERATED_CONFIG_DIR, str(generated)) for o in options]
    source = _model_source(spec, reference, work / "store")
    assert storage_init_main([source, str(root), *local]) == 0
    return PodRepository(
        spec=spec, runtime=runtime, server=pod["containers"][0], root=root, reference=reference
    )


def _is_model_directory(spec: api.InferenceServiceSpec) -> bool:
    return spec.model.storage_uri.endswith("/") and spec.model.format is not api.ModelFormat.PYTHON


def _model_source(spec: api.InferenceServiceSpec, onnx_model: pathlib.Path, store: Any) -> str:
    """What the example's storageUri holds, as a local file:// URI:

    - one object (no trailing slash): a single file named as in its URL;
    - a prefix for format python: a version directory, the user's model.py and its weights;
    - any other prefix: a Triton model directory with its own config.pbtxt.
    """
    store.mkdir()
    uri = spec.model.storage_uri
    if not uri.endswith("/"):
        single = store / uri.rsplit("/", 1)[-1]
        shutil.copyfile(onnx_model, single)
        return single.as_uri()
    if spec.model.format is api.ModelFormat.PYTHON:
        shutil.copyfile(standin.STANDIN_MODEL, store / "model.py")
        shutil.copyfile(onnx_model, store / "model.onnx")
        return store.as_uri()
    version = store / str(spec.model.version)
    version.mkdir()
    shutil.copyfile(onnx_model, version / triton.model_file_name(spec.model.format))
    (store / "config.pbtxt").write_text(SHIPPED_CONFIG)
    return store.as_uri()
