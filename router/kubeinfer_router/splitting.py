"""The canary split: which variant (stable, canary, ...) serves the next request. Pure: no I/O.

Owns smooth weighted round-robin (nginx's algorithm): deterministic, so a 90/10 split is 9 of
every 10 requests exactly, not 10 % on average with a random spread, and it does not depend on
how many replicas each variant has (one canary pod gets its full share). A variant without a
routable endpoint is skipped and its share goes to the others; when no weighted variant can
serve, any variant that can serve does (a rollback target at weight 0 still beats an error).
"""

from __future__ import annotations

from collections.abc import Container, Mapping


class Splitter:
    def __init__(self, weights: Mapping[str, int]) -> None:
        self._weights: dict[str, int] = {}
        self._current: dict[str, int] = {}
        self.set_weights(weights)

    @property
    def weights(self) -> dict[str, int]:
        return dict(self._weights)

    def set_weights(self, weights: Mapping[str, int]) -> None:
        """New weights (a promotion step, a rollback); a changed split starts afresh."""
        if dict(weights) != self._weights:
            self._weights = dict(weights)
            self._current = dict.fromkeys(self._weights, 0)

    def choose(self, available: Container[str]) -> str | None:
        """The next variant among `available`; None when none of the known ones is."""
        total = 0
        best: str | None = None
        current = self._current
        for name, weight in self._weights.items():
            if weight <= 0 or name not in available:
                continue
            current[name] += weight
            total += weight
            if best is None or current[name] > current[best]:
                best = name
        if best is not None:
            current[best] -= total
            return best
        for name in self._weights:
            if name in available:
                return name
        return None
