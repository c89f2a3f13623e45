"""Bounded exponential backoff around one operation that may fail transiently.

Owns: which errors are retried (only ``TransientError``), the delay schedule, and the message
when attempts run out. ``sleep`` is injected so tests and callers decide how time passes.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from kubeinfer.storage import errors

T = TypeVar("T")

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` in total (first try included); delays double from ``base_delay``."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("a retry policy needs at least one attempt")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("retry delays must not be negative")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


def call_with_retries(
    operation: Callable[[], T],
    *,
    policy: RetryPolicy,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``operation``; retry it on ``TransientError`` up to ``policy.attempts`` in all.

    Everything else (missing object, bad credentials, checksum mismatch) fails at once: a
    retry cannot fix it and would only delay the error the user needs to see.
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            return operation()
        except errors.TransientError as err:
            if attempt == policy.attempts:
                raise errors.TransientError(
                    f"{what}: gave up after {policy.attempts} attempts: {err}"
                ) from err
            delay = policy.delay(attempt)
            logger.warning(
                "%s: attempt %d/%d failed (%s); retrying in %.2fs",
                what,
                attempt,
                policy.attempts,
                err,
                delay,
            )
            sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")
