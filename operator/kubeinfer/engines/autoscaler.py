"""The autoscaler loop: every tick, scrape each tracked InferenceService's Ready pods, decide,
scale, explain.

Owns: time and I/O for scaling. The decision itself is ``core.scaling.decide.decide`` (pure,
``now`` passed in); this module only gathers its inputs (pods and their metrics), acts on its
result through the Deployment's scale subresource (field manager ``kubeinfer-autoscaler``),
and reports it (status.autoscaler, Events, metrics). Its memory (windows, last scale time,
learned cold start) is persisted in status.autoscaler.state, so an operator restart neither
forgets a burst nor scales down on a fresh, empty window.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pydantic

from kubeinfer import telemetry
from kubeinfer.clients import catalogue, kube, scrape
from kubeinfer.clients.store import STORE
from kubeinfer.core import api, builders, metrics
from kubeinfer.core.scaling import cold_start, decide, policy, signals, window
from kubeinfer.core.scaling import state as memory

log = logging.getLogger("kubeinfer.autoscaler")
PERSIST_EVERY_S = 30.0


def policy_from_spec(spec: api.ScalingSpec) -> policy.ScalingPolicy:
    return policy.ScalingPolicy(
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        metric=policy.Metric(spec.metric.value),
        target=spec.target,
        stable_window_s=float(spec.stable_window_seconds),
        scale_down_stabilization_s=float(spec.scale_down_delay_seconds),
        gpu_veto_utilization=spec.gpu_utilization_veto,
        fallback_replicas=spec.fallback_replicas,
    )


def metric_names(runtime: api.InferenceRuntimeSpec | None) -> metrics.MetricNames:
    if runtime is None:
        return metrics.TRITON
    m = runtime.metrics
    return dataclasses.replace(
        metrics.TRITON,
        pending_requests=m.queue_depth,
        queue_duration_us=m.queue_time,
        request_success=m.request_count,
        gpu_utilization=m.gpu_utilization,
    )


@dataclasses.dataclass
class Tracked:
    namespace: str
    name: str
    isvc: dict[str, Any]
    spec: api.InferenceServiceSpec
    policy: policy.ScalingPolicy
    window: window.SignalWindow
    state: memory.ScalerState
    history: tuple[memory.DecisionRecord, ...] = ()
    previous: dict[str, tuple[metrics.RawScrape, float]] = dataclasses.field(default_factory=dict)
    last_persist: float = 0.0
    last_desired: int | None = None


def _parse_time(stamp: str | None) -> float | None:
    if not stamp:
        return None
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(frozen=True)
class PodCensus:
    """The service's live pods, sorted by what they mean for capacity."""

    ready: dict[str, str]  # pod name -> IP, the pods to scrape
    starting: int  # placed on a node, not Ready yet
    unschedulable: int  # the scheduler said no (PodScheduled=False)
    unplaced: int  # the scheduler has not answered yet
    # (created, ready) timestamps of Ready pods, oldest Ready first, for the cold start.
    cold_starts: list[tuple[float, float]]

    @property
    def live(self) -> int:
        return len(self.ready) + self.starting + self.unschedulable + self.unplaced


def classify_pods(pods: list[dict[str, Any]]) -> PodCensus:
    ready: dict[str, str] = {}
    starting = unschedulable = unplaced = 0
    pairs: list[tuple[float, float]] = []
    for pod in pods:
        meta, st = pod["metadata"], pod.get("status") or {}
        if meta.get("deletionTimestamp"):
            continue
        conds = {c.get("type"): c for c in st.get("conditions") or []}
        is_ready = conds.get("Ready", {}).get("status") == "True"
        scheduled = conds.get("PodScheduled", {}).get("status")
        if is_ready and st.get("podIP"):
            ready[meta["name"]] = st["podIP"]
            created = _parse_time(meta.get("creationTimestamp"))
            became = _parse_time(conds["Ready"].get("lastTransitionTime"))
            if created is not None and became is not None:
                pairs.append((created, became))
        elif scheduled == "False":
            unschedulable += 1
        elif scheduled == "True" or (pod.get("spec") or {}).get("nodeName"):
            starting += 1
        else:
            unplaced += 1
    pairs.sort(key=lambda p: p[1])
    return PodCensus(ready, starting, unschedulable, unplaced, pairs)


