"""The autoscaler loop: every tick, for each tracked InferenceService, observe -> step -> act.

Owns: time and I/O for scaling. ``observe`` reads the service's Deployment and pods from the
watch-fed store and scrapes the Ready pods' /metrics (concurrently, with a timeout), turning
them into an ``Observation``; ``core.scaling.step.step`` (pure, ``now`` passed in) decides;
``core.scale_in.plan`` (pure) picks the pods a scale-in removes from the same scrape; ``act``
writes the result: first those pods' marks (pod-deletion-cost and the router's draining
annotation, server-side applied), then the Deployment's scale subresource (both as field
manager ``kubeinfer-autoscaler``), an Event, the operator's metrics, and status.autoscaler,
which also records where the pods' models compute (``executionProviders``, read off the same
scrape; the reconciler turns it into the GPUInUse condition, so each status field keeps one
writer). The step's memory (window, last scale time, learned cold start, the demand's burst
history and its history by time of period) is persisted in status.autoscaler.state and the
decision history in status.autoscaler.decisions, so an operator restart neither forgets a
burst nor scales down on a fresh, empty window, nor drops the burst headroom, the calm target
or a period's forecast. A new
service's first ticks, before a replica is Ready and has answered more than a baseline scrape,
write nothing: status.autoscaler starts with the first decision made on something
(``step.nothing_to_record``). A service
whose scaling is Off gets no tick, only a pass that clears the marks it left on its pods in Auto.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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
from kubeinfer.core import api, builders, census, metrics, scale_in, status
from kubeinfer.core.scaling import burst, decide, policy, season, signals, step, window
from kubeinfer.core.scaling import state as memory_

log = logging.getLogger("kubeinfer.autoscaler")
PERSIST_EVERY_S = 30.0
# How long a new service's first provider report may wait for a decision made on data, so
# that both go in one status write (a pod's first scrape reports the provider but is only the
# baseline that counter deltas start from; the next tick, 2 s later, decides on data).
PROVIDERS_WAIT_S = 10.0
# Window buckets kept in status (merged in runs when the window is longer): about 10 KB.
PERSISTED_BUCKETS = 90


@dataclasses.dataclass
class Tracked:
    namespace: str
    name: str
    isvc: dict[str, Any]
    spec: api.InferenceServiceSpec
    policy: policy.ScalingPolicy
    memory: step.Memory
    history: tuple[api.DecisionRecord, ...] = ()
    # Each pod's last scrape, for counter deltas; not persisted (a restart starts afresh).
    baselines: metrics.Baselines = dataclasses.field(default_factory=metrics.Baselines)
    last_persist: float = 0.0
    last_desired: int | None = None
    # Each Ready pod's execution provider from its last scrape, and the summary last written.
    providers: dict[str, str] = dataclasses.field(default_factory=dict)
    written_providers: list[api.ProviderUse] = dataclasses.field(default_factory=list)
    # When a provider summary not written yet was first held back (see PROVIDERS_WAIT_S).
    providers_held_since: float | None = None
    # Pods whose scale-in marks the API server refused (name -> why): backed off while they
    # live (core.scale_in.plan), not written again each tick to be refused again.
    refused: dict[str, str] = dataclasses.field(default_factory=dict)


def restore(
    isvc: dict[str, Any], pol: policy.ScalingPolicy
) -> tuple[step.Memory, tuple[api.DecisionRecord, ...]]:
    """The step's memory and the decision history from status; fresh ones when unreadable."""
    auto = (isvc.get("status") or {}).get("autoscaler") or {}
    try:
        history = tuple(api.DecisionRecord.model_validate(d) for d in auto.get("decisions", []))
    except pydantic.ValidationError:
        history = ()
    try:
        saved = json.loads(auto.get("state") or "{}")
        win = window.SignalWindow.from_dict(saved["window"]) if "window" in saved else None
        memory = step.Memory(
            state=memory_.ScalerState.from_dict(saved.get("state", {})),
            window=win if win is not None else window.SignalWindow.for_policy(pol),
            burst=burst.BurstHistory.from_dict(saved.get("burst", {})),
            season=season.SeasonalHistory.from_dict(saved.get("season", {})),
        )
    except (ValueError, KeyError, TypeError):
        memory = step.Memory.fresh(pol)
    if memory.window.length_s != pol.stable_window_s:
        memory = dataclasses.replace(memory, window=window.SignalWindow.for_policy(pol))
    return memory, history


