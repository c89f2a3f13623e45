"""Reconcile one InferenceService: observe -> decide (pure) -> act, then report the truth.

Owns: the order of operations and the "write only what differs" rule. ``_observe`` reads the
newest object, the runtime catalogue and the children from the watch-fed store (no API reads);
the decisions are pure (``core.builders`` for the children, ``core.children`` for what differs
and what replicas to enforce, ``core.status`` for the status); ``_act`` applies exactly the
children that differ (server-side apply), scales, and writes status and Events. So an operator
restart (or a watch event caused by our own status write) makes zero writes for objects that
are already right.
"""

from __future__ import annotations

import dataclasses
import datetime
import threading
from typing import Any

import pydantic

from kubeinfer import telemetry
from kubeinfer.clients import catalogue, cluster, kube
from kubeinfer.core import api, builders, canary, census, children, rollout, router, status
from kubeinfer.core.config import OperatorConfig

# No per-service lock here: every call comes from a work-queue worker (handlers.events.work;
# the kopf handlers never call a reconciler directly, and an import-linter contract keeps the
# engines from importing one). The queue never hands one key to two workers at once and merges
# a key added while it waits, so a burst of child events already makes one reconcile. A second
# exclusion here could only hide a caller that bypasses the queue: route new callers through it.
#
# Deployments created by ``reconcile_deployment`` and not yet named in a "Created" Event: the
# full reconcile that follows names them with the other children, in one Event per create.
_unannounced: dict[api.ServiceKey, list[str]] = {}
# New services whose Deployment this process created and that it has seen neither Ready nor
# in trouble yet: their coming up is told by the "Created" Event and status (``announce``).
# Memory only: after a restart a new service's later steps get their Events, as before.
_coming_up: set[api.ServiceKey] = set()
# Workers of different services share both tables; forget() runs on the event loop.
_unannounced_guard = threading.Lock()
# How long a new service coming up normally goes without a status (see ``_write_status``).
FIRST_STATUS_GRACE_S = 10.0


def forget(namespace: str, name: str) -> None:
    """A deleted service: drop what is kept per service, so a later one of the same name does
    not announce the old one's Deployment, and the table does not grow forever."""
    with _unannounced_guard:
        _unannounced.pop((namespace, name), None)
        _coming_up.discard((namespace, name))


@dataclasses.dataclass
class Outcome:
    """What one reconcile did, for logs, tests and benchmarks."""

    applied: list[str] = dataclasses.field(default_factory=list)
    deleted: list[str] = dataclasses.field(default_factory=list)
    scaled_to: int | None = None
    status_written: bool = False
    ready: bool = False
    # Reconcile again after this many seconds even if no event comes (a deferred first status).
    requeue_after_s: float | None = None


