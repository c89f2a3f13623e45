"""Start and stop: kopf's settings, the store's first listing, the work queue, the autoscaler
and the resync.

Only event handlers and this startup task are used: no kopf change handlers, daemons or
finalizers, so kopf itself never writes annotations, status or finalizers to user objects and
a restarted operator makes no writes to objects that are already right.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import kopf

from kubeinfer.engines import autoscaler, canary, workqueue
from kubeinfer.handlers import events, resync, state

log = logging.getLogger("kubeinfer")


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf builds a deep-copied "essence" of every body on every event to diff it for change
    handlers. kubeinfer has none (event handlers only), so the essence is never used, and at
    N=500 building it was a sixth of the operator's CPU, all on the event loop."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # The API server may blink (tests restart it); reconnect quickly rather than back off long.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.error_backoffs = [1, 2, 5, 10]
    settings.execution.max_workers = 32
    # kopf would otherwise post its own Events for handler errors; ours carry the real reason.
    settings.posting.level = logging.WARNING
    settings.persistence.diffbase_storage = NoDiffBase()
    # kopf runs one worker per object while its events flow, and an idle worker holds its
    # last event's body (a pod whole, managedFields included: ~40 KB decoded) until it
    # exits. Our handlers take what they need at once (the store keeps a slim copy), so a
    # worker has no reason to outlive its last event by kopf's default 5 s: at N=500 that
    # kept hundreds of bodies alive through a burst. Events a second apart start a worker
    # again, a task and a queue.
    settings.queueing.idle_timeout = 1.0
    shared = state.of(memo)
    try:
        await asyncio.to_thread(resync.relist, shared.config.namespaces)
    except Exception:
        # Reads fall back to the API until the resync lists successfully.
        log.warning("could not prime the store; reading from the API until the next resync")
    shared.queue = workqueue.WorkQueue(
        functools.partial(events.work, shared), workers=state.WORKERS
    )
    shared.queue.start()
    shared.engine = autoscaler.Autoscaler()
    loop = asyncio.get_running_loop()
    shared.keep(loop.create_task(shared.engine.run()))
    shared.canary_engine = canary.CanaryEngine()
    shared.keep(loop.create_task(shared.canary_engine.run()))
    shared.keep(loop.create_task(resync.forever(shared)))


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    shared = state.of(memo)
    if shared.engine is not None:
        shared.engine.stop()
    if shared.canary_engine is not None:
        shared.canary_engine.stop()
    if shared.queue is not None:
        await asyncio.to_thread(shared.queue.stop)
    for task in shared.tasks:
        task.cancel()