def persisted_state(memory: step.Memory) -> str:
    """The step's memory as status.autoscaler.state, within ``api.STATE_MAX_CHARS``.

    Whole when it fits (it does for every window the API allows, with a full burst history,
    a full period's forecast history and a short stabilization history); else what matters
    least after a restart goes first: the burst history (the headroom and calm target then
    relearn, as after a fresh start), then the window's resolution, then the window (a
    restart then holds on no data), then the period's history (a period to relearn). The
    scaler state itself always stays: it is what prevents a scale-down after a restart.
    """
    parts: dict[str, Any] = {"state": memory.state.to_dict()}
    tries = (
        (PERSISTED_BUCKETS, True, True),
        (PERSISTED_BUCKETS, False, True),
        (PERSISTED_BUCKETS // 3, False, True),
        (0, False, True),
        (0, False, False),
    )
    for buckets, with_burst, with_season in tries:
        parts.pop("window", None)
        parts.pop("burst", None)
        parts.pop("season", None)
        if buckets:
            parts["window"] = memory.window.to_dict(max_buckets=buckets)
        if with_burst:
            parts["burst"] = memory.burst.to_dict()
        if with_season:
            parts["season"] = memory.season.to_dict()
        saved = json.dumps(parts, separators=(",", ":"))
        if len(saved) <= api.STATE_MAX_CHARS:
            break
    return saved


@dataclasses.dataclass(frozen=True)
class Seen:
    """One tick's observation, and the service's live pods as the scale-in reads them."""

    observation: step.Observation
    pods: tuple[scale_in.PodView, ...]
    # Ready pods whose scrape failed this tick (no answer, or a page that did not parse).
    unanswered: int = 0


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
        self._tracked: dict[api.ServiceKey, Tracked] = {}
        # Services whose scaling is Off: no tick, but the scale-in marks left on their pods
        # from Auto must still go (``_plan_scale_in``). Each gets one clearing pass per round
        # after track() sees it Off, then leaves the set.
        self._unmark: set[api.ServiceKey] = set()
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
            if not spec.stopped:  # a stopped service's pods go, and their marks with them
                self._unmark.add(key)
            return
        self._unmark.discard(key)
        new_policy = policy.from_spec(spec.scaling)
        current = self._tracked.get(key)
        if current is not None:
            current.isvc, current.spec = isvc, spec
            if current.policy != new_policy:
                current.policy = new_policy
                # A new policy starts a new window (its length may differ); the demand's
                # burstiness is the load's, not the policy's, and stays.
                current.memory = dataclasses.replace(
                    current.memory, window=window.SignalWindow.for_policy(new_policy)
                )
            return
        memory, history = restore(isvc, new_policy)
        auto = (isvc.get("status") or {}).get("autoscaler") or {}
        # Seeded from status, so a restarted operator that decides what it decided before
        # writes nothing.
        self._tracked[key] = Tracked(
            namespace=key[0],
            name=key[1],
            isvc=isvc,
            spec=spec,
            policy=new_policy,
            memory=memory,
            history=history,
            last_desired=auto.get("desiredReplicas"),
            last_persist=self.clock() if auto else 0.0,
            written_providers=list(status.recorded_providers(isvc.get("status") or {})),
        )

    def forget(self, key: api.ServiceKey) -> None:
        self._unmark.discard(key)
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
                tracked.baselines.forget(pod["metadata"]["name"])

    def stop(self) -> None:
        self._stopped.set()

    # ---- the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while not self._stopped.is_set():
                started = time.monotonic()
                await self.tick_all(session)
                delay = max(0.0, self.interval_s - (time.monotonic() - started))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), timeout=delay)

    async def tick_all(self, session: aiohttp.ClientSession) -> None:
        """One round: a tick for each tracked service, a clearing pass for each one gone Off."""
        await asyncio.gather(
            *(self._tick_safely(session, key) for key in list(self._tracked)),
            *(self.unmark(key) for key in list(self._unmark)),
        )

    async def _tick_safely(self, session: aiohttp.ClientSession, key: api.ServiceKey) -> None:
        try:
            await self.tick(session, key)
        except Exception:
            # The API server may be unreachable: hold (no write happened), try next tick.
            log.warning("autoscaler tick for %s/%s failed", *key, exc_info=True)

    async def tick(self, session: aiohttp.ClientSession, key: api.ServiceKey) -> None:
        tracked = self._tracked.get(key)
        if tracked is None:
            return
        seen = await self.observe(session, tracked)
        if seen is None:
            return  # the reconciler has not created the Deployment yet
        if self._tracked.get(key) is not tracked:
            # Forgotten while this tick awaited: reporting now would bring back the series
            # forget() removed. act() reports the metrics before it awaits anything.
            return
        now = self.clock()
        out = step.step(tracked.policy, seen.observation, tracked.memory, now)
        tracked.memory = out.memory
        names = {p.name for p in seen.pods}
        tracked.refused = {n: why for n, why in tracked.refused.items() if n in names}
        marks = self._plan_scale_in(
            tracked.spec.scaling.mode, seen.pods, out.result, tracked.refused
        )
        await self.act(tracked, out, marks, now, unanswered=seen.unanswered)

    async def unmark(self, key: api.ServiceKey) -> None:
        """A service whose scaling is Off: clear the marks it left on its pods in Auto, from
        the store's pods (no scrape: nothing is decided), by the same rule as a tick's."""
        self._unmark.discard(key)  # a track() while this awaits adds it again
        try:
            if STORE.pods_primed:
                pods = STORE.pods(*key)
            else:
                pods = await asyncio.to_thread(kube.cached_pods, *key)
            views = tuple(scale_in.view(p, ready=False, load=None) for p in scale_in.live(pods))
            marks = self._plan_scale_in(api.ScalingMode.OFF, views, None)
            if marks is not None and marks.writes:
                await asyncio.to_thread(self._mark, *key, marks, {})
        except Exception:
            log.warning("clearing the scale-in marks of %s/%s failed", *key, exc_info=True)
            if key not in self._tracked:  # still Off: try again next round
                self._unmark.add(key)

    # ---- observe -------------------------------------------------------------------------
    async def observe(self, session: aiohttp.ClientSession, tracked: Tracked) -> Seen | None:
        ns, name = tracked.namespace, tracked.name
        deployment_name = builders.child_name(builders.Owner(name=name, namespace=ns, uid=""))
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
            return None
        current = int((deployment.get("spec") or {}).get("replicas") or 0)
        seen = census.classify_pods(pods, tracked.spec.gpu.resource_name)
        runtime_name = (tracked.isvc.get("status") or {}).get("runtime") or ""
        runtime = (await asyncio.to_thread(catalogue.runtimes)).get(runtime_name)
        port = runtime.ports.metrics if runtime else api.RuntimePorts().metrics
        names = runtime.metrics if runtime else metrics.TRITON
        texts = await scrape.scrape_all(
            session,
            {p: (ip, port) for p, ip in seen.ready.items()},
            timeout_s=self.scrape_timeout_s,
        )
        signals_, unanswered, first, queued = self._pod_signals(tracked, texts, names, self.clock())
        load = {s.pod: s.in_flight for s in signals_}
        views = tuple(
            scale_in.view(
                p,
                ready=p["metadata"]["name"] in seen.ready,
                load=load.get(p["metadata"]["name"]),
            )
            for p in scale_in.live(pods)
        )
        observation = step.Observation(
            replicas=decide.Replicas(
                current=current,
                ready=len(seen.ready),
                starting=seen.starting,
                unschedulable=seen.waiting_for_gpu,
                # Pods the Deployment controller has yet to create are not placed either.
                placing=seen.unplaced + max(0, current - seen.live),
            ),
            pods=signals_,
            first_scrapes=first,
            queued=queued,
            cold_starts=seen.cold_starts,
            router=await self._router_signals(session, tracked),
        )
        return Seen(observation=observation, pods=views, unanswered=unanswered)

    async def _router_signals(
        self, session: aiohttp.ClientSession, tracked: Tracked
    ) -> signals.RouterSignals | None:
        """The router's counters, for a service that may scale to zero (the demand that
        reaches it while it has no replica to report it); None when any Ready router pod
        did not answer, or none is Ready: no evidence of idleness."""
        if tracked.spec.scaling.min_replicas > 0 or not tracked.spec.router.enabled:
            return None
        pages = await scrape.router_pages(
            session,
            namespace=tracked.namespace,
            name=tracked.name,
            timeout_s=self.scrape_timeout_s,
        )
        if pages is None:
            return None
        try:
            return metrics.parse_router_metrics(list(pages.values()))
        except ValueError:
            return None

    @staticmethod
    def _pod_signals(
        tracked: Tracked,
        texts: dict[str, str | None],
        names: api.RuntimeMetricNames,
        now: float,
    ) -> tuple[list[signals.PodSignals], int, int, float | None]:
        """Parse each answer and turn it into signals against the pod's previous scrape; also
        how many pods gave no usable answer, how many answered for the first time, and the
        requests queued on them all (``metrics.queued``)."""
        labels = {"namespace": tracked.namespace, "inferenceservice": tracked.name}
        scrapes: dict[str, metrics.RawScrape | None] = {}
        for pod, text in texts.items():
            try:
                scrapes[pod] = metrics.parse_metrics(text, names=names) if text else None
            except ValueError:
                scrapes[pod] = None
            if scrapes[pod] is None:
                telemetry.SCRAPE_FAILURES.labels(**labels).inc()
        tracked.providers = metrics.pod_providers(tracked.providers, scrapes)
        failed = sum(1 for s in scrapes.values() if s is None)
        first = tracked.baselines.first_scrapes(scrapes)
        return tracked.baselines.signals(scrapes, now), failed, first, metrics.queued(scrapes)

    # ---- decide which pods go -------------------------------------------------------------
    @staticmethod
    def _plan_scale_in(
        mode: api.ScalingMode,
        pods: tuple[scale_in.PodView, ...],
        result: decide.ScaleResult | None,
        refused: dict[str, str] | None = None,
    ) -> scale_in.Plan | None:
        """The marks for this tick (None: leave them as they are). Only Auto mode marks; in
        any other mode (Recommend; Off, which decides nothing: ``result`` None) marks left
        from Auto are cleared: a pod left draining gets no work."""
        manager = kube.SCALER_MANAGER
        if mode is not api.ScalingMode.AUTO or result is None:
            return scale_in.plan(pods=pods, remove=0, manager=manager, refused=refused)
        remove = scale_in.removal(
            live=len(pods), current=result.inputs.current, desired=result.desired
        )
        if remove is None:
            return None
        return scale_in.plan(pods=pods, remove=remove, manager=manager, refused=refused)

    # ---- act -----------------------------------------------------------------------------
    async def act(
        self,
        tracked: Tracked,
        out: step.Step,
        marks: scale_in.Plan | None,
        now: float,
        *,
        unanswered: int = 0,
    ) -> None:
        result = out.result
        self._report_metrics(tracked, result)
        if marks is not None and marks.writes:
            # Before the scale: the ReplicaSet controller reads the costs when it scales.
            marks = await asyncio.to_thread(
                self._mark, tracked.namespace, tracked.name, marks, tracked.refused
            )
        scaling_in = result.desired < result.inputs.current
        note = marks.summary if marks is not None and scaling_in else ""
        if tracked.spec.scaling.mode is api.ScalingMode.AUTO and result.changed:
            await asyncio.to_thread(self._scale, tracked, result, note)
        providers = metrics.provider_use(tracked.providers)
        recorded = tracked.last_desired is not None or bool(tracked.history)
        if step.nothing_to_record(
            result, recorded=recorded, unanswered=unanswered
        ) and self._hold_providers(tracked, providers, now):
            # A new service coming up: status.autoscaler is first written with the first
            # decision made on something (data, a Ready replica's failed scrape, a move),
            # and where its pods compute rides with it: one write per create, not two.
            return
        record = result.record(now=now)
        if note:
            record = record.model_copy(update={"message": f"{record.message} {note}"})
        news = memory_.is_news(tracked.history, record)
        if news:
            tracked.history = memory_.append_history(tracked.history, record)
        if (
            news
            or tracked.last_desired != result.desired
            or providers != tracked.written_providers
            or (out.sample is not None and now - tracked.last_persist > PERSIST_EVERY_S)
        ):
            await asyncio.to_thread(
                self._write_status,
                tracked,
                result,
                providers,
                # The reconciler turns providers into GPUInUse: that write must reach it.
                providers != tracked.written_providers,
            )
            tracked.last_persist = now
            tracked.last_desired = result.desired
            tracked.written_providers = providers

    @staticmethod
    def _hold_providers(tracked: Tracked, providers: list[api.ProviderUse], now: float) -> bool:
        """Whether a first write may wait: nothing new about providers, or new ones first
        seen under PROVIDERS_WAIT_S ago (the first scrape reports them, the next tick decides
        on data; GPUInUse may wait a tick, but never for good)."""
        if providers == tracked.written_providers:
            tracked.providers_held_since = None
            return True
        if tracked.providers_held_since is None:
            tracked.providers_held_since = now
        return now - tracked.providers_held_since < PROVIDERS_WAIT_S

    @staticmethod
    def _mark(
        namespace: str, name: str, marks: scale_in.Plan, refused: dict[str, str]
    ) -> scale_in.Plan:
        """Write the plan's marks. A refusal (409: another manager took the annotation since
        the store saw the pod; 422: an invalid value; a webhook's no) backs off: the pod goes
        into ``refused`` with the server's reason, and the plan returned says so."""
        for pod, wanted in marks.writes.items():
            try:
                kube.apply_marks(namespace, pod, dict(wanted), uid=marks.uids.get(pod, ""))
            except kube.Refused as exc:
                why = f"{exc.status} {exc.why}"
                log.warning("scale-in marks on %s/%s refused, backing off: %s", namespace, pod, why)
                refused[pod] = why
                return scale_in.refusal(plan=marks, pod=pod, why=why)
        if marks.outcome is scale_in.Outcome.CLEARED:
            log.info("%s/%s: %s", namespace, name, marks.summary)
        return marks

    @staticmethod
    def _scale(tracked: Tracked, result: decide.ScaleResult, note: str = "") -> None:
        current = result.inputs.current
        deployment = builders.child_name(
            builders.Owner(name=tracked.name, namespace=tracked.namespace, uid="")
        )
        kube.set_scale(tracked.namespace, deployment, result.desired)
        kube.emit_event(
            tracked.isvc,
            type_="Normal",
            reason="ScaledUp" if result.desired > current else "ScaledDown",
            message=f"{current} -> {result.desired} replicas ({result.reason.value}): "
            f"{result.message}{' ' + note if note else ''}",
        )

    @staticmethod
    def _report_metrics(tracked: Tracked, result: decide.ScaleResult) -> None:
        labels = {"namespace": tracked.namespace, "inferenceservice": tracked.name}
        telemetry.SCALER_DESIRED.labels(**labels).set(result.desired)
        telemetry.SCALER_DECISIONS.labels(**labels, reason=result.reason.value).inc()
        for key, value in decide.numeric(result.inputs.to_dict()).items():
            telemetry.SCALER_SIGNAL.labels(**labels, signal=key).set(value)

    @staticmethod
    def _write_status(
        tracked: Tracked,
        result: decide.ScaleResult,
        providers: list[api.ProviderUse],
        news: bool = False,
    ) -> None:
        last_scale = tracked.memory.state.last_scale_time
        body = api.AutoscalerStatus(
            desired_replicas=result.desired,
            signals=decide.numeric(result.inputs.to_dict()),
            cold_start_seconds=tracked.memory.state.cold_start_s,
            last_scale_time=decide.iso(last_scale) if last_scale else None,
            decisions=list(tracked.history),
            execution_providers=providers,
            state=persisted_state(tracked.memory),
        )
        kube.patch_status(
            api.API_VERSION,
            "InferenceService",
            tracked.namespace,
            tracked.name,
            {"autoscaler": body.model_dump(by_alias=True, exclude_none=False, mode="json")},
            news=news,
        )