def _numeric(inputs: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in inputs.items():
        if isinstance(value, bool):
            out[key] = 1.0 if value else 0.0
        elif isinstance(value, int | float):
            out[key] = float(value)
    return out


class Autoscaler:
    def __init__(
        self,
        *,
        interval_s: float = 2.0,
        scrape_timeout_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.interval_s = interval_s
        self.scrape_timeout_s = scrape_timeout_s
        self.clock = clock
        self._tracked: dict[tuple[str, str], Tracked] = {}
        self._stopped = asyncio.Event()

    # ---- fed by the handlers -------------------------------------------------------------
    def track(self, isvc: dict[str, Any]) -> None:
        meta = isvc["metadata"]
        key = (meta["namespace"], meta["name"])
        try:
            spec = api.parse_spec(isvc.get("spec") or {})
        except pydantic.ValidationError:
            self.forget(key)
            return
        if spec.stopped or spec.scaling.mode is api.ScalingMode.OFF:
            self.forget(key)
            return
        new_policy = policy_from_spec(spec.scaling)
        current = self._tracked.get(key)
        if current is not None:
            current.isvc, current.spec = isvc, spec
            if current.policy != new_policy:
                current.policy = new_policy
                current.window = window.SignalWindow.for_policy(new_policy)
            return
        restored_state, restored_window, history = self._restore(isvc, new_policy)
        auto = (isvc.get("status") or {}).get("autoscaler") or {}
        # Seeded from status, so a restarted operator that decides what it decided before
        # writes nothing.
        self._tracked[key] = Tracked(
            namespace=key[0],
            name=key[1],
            isvc=isvc,
            spec=spec,
            policy=new_policy,
            window=restored_window,
            state=restored_state,
            history=history,
            last_desired=auto.get("desiredReplicas"),
            last_persist=self.clock() if auto else 0.0,
        )

    def forget(self, key: tuple[str, str]) -> None:
        if self._tracked.pop(key, None) is not None:
            telemetry.forget_service(namespace=key[0], name=key[1])

    def observe_pod(self, pod: dict[str, Any], *, deleted: bool) -> None:
        """Drop a deleted pod's last scrape so a reused name never yields a bogus delta."""
        if deleted:
            labels = pod["metadata"].get("labels") or {}
            tracked = self._tracked.get(
                (pod["metadata"].get("namespace", ""), labels.get(builders.LABEL_ISVC, ""))
            )
            if tracked is not None:
                tracked.previous.pop(pod["metadata"]["name"], None)

    def stop(self) -> None:
        self._stopped.set()

    @staticmethod
    def _restore(
        isvc: dict[str, Any], pol: policy.ScalingPolicy
    ) -> tuple[memory.ScalerState, window.SignalWindow, tuple[memory.DecisionRecord, ...]]:
        auto = (isvc.get("status") or {}).get("autoscaler") or {}
        try:
            saved = json.loads(auto.get("state") or "{}")
            st = memory.ScalerState.from_dict(saved.get("state", {}))
            win = (
                window.SignalWindow.from_dict(saved["window"])
                if "window" in saved
                else window.SignalWindow.for_policy(pol)
            )
            history = tuple(memory.DecisionRecord.from_dict(d) for d in saved.get("history", []))
            return st, win, history
        except (ValueError, KeyError, TypeError):
            return memory.ScalerState(), window.SignalWindow.for_policy(pol), ()

    # ---- the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while not self._stopped.is_set():
                started = time.monotonic()
                await asyncio.gather(
                    *(self._tick_safely(session, key) for key in list(self._tracked))
                )
                delay = max(0.0, self.interval_s - (time.monotonic() - started))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), timeout=delay)

    async def _tick_safely(self, session: aiohttp.ClientSession, key: tuple[str, str]) -> None:
        try:
            await self.tick(session, key)
        except Exception:
            # The API server may be unreachable: hold (no write happened), try next tick.
            log.warning("autoscaler tick for %s/%s failed", *key, exc_info=True)

    async def tick(self, session: aiohttp.ClientSession, key: tuple[str, str]) -> None:
        tracked = self._tracked.get(key)
        if tracked is None:
            return
        ns, name = key
        owner = builders.Owner(name=name, namespace=ns, uid="")
        deployment_name = builders.child_name(owner)
        # Both from the watch-fed store: no API read per service per tick. Only a store miss
        # (before the start-up listing, or a Deployment never seen) reads the API, off the loop.
        known, deployment = STORE.lookup("Deployment", ns, deployment_name)
        if not known:
            deployment = await asyncio.to_thread(
                kube.cached_get, "apps/v1", "Deployment", ns, deployment_name
            )
        if STORE.pods_primed:
            pods = STORE.pods(ns, name)
        else:
            pods = await asyncio.to_thread(kube.cached_pods, ns, name)
        if deployment is None:
            return  # the reconciler has not created the Deployment yet
        current = int((deployment.get("spec") or {}).get("replicas") or 0)
        census = classify_pods(pods)
        ready = census.ready
        runtime_name = (tracked.isvc.get("status") or {}).get("runtime") or ""
        runtime = (await asyncio.to_thread(catalogue.runtimes)).get(runtime_name)
        port = runtime.ports.metrics if runtime else 8002
        names = metric_names(runtime)
        texts = await scrape.scrape_all(
            session, {p: (ip, port) for p, ip in ready.items()}, timeout_s=self.scrape_timeout_s
        )
        if self._tracked.get(key) is not tracked:
            # Forgotten while this tick awaited: reporting now would bring back the series
            # forget() removed. Nothing below awaits until the metrics are reported.
            return
        now = self.clock()
        pod_signals: list[signals.PodSignals] = []
        for pod, text in texts.items():
            if text is None:
                telemetry.SCRAPE_FAILURES.labels(namespace=ns, inferenceservice=name).inc()
                continue
            try:
                raw = metrics.parse_metrics(text, names=names)
            except ValueError:
                telemetry.SCRAPE_FAILURES.labels(namespace=ns, inferenceservice=name).inc()
                continue
            prev = tracked.previous.get(pod)
            pod_signals.append(
                metrics.pod_signals(
                    pod=pod,
                    previous=prev[0] if prev else None,
                    previous_time=prev[1] if prev else None,
                    current=raw,
                    current_time=now,
                )
            )
            tracked.previous[pod] = (raw, now)
        for gone in set(tracked.previous) - set(ready):
            tracked.previous.pop(gone, None)
        sample = signals.aggregate(pods=pod_signals, ready_replicas=len(ready), now=now)
        if sample is not None:
            tracked.window.record(sample=sample)
        tracked.window.prune(now=now)
        learned = cold_start.learn(pairs=census.cold_starts, previous_s=tracked.state.cold_start_s)
        st = dataclasses.replace(tracked.state, cold_start_s=learned)
        result = decide.decide(
            policy=tracked.policy,
            window=tracked.window,
            state=st,
            now=now,
            replicas=decide.Replicas(
                current=current,
                ready=len(ready),
                starting=census.starting,
                unschedulable=census.unschedulable,
                # Pods the Deployment controller has yet to create are not placed either.
                placing=census.unplaced + max(0, current - census.live),
            ),
            scraped=sample is not None,
        )
        tracked.state = result.state
        self._report_metrics(tracked, result, sample)
        record = result.record(now=now)
        news = memory.is_news(tracked.history, record)
        acting = tracked.spec.scaling.mode is api.ScalingMode.AUTO
        if acting and result.changed:
            await asyncio.to_thread(kube.set_scale, ns, deployment_name, result.desired)
            verb = "ScaledUp" if result.desired > current else "ScaledDown"
            await asyncio.to_thread(
                kube.emit_event,
                tracked.isvc,
                type_="Normal",
                reason=verb,
                message=f"{current} -> {result.desired} replicas ({result.reason.value}): "
                f"{result.message}",
            )
        if news:
            tracked.history = memory.append_history(tracked.history, record)
        if (
            news
            or tracked.last_desired != result.desired
            or (sample is not None and now - tracked.last_persist > PERSIST_EVERY_S)
        ):
            await asyncio.to_thread(self._write_status, tracked, result, sample, now)
            tracked.last_persist = now
            tracked.last_desired = result.desired

    @staticmethod
    def _report_metrics(
        tracked: Tracked, result: decide.ScaleResult, sample: signals.TickSample | None
    ) -> None:
        labels = {"namespace": tracked.namespace, "inferenceservice": tracked.name}
        telemetry.SCALER_DESIRED.labels(**labels).set(result.desired)
        telemetry.SCALER_DECISIONS.labels(**labels, reason=result.reason.value).inc()
        for key, value in _numeric(result.inputs.to_dict()).items():
            telemetry.SCALER_SIGNAL.labels(**labels, signal=key).set(value)

    def _write_status(
        self,
        tracked: Tracked,
        result: decide.ScaleResult,
        sample: signals.TickSample | None,
        now: float,
    ) -> None:
        last_scale = tracked.state.last_scale_time
        saved = {
            "state": tracked.state.to_dict(),
            "window": tracked.window.to_dict(),
            "history": [r.to_dict() for r in tracked.history],
        }
        body: dict[str, Any] = {
            "desiredReplicas": result.desired,
            "signals": _numeric(result.inputs.to_dict()),
            "coldStartSeconds": tracked.state.cold_start_s,
            "lastScaleTime": _iso(last_scale) if last_scale else None,
            "decisions": [
                {
                    "time": _iso(r.time),
                    "desired": r.desired,
                    "current": r.current,
                    "reason": r.reason,
                    "message": r.message,
                    "clamps": list(r.clamps),
                    "inputs": _numeric(r.inputs),
                }
                for r in tracked.history
            ],
            "state": json.dumps(saved, separators=(",", ":")),
        }
        if len(body["state"]) > 16000:  # keep the window's newest part only
            saved["window"] = window.SignalWindow.for_policy(tracked.policy).to_dict()
            body["state"] = json.dumps(saved, separators=(",", ":"))
        kube.patch_status(
            api.API_VERSION,
            "InferenceService",
            tracked.namespace,
            tracked.name,
            {"autoscaler": body},
        )
