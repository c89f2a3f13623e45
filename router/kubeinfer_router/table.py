"""The live endpoint set, per variant: discovery writes it, the proxy reads it.

Owns the mapping from endpoint specs (from `inventory`) to the `picking.Endpoint` objects that
carry load state across updates: an endpoint that stays keeps its in-flight count and
service-time estimate; one that goes is dropped from the table while requests already sent
there finish against their own reference. It also keeps the per-variant lists the hot path
reads without filtering, and tells listeners when the set of variants that can serve changes
(the proxy flushes held requests then). No I/O and no asyncio: callers run it on the event
loop thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from kubeinfer_router import inventory, picking


class Table:
    def __init__(self, variants: Iterable[str]) -> None:
        self.by_variant: dict[str, dict[str, picking.Endpoint]] = {v: {} for v in variants}
        # The hot path's view: routable endpoints per variant, and the variants having any.
        self.routable: dict[str, list[picking.Endpoint]] = {v: [] for v in self.by_variant}
        self.available: frozenset[str] = frozenset()
        self.fleet_service: dict[str, float | None] = dict.fromkeys(self.by_variant)
        self.listeners: list[Callable[[frozenset[str]], None]] = []

    def set_variants(self, variants: Sequence[str]) -> None:
        """A reloaded config may add or drop variants; endpoints of kept ones stay."""
        self.by_variant = {v: self.by_variant.get(v, {}) for v in variants}
        self.fleet_service = {v: self.fleet_service.get(v) for v in variants}
        self._refresh()

    def reconcile(self, variant: str, specs: Iterable[inventory.EndpointSpec]) -> None:
        """Replace one variant's endpoints with `specs` (a full listing, not a delta)."""
        if variant not in self.by_variant:
            return
        current = self.by_variant[variant]
        updated: dict[str, picking.Endpoint] = {}
        for spec in specs:
            ep = current.get(spec.key)
            if ep is None or ep.host != spec.host or ep.port != spec.port:
                ep = picking.Endpoint(
                    key=spec.key,
                    host=spec.host,
                    port=spec.port,
                    metrics_port=spec.metrics_port,
                    variant=variant,
                    weight=spec.weight,
                )
            ep.metrics_port = spec.metrics_port
            ep.ready = spec.ready
            ep.draining = spec.draining
            ep.weight = spec.weight
            updated[spec.key] = ep
        self.by_variant[variant] = updated
        self._refresh()

    def _refresh(self) -> None:
        self.routable = {
            v: [e for e in eps.values() if e.ready and not e.draining]
            for v, eps in self.by_variant.items()
        }
        available = frozenset(v for v, eps in self.routable.items() if eps)
        changed = available != self.available
        self.available = available
        if changed:
            for listener in self.listeners:
                listener(available)

    def endpoints(self) -> list[picking.Endpoint]:
        return [e for eps in self.by_variant.values() for e in eps.values()]

    def tick(self, now: float, *, interval_s: float) -> None:
        """Once per scrape interval: forget old service samples and stale queue reports, and
        take each variant's median service time (the stand-in for pods not measured yet)."""
        for variant, eps in self.by_variant.items():
            for ep in eps.values():
                picking.roll_service(ep, now)
                picking.expire_queue(ep, now, interval_s=interval_s)
            self.fleet_service[variant] = picking.fleet_service(list(eps.values()))
