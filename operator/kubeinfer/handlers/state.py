"""What the handlers share while the operator runs, carried in kopf's memo (never globals).

Owns: the operator's configuration, the InferenceServices known to exist, the autoscaler and
canary engines, the work queue every reconcile runs through, the background tasks, and the
child-event debounce (which services have a refresh pending).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import kopf

from kubeinfer.core import api
from kubeinfer.core.config import OperatorConfig
from kubeinfer.engines import autoscaler, canary, workqueue

# Reconciles in flight at once. They spend most of their time waiting on the API server, but
# every one also holds a connection and a thread: 16 keeps 2 cores busy without a pile-up
# (kopf alone ran one per object, 500 at once at N=500).
WORKERS = 16


@dataclasses.dataclass
class OperatorState:
    config: OperatorConfig
    known: set[api.ServiceKey] = dataclasses.field(default_factory=set)
    engine: autoscaler.Autoscaler | None = None
    canary_engine: canary.CanaryEngine | None = None
    tasks: list[asyncio.Task[Any]] = dataclasses.field(default_factory=list)
    # Set at start-up (it needs the reconcile function, which the handlers hand it).
    queue: workqueue.WorkQueue | None = None
    # Owners with a debounced refresh waiting: a pod start is 3-4 events but one refresh.
    pending: set[api.ServiceKey] = dataclasses.field(default_factory=set)

    def keep(self, task: asyncio.Task[Any]) -> None:
        self.tasks.append(task)
        self.tasks[:] = [t for t in self.tasks if not t.done()]


def of(memo: kopf.Memo) -> OperatorState:
    state: OperatorState = memo["operator"]
    return state
