"""The router.yaml the operator renders (kubeinfer.core.router) is one the router accepts and
starts with, in every canary phase: the packages share no code, so this is where the two
schemas meet."""

from __future__ import annotations

import pathlib

import pytest

from kubeinfer.core import api, builders, router
from kubeinfer.core import config as operator_config
from kubeinfer_router import cli, config, waking

OWNER = builders.Owner(name="m", namespace="ns", uid="u")
RUNTIME = api.InferenceRuntimeSpec(
    image="ghcr.io/kubeinfer/onnx-server:1",
    formats=[api.RuntimeFormat(name=api.ModelFormat.ONNX)],
    batching_config=api.BatchingConfigKind.KUBEINFER_JSON,
)
SPEC = api.parse_spec(
    {
        "model": {"name": "m", "format": "onnx", "storageUri": "https://h/m.onnx"},
        "router": {"enabled": True},
        "canary": {"model": {"storageUri": "https://h/m2.onnx"}},
    }
)


@pytest.mark.parametrize(
    ("phase", "weight", "wake"),
    [
        (None, None, ["m-predictor"]),  # no canary state yet: the first step
        (api.CanaryPhase.PROGRESSING, 25, ["m-predictor"]),
        (api.CanaryPhase.ROLLED_BACK, 0, ["m-predictor"]),
        (api.CanaryPhase.PROMOTED, 100, []),  # all traffic to the canary: nothing to wake
    ],
)
def test_the_router_starts_on_what_the_operator_renders(
    tmp_path: pathlib.Path, phase: api.CanaryPhase | None, weight: int | None, wake: list[str]
) -> None:
    state = (
        None
        if phase is None or weight is None
        else api.CanaryStatus(revision="r", phase=phase, step=0, weight=weight)
    )
    path = tmp_path / "router.yaml"
    path.write_text(router.render_config(OWNER, SPEC, RUNTIME, state))
    cfg = cli.load_config(cli.parse_args([f"--config={path}"]))
    weights = {v.name: v.weight for v in cfg.variants}
    expected = SPEC.canary.steps[0] if weight is None else weight  # type: ignore[union-attr]
    assert weights == {"stable": 100 - expected, "canary": expected}
    hook = cli.build_wake(cfg, object())  # raises on a wake with no target
    if wake:
        assert isinstance(hook, waking.ScaleWake) and hook.deployments == wake
    else:
        assert hook is None and cfg.wake.kind is config.WakeKind.NONE


def test_the_router_watches_the_configmap_it_mounts() -> None:
    """The Deployment's args name the ConfigMap the operator writes, and the key the router
    reads from it (the --config file's name) is the one router.yaml is rendered under."""
    dep = router.build_deployment(OWNER, SPEC, RUNTIME, operator_config.OperatorConfig())
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    args = cli.parse_args(container["args"])
    cfg = config.parse_document(router.build_config(OWNER, SPEC, RUNTIME))
    cm = router.build_config_map(OWNER, SPEC, RUNTIME)
    assert cli.configmap_reference(args, cfg) == (
        cm["metadata"]["namespace"],
        cm["metadata"]["name"],
    )
    assert args.config.name in cm["data"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert str(args.config.parent) == mount["mountPath"]
    (volume,) = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"]
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
