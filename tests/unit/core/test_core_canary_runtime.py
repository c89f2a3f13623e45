"""A canary on another runtime (spec.canary.runtime): resolved by the rules spec.runtime
follows, with the same reasons when it cannot be; its Deployment on that runtime's image, args
and model config (its own ConfigMap); status naming it; the admission rule that a canary must
differ from the stable set. The default runtimes are the shipped ones (runtimes/defaults)."""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any

import pydantic
import pytest
import yaml

from kubeinfer.core import analysis, api, builders, canary, children, config, crdgen, router, status

REPO = pathlib.Path(__file__).resolve().parents[3]
RUNTIMES = {
    name: api.parse_runtime(
        yaml.safe_load((REPO / "runtimes" / "defaults" / f"{name}.yaml").read_text())["spec"]
    )
    for name in ("onnxruntime", "triton")
}
OWNER = builders.Owner(name="m", namespace="ns", uid="u")
CONFIG = config.OperatorConfig(init_image="ghcr.io/kubeinfer/operator:9")
MODEL = {"name": "m", "format": "onnx", "storageUri": "https://h/m.onnx"}


def spec(canary_: dict[str, Any], **extra: Any) -> api.InferenceServiceSpec:
    return api.parse_spec({"model": MODEL, "router": {"enabled": True}, "canary": canary_, **extra})


def by_name(wanted: children.Wanted, kind: str, name: str) -> dict[str, Any]:
    return next(m for m in wanted.apply if m["kind"] == kind and m["metadata"]["name"] == name)


def test_the_canary_runtime_defaults_to_the_services() -> None:
    s = spec({"model": {"storageUri": "https://h/m2.onnx"}})
    assert canary.choose_runtime(s, RUNTIMES)[0] == builders.choose_runtime(s, RUNTIMES)[0]
    named = spec({"model": {"storageUri": "https://h/m2.onnx"}}, runtime="triton")
    assert canary.choose_runtime(named, RUNTIMES)[0] == "triton"
    other = spec({"model": {"storageUri": "https://h/m.onnx"}, "runtime": "triton"})
    assert builders.choose_runtime(other, RUNTIMES)[0] == "onnxruntime"
    assert canary.choose_runtime(other, RUNTIMES)[0] == "triton"


@pytest.mark.parametrize(
    ("canary_runtime", "model", "gpus", "reason", "words"),
    [
        ("vllm", MODEL, 0, "RuntimeNotFound", "'vllm' does not exist"),
        (
            "onnxruntime",
            {
                **MODEL,
                "format": "pytorch",
                "inputs": [{"name": "x", "datatype": "FP32", "dims": [4]}],
                "outputs": [{"name": "y", "datatype": "FP32", "dims": [2]}],
            },
            0,
            "FormatNotSupported",
            "does not serve model format 'pytorch'",
        ),
        ("cpu-only", MODEL, 1, "GPUNotSupported", "cannot use GPUs"),
    ],
)
def test_an_unresolvable_canary_runtime_has_the_spec_runtime_reasons(
    canary_runtime: str, model: dict[str, Any], gpus: int, reason: str, words: str
) -> None:
    runtimes = {
        **RUNTIMES,
        "cpu-only": RUNTIMES["onnxruntime"].model_copy(update={"supports_gpu": False}),
    }
    s = api.parse_spec(
        {
            "model": model,
            "runtime": "triton",
            "gpu": {"count": gpus},
            "router": {"enabled": True},
            "canary": {"model": {"storageUri": "https://h/m2.onnx"}, "runtime": canary_runtime},
        }
    )
    with pytest.raises(builders.RuntimeResolutionError) as raised:
        canary.choose_runtime(s, runtimes)
    assert raised.value.reason == reason
    assert str(raised.value).startswith("spec.canary: ") and words in str(raised.value)
    # spec.runtime itself, written the same, fails for the same reason.
    with pytest.raises(builders.RuntimeResolutionError) as direct:
        builders.choose_runtime(s.model_copy(update={"runtime": canary_runtime}), runtimes)
    assert direct.value.reason == reason