@dataclasses.dataclass(frozen=True)
class _Seen:
    """One InferenceService as observed: its spec (or why it is invalid) and its runtime,
    and its canary's runtime (or why it has none) when it has a canary."""

    isvc: dict[str, Any]
    owner: builders.Owner
    spec: api.InferenceServiceSpec | None
    runtime_name: str | None
    runtime: api.InferenceRuntimeSpec | None
    spec_problem: status.Problem | None
    runtime_problem: status.Problem | None
    canary_runtime: tuple[str, api.InferenceRuntimeSpec] | None = None
    canary_runtime_problem: status.Problem | None = None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _describe_validation(exc: pydantic.ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"spec.{where}: {first['msg']}" if where else first["msg"]


def reconcile(isvc: dict[str, Any], config: OperatorConfig) -> Outcome:
    meta = isvc["metadata"]
    key = (meta["namespace"], meta["name"])
    with telemetry.reconcile_timer():
        try:
            # The event that brought us here can be stale by the time a worker runs (our own
            # status write may already be stored); the store holds the newest copy seen from
            # watches and from our writes, which keeps writes and Events exact.
            fresh = kube.cached_get(api.API_VERSION, "InferenceService", *key)
            if fresh is None or fresh["metadata"].get("deletionTimestamp"):
                return Outcome()
            return _reconcile(_observe(fresh), config)
        except Exception:
            telemetry.RECONCILE_ERRORS.inc()
            raise


def reconcile_by_name(namespace: str, name: str, config: OperatorConfig) -> Outcome:
    """Reconcile by key (children's watch events carry only the child)."""
    return reconcile({"metadata": {"namespace": namespace, "name": name}}, config)


def reconcile_deployment(namespace: str, name: str, config: OperatorConfig) -> Outcome:
    """The first step of a create, alone: apply the Deployment (and its start replicas) if it
    does not exist yet; nothing else, no Event, no status.

    The work queue runs this for every new service before any full reconcile, so a burst of
    creates gets its Deployments (what the controllers, the scheduler and the nodes wait on)
    at one write each; the Service, Event and status follow in the full reconcile. The pods
    need nothing else to start: their model config rides in the pod template.
    """
    key = (namespace, name)
    outcome = Outcome()
    with telemetry.reconcile_timer():
        try:
            fresh = kube.cached_get(api.API_VERSION, "InferenceService", *key)
            if fresh is None or fresh["metadata"].get("deletionTimestamp"):
                return outcome
            seen = _observe(fresh)
            if seen.spec is None or seen.runtime is None or seen.runtime_name is None:
                return outcome
            # The strategy a new service gets (no census: nothing is rolling yet), recorded on
            # the Deployment as the full reconcile would, so that reconcile finds it decided.
            strategy = _rollout_strategy(
                seen.owner, seen.spec, seen.runtime_name, seen.runtime, config
            )
            wanted = children.build(
                seen.owner, seen.spec, seen.runtime_name, seen.runtime, config, strategy=strategy
            )
            dkey = wanted.deployment_key
            if kube.cached_get(dkey[0], dkey[1], namespace, dkey[2]) is not None:
                return outcome
            manifest = next(m for m in wanted.apply if children.key_of(m) == dkey)
            deployment = kube.apply(manifest)
            outcome.applied.append("Deployment")
            with _unannounced_guard:
                _unannounced.setdefault(key, []).append(f"Deployment {dkey[2]}")
                if status.ready_condition(fresh.get("status") or {}) is None:
                    _coming_up.add(key)
            _enforce_replicas(seen, seen.spec, deployment, created=True, outcome=outcome)
        except Exception:
            telemetry.RECONCILE_ERRORS.inc()
            raise
    return outcome


def _observe(isvc: dict[str, Any]) -> _Seen:
    meta = isvc["metadata"]
    owner = builders.Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
    try:
        spec = api.parse_spec(isvc.get("spec") or {})
    except pydantic.ValidationError as exc:
        problem = status.Problem(
            status.ConditionType.READY, "InvalidSpec", _describe_validation(exc)
        )
        return _Seen(isvc, owner, None, None, None, problem, None)
    runtimes = catalogue.runtimes()
    try:
        runtime_name, runtime = builders.choose_runtime(spec, runtimes)
    except builders.RuntimeResolutionError as exc:
        problem = status.Problem(status.ConditionType.RUNTIME_RESOLVED, exc.reason, str(exc))
        return _Seen(isvc, owner, spec, None, None, None, problem)
    if spec.canary is None or not spec.router.enabled:
        return _Seen(isvc, owner, spec, runtime_name, runtime, None, None)
    try:
        chosen = canary.choose_runtime(spec, runtimes)
    except builders.RuntimeResolutionError as exc:
        # The stable set is unaffected: it keeps serving, and the canary waits for a runtime.
        problem = status.Problem(status.ConditionType.RUNTIME_RESOLVED, exc.reason, str(exc))
        return _Seen(isvc, owner, spec, runtime_name, runtime, None, None, None, problem)
    return _Seen(isvc, owner, spec, runtime_name, runtime, None, None, chosen)


def _reconcile(seen: _Seen, config: OperatorConfig) -> Outcome:
    outcome = Outcome()
    owner, spec, runtime = seen.owner, seen.spec, seen.runtime
    if spec is not None and runtime is not None and seen.runtime_name is not None:
        deployment = _act_children(seen, spec, seen.runtime_name, runtime, config, outcome)
    else:
        deployment = kube.cached_get(
            "apps/v1", "Deployment", owner.namespace, builders.child_name(owner)
        )
    zero = bool(
        spec and spec.router.enabled and spec.scaling.min_replicas == 0 and not spec.stopped
    )
    observed = status.Observed(
        generation=int(seen.isvc["metadata"].get("generation") or 0),
        runtime_name=seen.runtime_name,
        runtime_problem=seen.runtime_problem,
        canary_runtime_name=seen.canary_runtime[0] if seen.canary_runtime else None,
        canary_runtime_problem=seen.canary_runtime_problem,
        spec_problem=seen.spec_problem,
        stopped=bool(spec and spec.stopped),
        gpu_resource=spec.gpu.resource_name if spec else api.GPUSpec().resource_name,
        gpus_per_replica=spec.gpu.count if spec else 0,
        url=builders.service_url(owner, spec, runtime) if spec and runtime else None,
        selector=builders.selector_string(owner),
        deployment=deployment,
        pods=kube.cached_pods(owner.namespace, owner.name),
        execution_providers=status.recorded_providers(seen.isvc.get("status") or {}),
        runtime_reports_provider=bool(runtime and runtime.metrics.execution_provider),
        may_scale_to_zero=zero,
        waking=zero and status.waking(seen.isvc.get("status") or {}),
        canary=_canary_state(seen, spec),
    )
    _write_status(seen.isvc, status.build_status(observed), outcome, deployment=deployment)
    return outcome


def _canary_state(seen: _Seen, spec: api.InferenceServiceSpec | None) -> api.CanaryStatus | None:
    """status.canary as the canary engine wrote it (a fresh start when it is about another
    spec.canary, or absent); None without a canary, or one with no runtime (not deployed)."""
    if spec is None or spec.canary is None or not spec.router.enabled:
        return None
    if seen.canary_runtime is None:
        return None
    return canary.current(spec.canary, (seen.isvc.get("status") or {}).get("canary"))


def _act_children(
    seen: _Seen,
    spec: api.InferenceServiceSpec,
    runtime_name: str,
    runtime: api.InferenceRuntimeSpec,
    config: OperatorConfig,
    outcome: Outcome,
) -> dict[str, Any] | None:
    """Apply the children that differ from what the store holds; delete what is no longer
    wanted; enforce the replica bounds. Returns the Deployment as it now is."""
    owner, ns = seen.owner, seen.owner.namespace
    predictor = kube.cached_get("apps/v1", "Deployment", ns, builders.child_name(owner))
    wanted = children.build(
        owner,
        spec,
        runtime_name,
        runtime,
        config,
        strategy=_rollout_strategy(owner, spec, runtime_name, runtime, config),
        inference_pools=cluster.inference_pools_installed(config.namespaces),
        canary_state=_canary_state(seen, spec),
        canary_runtime=seen.canary_runtime,
        stable_replicas=int(((predictor or {}).get("spec") or {}).get("replicas") or 1),
    )
    live = {key: kube.cached_get(key[0], key[1], ns, key[2]) for key in wanted.children()}
    plan = children.differences(wanted, live)
    verbs: dict[str, list[str]] = {}
    with _unannounced_guard:
        created_before = _unannounced.pop((ns, owner.name), [])
        new = status.ready_condition(seen.isvc.get("status") or {}) is None
        if plan.creates_deployment and new:
            _coming_up.add((ns, owner.name))
    if created_before:
        verbs["Created"] = created_before
    for manifest in write_order(plan.apply, live):
        key = children.key_of(manifest)
        # ConfigMaps, ServiceAccounts and RBAC objects have no generation: whether the store
        # held the child before the apply says which verb it was (an update is never "Created").
        existed = live.get(key) is not None
        result = kube.apply(manifest)
        live[key] = result
        updated = existed or result.get("metadata", {}).get("generation", 1) > 1
        verb = "Updated" if updated else "Created"
        outcome.applied.append(manifest["kind"])
        verbs.setdefault(verb, []).append(f"{manifest['kind']} {manifest['metadata']['name']}")
    # One Event per verb, not per child: at N=500 Events were a third of the writes.
    for verb, what in verbs.items():
        kube.emit_event(
            seen.isvc, type_="Normal", reason=verb, message=f"{verb} {', '.join(what)}."
        )
    for child in plan.delete:
        kube.delete(child.api_version, child.kind, ns, child.name)
        outcome.deleted.append(child.kind)
    deployment = live.get(wanted.deployment_key)
    if deployment is None:
        return None
    return _enforce_replicas(
        seen, spec, deployment, created=plan.creates_deployment, outcome=outcome
    )


def write_order(
    manifests: list[dict[str, Any]], live: dict[children.Key, dict[str, Any] | None]
) -> list[dict[str, Any]]:
    """The order to apply ``manifests`` in. Pure.

    A new predictor Deployment goes first: it is what everything downstream (the
    controllers, the scheduler, the nodes) waits on, and it mounts no other child (its model
    config rides in its pod template). An existing ConfigMap (the router's) is updated
    before the Deployments: a config change rolls the pods, and a new pod must not start on
    the old content (a subPath mount never sees later updates).
    """

    def rank(manifest: dict[str, Any]) -> int:
        # Not the router's: its pods need the ServiceAccount applied before it (builder order).
        component = manifest["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        if (
            manifest["kind"] == "Deployment"
            and component != router.COMPONENT
            and live.get(children.key_of(manifest)) is None
        ):
            return 0
        if manifest["kind"] == "ConfigMap" and live.get(children.key_of(manifest)) is not None:
            return 0
        return 1

    return sorted(manifests, key=rank)  # stable: the builders' order otherwise


def announce(before: dict[str, Any] | None, after: dict[str, Any], *, coming_up: bool) -> bool:
    """Whether the Ready condition going from ``before`` to ``after`` gets an Event. Pure.

    Every change does, except the steps of a new service coming up normally: the "Created"
    Event has said it is being set up and status says where it stands, so neither its first
    status (ReplicasNotReady) nor its first Ready=True tells a user anything new; a problem
    on the way (a Warning) does, and so does every change after. ``coming_up``: this process
    created the service's Deployment and has seen it neither Ready nor in trouble since;
    without that memory (after a restart) only a first status of ReplicasNotReady is quiet.
    """
    if (
        before is not None
        and before.get("status") == after["status"]
        and before.get("reason") == after["reason"]
    ):
        return False
    on_the_way = after["status"] != "True" and after["reason"] == status.REPLICAS_NOT_READY
    if coming_up and (after["status"] == "True" or on_the_way):
        return False
    return not (before is None and on_the_way)


def _enforce_replicas(
    seen: _Seen,
    spec: api.InferenceServiceSpec,
    deployment: dict[str, Any],
    *,
    created: bool,
    outcome: Outcome,
) -> dict[str, Any]:
    """Scale to the replicas the spec allows, when the Deployment has another count."""
    ns = seen.owner.namespace
    target = children.replicas(spec, deployment, created=created)
    current = int((deployment.get("spec") or {}).get("replicas") or 0)
    if target == current:
        return deployment
    kube.set_scale(ns, deployment["metadata"]["name"], target)
    outcome.scaled_to = target
    kube.emit_event(
        seen.isvc,
        type_="Normal",
        reason="Scaled",
        message=f"Set replicas {current} -> {target} "
        f"({'stopped' if spec.stopped else spec.scaling.mode.value}).",
    )
    return {**deployment, "spec": {**(deployment.get("spec") or {}), "replicas": target}}


def _rollout_strategy(
    owner: builders.Owner,
    spec: api.InferenceServiceSpec,
    runtime_name: str,
    runtime: api.InferenceRuntimeSpec,
    config: OperatorConfig,
) -> api.RolloutStatus:
    """Observe what the rollout decision needs, then decide (``core.rollout``). Free GPUs are
    counted (two cluster-wide listings) only when the decision depends on them: a GPU service
    whose pod template is about to change. Never on creation, never per reconcile."""
    live = kube.cached_get("apps/v1", "Deployment", owner.namespace, builders.child_name(owner))
    wanted = builders.build_deployment(owner, spec, runtime_name, runtime, config)
    changes = children.template_changes(wanted, live)
    recorded = rollout.recorded(live)
    spare = None
    if spec.gpu.count > 0 and changes:
        pod = wanted["spec"]["template"]["spec"]
        spare = cluster.spare_gpus(
            config,
            resource=spec.gpu.resource_name,
            node_selector=pod.get("nodeSelector") or {},
            tolerations=pod.get("tolerations") or [],
        )
    pods = kube.cached_pods(owner.namespace, owner.name) if live is not None else []
    return rollout.decide(
        rollout.Seen(
            gpus_per_replica=spec.gpu.count,
            gpu_resource=spec.gpu.resource_name,
            template_changes=changes,
            rolling=rollout.rolling(live),
            live=recorded,
            spare_gpus=spare,
            pod_waits_for_gpu=census.classify_pods(pods, spec.gpu.resource_name).waiting_for_gpu
            > 0,
        )
    )


def _age_s(stamp: str | None) -> float:
    """Seconds since an API timestamp (RFC 3339, whole seconds); 0 when absent."""
    if not stamp:
        return 0.0
    then = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return max(0.0, (datetime.datetime.now(datetime.UTC) - then).total_seconds())


def _unobserved(deployment: dict[str, Any] | None) -> bool:
    """True when the Deployment controller has not yet reported on this Deployment's spec."""
    if deployment is None:
        return False
    observed = (deployment.get("status") or {}).get("observedGeneration")
    return observed is None or int(observed) < int(deployment["metadata"].get("generation") or 1)


def _write_status(
    isvc: dict[str, Any],
    built: api.InferenceServiceStatus,
    outcome: Outcome,
    *,
    deployment: dict[str, Any] | None,
) -> None:
    meta = isvc["metadata"]
    current = isvc.get("status") or {}
    desired = status.to_dict(built)
    desired["conditions"] = status.merge_conditions(
        desired["conditions"], current.get("conditions") or [], _now()
    )
    ready = status.ready_condition(desired)
    outcome.ready = bool(ready and ready["status"] == "True")
    if not status.status_differs(desired, current):
        return
    progressing = bool(ready and ready["reason"] == status.REPLICAS_NOT_READY)
    if progressing and _unobserved(deployment):
        # Nothing to report yet but "0 replicas ready": the Deployment controller's status
        # update is a watch event that brings a refresh within a second.
        return
    waited = _age_s(meta.get("creationTimestamp"))
    if progressing and not current.get("conditions") and waited < FIRST_STATUS_GRACE_S:
        # A new service coming up with nothing wrong: its first status waits until it is
        # Ready, a problem is named, or the grace is over (a requeue sees to that), so a
        # create writes one status, not one per replica count on the way ("0 of 1", "1 of 1").
        # The "Created" Event has told the user meanwhile.
        outcome.requeue_after_s = FIRST_STATUS_GRACE_S - waited
        return
    kube.patch_status(api.API_VERSION, "InferenceService", meta["namespace"], meta["name"], desired)
    outcome.status_written = True
    before = status.ready_condition(current)
    key = (meta["namespace"], meta["name"])
    with _unannounced_guard:
        coming_up = key in _coming_up
        if not progressing:  # Ready, or a problem named: the coming up is over
            _coming_up.discard(key)
    woke = bool(ready and ready["reason"] == status.WAKING_UP)
    if ready and announce(before, ready, coming_up=coming_up):
        kube.emit_event(
            isvc,
            # A wake from zero is the router doing its job, not a warning.
            type_="Normal" if ready["status"] == "True" or woke else "Warning",
            reason=ready["reason"],
            message=ready["message"],
        )
    on_cpu = status.cpu_fallback_news(desired, current)
    if on_cpu is not None:
        kube.emit_event(isvc, type_="Warning", reason=on_cpu["reason"], message=on_cpu["message"])
