"""wait_for(): poll a check until it is truthy, for every test tier."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    check: Callable[[], Any],
    timeout: float = 60,
    what: str = "condition",
    every: float = 0.3,
    *,
    tolerate_errors: bool = False,
) -> Any:
    """The check's first truthy value; AssertionError naming ``what`` and the last value.

    ``tolerate_errors`` keeps polling through exceptions (an API server that is restarting)
    and reports the last one on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:
            if not tolerate_errors:
                raise
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last={last!r}")