def test_a_canary_on_triton_beside_the_onnx_server() -> None:
    # The same artifact served by another runtime: what canary.runtime is for.
    s = spec({"model": {"storageUri": "https://h/m.onnx"}, "runtime": "triton"})
    state = api.CanaryStatus(revision="r", phase=api.CanaryPhase.PROGRESSING, step=0, weight=10)
    wanted = children.build(
        OWNER,
        s,
        *builders.choose_runtime(s, RUNTIMES),
        CONFIG,
        canary_state=state,
        canary_runtime=canary.choose_runtime(s, RUNTIMES),
    )
    stable = by_name(wanted, "Deployment", "m-predictor")
    dep = by_name(wanted, "Deployment", "m-canary")
    server = stable["spec"]["template"]["spec"]["containers"][0]
    can = dep["spec"]["template"]["spec"]["containers"][0]
    triton = RUNTIMES["triton"]
    assert server["image"] == RUNTIMES["onnxruntime"].image
    assert (can["image"], can["command"], can["args"]) == (
        triton.image,
        triton.command,
        triton.args,
    )
    assert can["startupProbe"]["failureThreshold"] == triton.probes.startup_timeout_seconds
    assert dep["metadata"]["labels"][builders.LABEL_RUNTIME] == "triton"
    assert dep["spec"]["template"]["metadata"]["labels"][builders.LABEL_RUNTIME] == "triton"
    assert dep["metadata"]["labels"]["app.kubernetes.io/component"] == "canary"

    # Its own model config, in Triton's format, in its own pod template (projected into the
    # pod by the downwardAPI volume that reads the template's annotation): no ConfigMap.
    assert not [m for m in wanted.apply if m["kind"] == "ConfigMap" and "model-config" in
                m["metadata"]["name"]]  # fmt: skip

    def model_config(deployment: dict[str, Any]) -> tuple[str, str]:
        template = deployment["spec"]["template"]
        [volume] = [v for v in template["spec"]["volumes"] if v["name"] == builders.CONFIG_VOLUME]
        [item] = volume["downwardAPI"]["items"]
        return item["path"], template["metadata"]["annotations"][builders.CONFIG_ANNOTATION]

    assert model_config(stable)[0] == "config.json"
    path, content = model_config(dep)
    assert path == "config.pbtxt" and 'name: "m"' in content
    # A fetched model on Triton: the storage initializer merges the generated config.pbtxt
    # (as for a Triton predictor), so nothing is mounted over the model directory.
    (init,) = dep["spec"]["template"]["spec"]["initContainers"]
    assert "--config=/etc/kubeinfer/model-config/config.pbtxt" in init["args"]
    assert not any(m.get("subPath") for m in can["volumeMounts"])
    # What rolls the canary's pods is its own config, not the predictor's.
    assert model_config(stable)[1] != content

    variants = yaml.safe_load(
        by_name(wanted, "ConfigMap", router.name(OWNER))["data"][router.CONFIG_FILE]
    )["variants"]
    assert [(v["name"], v["weight"]) for v in variants] == [("stable", 90), ("canary", 10)]


def test_a_canary_on_the_same_runtime_still_gets_its_own_config() -> None:
    s = spec({"model": {"storageUri": "https://h/m2.onnx", "version": 2}})
    wanted = children.build(
        OWNER,
        s,
        "onnxruntime",
        RUNTIMES["onnxruntime"],
        CONFIG,
        canary_runtime=canary.choose_runtime(s, RUNTIMES),
    )
    configs = {
        name: json.loads(
            by_name(wanted, "Deployment", name)["spec"]["template"]["metadata"]["annotations"][
                builders.CONFIG_ANNOTATION
            ]
        )
        for name in ("m-predictor", "m-canary")
    }
    assert configs["m-canary"] == configs["m-predictor"]
    dep = by_name(wanted, "Deployment", "m-canary")
    (mount,) = [
        m
        for m in dep["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        if m["name"] == builders.CONFIG_VOLUME
    ]
    assert mount["mountPath"] == "/mnt/models/m/config.json"
    # The ConfigMap an earlier version gave the canary goes where it is left.
    assert ("v1", "ConfigMap", "m-canary-model-config") in [c.key for c in wanted.absent]


def test_an_unresolved_canary_is_not_deployed_and_its_children_go() -> None:
    s = spec({"model": {"storageUri": "https://h/m2.onnx"}, "runtime": "vllm"})
    wanted = children.build(OWNER, s, "onnxruntime", RUNTIMES["onnxruntime"], CONFIG)
    absent = [c.key for c in wanted.absent]
    assert ("apps/v1", "Deployment", "m-canary") in absent
    assert ("v1", "ConfigMap", "m-canary-model-config") in absent
    assert not [m for m in wanted.apply if "canary" in m["metadata"]["name"]]
    variants = yaml.safe_load(
        by_name(wanted, "ConfigMap", router.name(OWNER))["data"][router.CONFIG_FILE]
    )["variants"]
    assert [(v["name"], v["weight"]) for v in variants] == [("stable", 100)]


def observed(**kw: Any) -> status.Observed:
    base: dict[str, Any] = {
        "generation": 1,
        "runtime_name": "onnxruntime",
        "runtime_problem": None,
        "spec_problem": None,
        "stopped": False,
        "gpu_resource": "nvidia.com/gpu",
        "gpus_per_replica": 0,
        "url": None,
        "selector": "kubeinfer.io/inferenceservice=m",
        "deployment": {"metadata": {"generation": 1}, "spec": {"replicas": 1}, "status": {}},
        "pods": [],
    }
    return status.Observed(**{**base, **kw})


def conditions(obs: status.Observed) -> dict[str, api.Condition]:
    return {c.type: c for c in status.build_status(obs).conditions}


def test_status_names_the_canary_runtime_and_its_problem_leaves_ready_alone() -> None:
    named = conditions(observed(canary_runtime_name="triton"))["RuntimeResolved"]
    assert named.status == "True"
    assert named.message == "Served by InferenceRuntime onnxruntime (the canary by triton)."
    problem = status.Problem(
        status.ConditionType.RUNTIME_RESOLVED,
        "RuntimeNotFound",
        "spec.canary: InferenceRuntime 'vllm' does not exist. The canary is not deployed; "
        "the stable set takes all traffic.",
    )
    ready_deployment = {
        "metadata": {"generation": 1},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": 1,
            "replicas": 1,
            "readyReplicas": 1,
            "availableReplicas": 1,
            "updatedReplicas": 1,
            "conditions": [{"type": "Available", "status": "True"}],
        },
    }
    broken = conditions(observed(canary_runtime_problem=problem, deployment=ready_deployment))
    resolved = broken["RuntimeResolved"]
    assert (resolved.status, resolved.reason) == ("False", "RuntimeNotFound")
    assert resolved.message.startswith("spec.canary: ")
    # The stable set serves: Ready says so, whatever the canary lacks.
    assert broken["Ready"].status == "True"


