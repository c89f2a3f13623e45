"""The canary loop: every analysis interval, read the router's per-variant metrics, judge, and
write status.canary. Time and I/O meet here; the decision is ``core.canary.decide``.

Owns: per service, the previous snapshot of the router's counters (a window is the difference
between two; in memory: after an operator restart the first interval is a baseline only) and
when it was taken. Observe (``clients.scrape.router_pages``, the scrape the autoscaler uses for
scale to zero) -> decide (pure) -> act (one status patch and its Events).

What it must not do: write the router's ConfigMap or the canary Deployment. status.canary is
its one field; the patch is news for the reconciler, which renders the weights into router.yaml
and the canary's replicas from it, so each of those has one writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pydantic

from kubeinfer.clients import kube, scrape
from kubeinfer.core import analysis, api, canary, metrics, router
from kubeinfer.core.scaling import decide as scaling_decide

log = logging.getLogger("kubeinfer.canary")

_EMPTY = analysis.Snapshot(successes=0, errors=0, bounds=(), buckets=())


@dataclasses.dataclass
class Tracked:
    isvc: dict[str, Any]
    spec: api.CanarySpec
    revision: str = ""
    # Per router pod, per variant: the counters at the last check.
    baseline: dict[str, dict[str, analysis.Snapshot]] | None = None
    baseline_time: float | None = None


class CanaryEngine:
    def __init__(
        self,
        *,
        tick_s: float = 1.0,
        scrape_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tick_s = tick_s
        self.scrape_timeout_s = scrape_timeout_s
        self.clock = clock
        self._tracked: dict[api.ServiceKey, Tracked] = {}
        # Services whose spec.canary is gone while status.canary remains: it is ours to clear.
        self._clear: dict[api.ServiceKey, dict[str, Any]] = {}
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
        if spec.canary is None or not spec.router.enabled or spec.stopped:
            self.forget(key)
            if spec.canary is None and (isvc.get("status") or {}).get("canary") is not None:
                self._clear[key] = isvc
            return
        self._clear.pop(key, None)
        current = self._tracked.get(key)
        if current is None:
            self._tracked[key] = Tracked(isvc=isvc, spec=spec.canary)
        else:
            current.isvc, current.spec = isvc, spec.canary

    def forget(self, key: api.ServiceKey) -> None:
        self._tracked.pop(key, None)
        self._clear.pop(key, None)

    def stop(self) -> None:
        self._stopped.set()

    # ---- the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while not self._stopped.is_set():
                await asyncio.gather(
                    *(self._tick_safely(session, k) for k in list(self._tracked)),
                    *(self._clear_safely(k) for k in list(self._clear)),
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), timeout=self.tick_s)

    async def _tick_safely(self, session: aiohttp.ClientSession, key: api.ServiceKey) -> None:
        try:
            await self.tick(session, key)
        except Exception:
            # The API server or the router may be unreachable: nothing written, next tick.
            log.warning("canary tick for %s/%s failed", *key, exc_info=True)

    async def _clear_safely(self, key: api.ServiceKey) -> None:
        isvc = self._clear.pop(key, None)
        if isvc is None:
            return
        try:
            # null deletes the key in a merge patch; news: the reconciler drops the condition.
            await asyncio.to_thread(
                kube.patch_status,
                api.API_VERSION,
                "InferenceService",
                *key,
                {"canary": None},
                news=True,
            )
        except Exception:
            log.warning("clearing status.canary of %s/%s failed", *key, exc_info=True)
            self._clear.setdefault(key, isvc)

    async def tick(self, session: aiohttp.ClientSession, key: api.ServiceKey) -> None:
        tracked = self._tracked.get(key)
        if tracked is None:
            return
        recorded = (tracked.isvc.get("status") or {}).get("canary")
        state = canary.current(tracked.spec, recorded)
        if state.revision != tracked.revision:
            # Another spec.canary: its windows start now, not from the previous canary's.
            tracked.revision, tracked.baseline, tracked.baseline_time = state.revision, None, None
        if recorded is None or recorded.get("revision") != state.revision:
            await asyncio.to_thread(self._write, tracked, canary.Decision(state=state), news=True)
        now = self.clock()
        if tracked.baseline is not None and not canary.due(
            state, tracked.spec, now, tracked.baseline_time
        ):
            return
        if state.phase is not api.CanaryPhase.PROGRESSING:
            return
        # Observe.
        pages = await scrape.router_pages(
            session, namespace=key[0], name=key[1], timeout_s=self.scrape_timeout_s
        )
        if pages is None:
            return
        try:
            snaps = {pod: metrics.parse_router_variants([text]) for pod, text in pages.items()}
        except ValueError:
            return
        before, tracked.baseline, tracked.baseline_time = tracked.baseline, snaps, now
        if before is None:
            return  # the first page is a baseline: a window needs two
        # Decide. A window per router pod (a new pod counts from its start; one that restarted
        # from its restart), summed: more than one router, or a router rollout, reads right.
        windows = {
            v: analysis.window_of(
                [
                    analysis.delta(before.get(pod, {}).get(v, _EMPTY), snap.get(v, _EMPTY))
                    for pod, snap in snaps.items()
                ]
            )
            for v in (router.VARIANT_STABLE, router.VARIANT_CANARY)
        }
        decision = canary.decide(
            state=state,
            spec=tracked.spec,
            stable=windows[router.VARIANT_STABLE],
            canary=windows[router.VARIANT_CANARY],
            now=scaling_decide.iso(now),
        )
        # Act.
        if decision.state != state:
            await asyncio.to_thread(self._write, tracked, decision, news=True)

    @staticmethod
    def _write(tracked: Tracked, decision: canary.Decision, *, news: bool) -> None:
        meta = tracked.isvc["metadata"]
        body = decision.state.model_dump(by_alias=True, exclude_none=False, mode="json")
        result = kube.patch_status(
            api.API_VERSION,
            "InferenceService",
            meta["namespace"],
            meta["name"],
            {"canary": body},
            # The reconciler renders the new weight into router.yaml and the canary's
            # replicas, and turns the phase into the CanaryRolledBack condition.
            news=news,
        )
        tracked.isvc = result
        for event in decision.events:
            kube.emit_event(
                tracked.isvc, type_=event.type, reason=event.reason, message=event.message
            )
