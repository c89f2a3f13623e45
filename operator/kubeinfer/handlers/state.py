"""What the handlers share while the operator runs, carried in kopf's memo (never globals).

Owns: the operator's configuration, the InferenceServices known to exist, the autoscaler
engine, the background tasks, and the child-event debounce (which services have a refresh
pending, and the small thread pool those refreshes run on).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
from typing import Any

import kopf

from kubeinfer.core.config import OperatorConfig
from kubeinfer.engines import autoscaler

Key = tuple[str, str]


@dataclasses.dataclass
class OperatorState:
    config: OperatorConfig
    known: set[Key] = dataclasses.field(default_factory=set)
    engine: autoscaler.Autoscaler | None = None
    tasks: list[asyncio.Task[Any]] = dataclasses.field(default_factory=list)
    # Owners with a debounced refresh waiting, and where those refreshes run: their own pool,
    # so a burst of pod events never starves the creates and spec changes on kopf's.
    pending: set[Key] = dataclasses.field(default_factory=set)
    refresh_pool: concurrent.futures.ThreadPoolExecutor = dataclasses.field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(
            max_workers=8, thread_name_prefix="refresh"
        )
    )

    def keep(self, task: asyncio.Task[Any]) -> None:
        self.tasks.append(task)
        self.tasks[:] = [t for t in self.tasks if not t.done()]


def of(memo: kopf.Memo) -> OperatorState:
    state: OperatorState = memo["operator"]
    return state