def test_a_promoted_canary_on_another_runtime_says_to_move_the_runtime_too() -> None:
    cs = spec(
        {"model": {"storageUri": "https://h/m.onnx"}, "runtime": "triton", "steps": [50]}
    ).canary
    assert cs is not None
    win = analysis.Window(requests=100, errors=0, p99_s=0.01)
    decision = canary.decide(state=canary.start(cs), spec=cs, stable=win, canary=win, now="t")
    assert decision.state.phase is api.CanaryPhase.PROMOTED
    (event,) = decision.events
    assert "canary.runtime (triton) into spec.runtime" in event.message


def test_revision_counts_the_runtime_and_keeps_old_revisions() -> None:
    plain = api.CanarySpec.model_validate({"model": {"storageUri": "https://h/m2.onnx"}})
    on_triton = plain.model_copy(update={"runtime": "triton"})
    assert canary.revision(plain) != canary.revision(on_triton)
    # A canary without canary.runtime hashes as it did before the field existed, so an
    # operator upgrade does not restart it at its first step.
    before = {
        k: v for k, v in plain.model_dump(by_alias=True, mode="json").items() if k != "runtime"
    }
    assert (
        canary.revision(plain)
        == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:12]
    )


@pytest.mark.parametrize(
    ("canary_", "extra", "refused"),
    [
        ({"model": {"storageUri": "https://h/m.onnx"}}, {}, True),
        ({"model": {"storageUri": "https://h/m.onnx", "version": 1}}, {}, True),
        (
            {"model": {"storageUri": "https://h/m.onnx"}, "runtime": "triton"},
            {"runtime": "triton"},
            True,
        ),
        ({"model": {"storageUri": "https://h/m.onnx", "version": 2}}, {}, False),
        ({"model": {"storageUri": "https://h/m2.onnx"}}, {}, False),
        ({"model": {"storageUri": "https://h/m.onnx"}, "runtime": "triton"}, {}, False),
        (
            {"model": {"storageUri": "https://h/m.onnx"}, "runtime": "triton"},
            {"runtime": "onnxruntime"},
            False,
        ),
    ],
)
def test_a_canary_identical_to_the_stable_set_is_refused(
    canary_: dict[str, Any], extra: dict[str, Any], refused: bool
) -> None:
    if refused:
        with pytest.raises(pydantic.ValidationError, match=api.CANARY_DIFFERS):
            spec(canary_, **extra)
    else:
        spec(canary_, **extra)


def test_the_crd_carries_canary_runtime_and_the_rule() -> None:
    text = crdgen.render_all()
    assert api.CANARY_DIFFERS in text
    assert "self.canary.runtime != self.runtime" in text


def test_a_canary_runtime_with_another_queue_metric_names_it_for_the_router() -> None:
    # The router reads each pod's queue depth by name; a canary runtime that calls it
    # otherwise gets its own name in router.yaml (the stable one keeps the global).
    other = RUNTIMES["triton"].model_copy(
        update={
            "metrics": RUNTIMES["triton"].metrics.model_copy(
                update={"queue_depth": "my_server_queue_depth"}
            )
        }
    )
    runtimes = {**RUNTIMES, "mine": other}

    def rendered(canary_runtime: str, catalogue: dict[str, Any]) -> dict[str, Any]:
        s = spec({"model": {"storageUri": "https://h/m.onnx"}, "runtime": canary_runtime})
        wanted = children.build(
            OWNER,
            s,
            *builders.choose_runtime(s, catalogue),
            CONFIG,
            canary_runtime=canary.choose_runtime(s, catalogue),
        )
        cm = by_name(wanted, "ConfigMap", router.name(OWNER))
        doc: dict[str, Any] = yaml.safe_load(cm["data"][router.CONFIG_FILE])
        return doc

    doc = rendered("mine", runtimes)
    assert doc["queueMetric"] == RUNTIMES["onnxruntime"].metrics.queue_depth
    assert [v.get("queueMetric") for v in doc["variants"]] == [None, "my_server_queue_depth"]
    # The same name (both default runtimes share Triton's) is not repeated per variant.
    doc = rendered("triton", RUNTIMES)
    assert all("queueMetric" not in v for v in doc["variants"])
