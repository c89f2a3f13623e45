"""The reconciler's decisions about children, pure: which to apply, which to delete, and the
replica count the reconciler enforces.

Owns: the set of children an InferenceService wants (from the builders), the rule "apply only
what differs" (``contains``: every field we set is already live with the same value), and the
replica rule (a Deployment created now starts at ``initial_replicas``; afterwards only bounds,
``stopped`` and mode Off are enforced, so a scaled count survives any number of re-applies).
The InferencePool is a child only where its CRD is installed (the caller says so). The
router's children (``core.router``) are wanted while spec.router.enabled, absent otherwise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from kubeinfer.core import api, builders, canary, inference_pool, router
from kubeinfer.core.config import OperatorConfig

Key = tuple[str, str, str]  # (apiVersion, kind, name)


@dataclasses.dataclass(frozen=True)
class Child:
    api_version: str
    kind: str
    name: str

    @property
    def key(self) -> Key:
        return (self.api_version, self.kind, self.name)


def key_of(manifest: Mapping[str, Any]) -> Key:
    return (manifest["apiVersion"], manifest["kind"], manifest["metadata"]["name"])


@dataclasses.dataclass(frozen=True)
class Wanted:
    """The children an InferenceService should have, and those it should not."""

    apply: list[dict[str, Any]]
    absent: list[Child]
    deployment_key: Key

    def children(self) -> list[Key]:
        """Every child this decision reads the live copy of."""
        return [key_of(m) for m in self.apply] + [c.key for c in self.absent]


@dataclasses.dataclass(frozen=True)
class Plan:
    apply: list[dict[str, Any]]
    delete: list[Child]
    creates_deployment: bool


def build(
    owner: builders.Owner,
    spec: api.InferenceServiceSpec,
    runtime_name: str,
    runtime: api.InferenceRuntimeSpec,
    config: OperatorConfig,
    *,
    strategy: api.RolloutStatus | None = None,
    inference_pools: bool = False,
    canary_state: api.CanaryStatus | None = None,
    canary_runtime: tuple[str, api.InferenceRuntimeSpec] | None = None,
    stable_replicas: int = 1,
) -> Wanted:
    """``strategy``: the rollout decision; ``inference_pools``: the InferencePool CRD is
    installed (without it the kind does not exist, so there is nothing to apply or delete);
    ``canary_state``: status.canary (None before the engine's first word); ``canary_runtime``
    the canary's resolved runtime (``canary.choose_runtime``), None when it has none: such a
    canary is not deployed (no Deployment, ConfigMap or router variant), as without
    spec.canary; and ``stable_replicas`` the predictor's, which the canary's replicas follow."""
    if spec.canary is not None and canary_runtime is None:
        spec = spec.model_copy(update={"canary": None})
        canary_state = None
    routed = spec.router.enabled
    manifests = [
        builders.build_deployment(owner, spec, runtime_name, runtime, config, strategy=strategy),
        builders.build_service(
            owner,
            runtime_name,
            runtime,
            router_selector=router.pod_selector(owner) if routed else None,
        ),
    ]
    pdb = builders.build_pdb(owner, spec, runtime_name)
    # The model config's ConfigMaps of versions before it rode in the pod template (the
    # predictor's and the canary's): they go with the apply that gives the Deployments the new
    # template (running pods keep the files they mounted; the new ones read the annotation).
    absent: list[Child] = [
        Child("v1", "ConfigMap", builders.config_map_name(owner)),
        Child("v1", "ConfigMap", canary.config_map_name(owner)),
    ]
    if routed:
        manifests.extend(
            router.build_all(
                owner,
                spec,
                runtime,
                config,
                canary_state,
                canary_runtime[1] if canary_runtime is not None else None,
            )
        )
        if router.build_pdb(owner, spec) is None:
            absent.append(Child("policy/v1", "PodDisruptionBudget", router.name(owner)))
    else:
        absent.extend(Child(v, k, router.name(owner)) for v, k in router.KINDS)
    if routed and spec.canary is not None and canary_runtime is not None:
        state = canary_state or canary.start(spec.canary)
        canary_runtime_name, canary_runtime_spec = canary_runtime
        manifests.append(
            canary.build_deployment(
                owner,
                spec,
                canary_runtime_name,
                canary_runtime_spec,
                config,
                # A stopped service frees the canary's pods too.
                replicas_=0 if spec.stopped else canary.replicas(state, stable_replicas),
            )
        )
    else:
        absent.append(Child("apps/v1", "Deployment", canary.name(owner)))
    name = builders.child_name(owner)
    if pdb is not None:
        manifests.append(pdb)
    else:
        absent.append(Child("policy/v1", "PodDisruptionBudget", name))
    if inference_pools and spec.inference_pool.enabled:
        manifests.append(inference_pool.build_inference_pool(owner, spec, runtime_name, runtime))
    elif inference_pools:
        absent.append(Child(inference_pool.API_VERSION, inference_pool.KIND, name))
    return Wanted(apply=manifests, absent=absent, deployment_key=("apps/v1", "Deployment", name))


def differences(wanted: Wanted, live: Mapping[Key, dict[str, Any] | None]) -> Plan:
    """What to write: children missing or differing from the live copy; unwanted ones present."""
    changed = [m for m in wanted.apply if not contains(m, live.get(key_of(m)))]
    return Plan(
        apply=changed,
        delete=[c for c in wanted.absent if live.get(c.key) is not None],
        creates_deployment=live.get(wanted.deployment_key) is None,
    )


def template_changes(deployment: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
    """Applying ``deployment`` changes the live pod template, i.e. starts a rollout (a
    Deployment being created has no rollout: its pods are the first)."""
    if live is None:
        return False
    return not contains(deployment["spec"]["template"], (live.get("spec") or {}).get("template"))


def contains(desired: Any, live: Any) -> bool:
    """True when every field we set is already present in ``live`` with the same value."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(contains(v, live.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(desired) == len(live)
            and all(contains(d, x) for d, x in zip(desired, live, strict=True))
        )
    if isinstance(desired, bool) or isinstance(live, bool):
        return bool(desired == live)
    if isinstance(desired, int | float) and isinstance(live, int | float):
        return bool(float(desired) == float(live))
    return str(desired) == str(live) if live is not None else desired is None


def replicas(spec: api.InferenceServiceSpec, deployment: dict[str, Any], *, created: bool) -> int:
    """The replicas the reconciler sets: the start count on creation, else the current count
    kept inside what the spec allows (the autoscaler moves it within the bounds)."""
    if created:
        return builders.initial_replicas(spec)
    current = int((deployment.get("spec") or {}).get("replicas") or 0)
    return builders.clamp_replicas(spec, current)
