"""The order children are applied in: a new Deployment first, an existing ConfigMap first."""

from __future__ import annotations

from typing import Any

import pytest

from kubeinfer.reconcilers.inferenceservice import write_order


def manifest(kind: str, api_version: str = "v1") -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": "m"}}


CM, DEP, SVC = manifest("ConfigMap"), manifest("Deployment", "apps/v1"), manifest("Service")
LIVE = {"metadata": {"name": "m"}}


@pytest.mark.parametrize(
    ("live_kinds", "expected"),
    [
        # A create: the Deployment first; its pods wait for the ConfigMap volume.
        ((), ["Deployment", "ConfigMap", "Service"]),
        # A config change: new content before the rollout that reads it.
        (("ConfigMap", "Deployment", "Service"), ["ConfigMap", "Deployment", "Service"]),
        # The Deployment was deleted by hand: the ConfigMap is there, both go first.
        (("ConfigMap", "Service"), ["ConfigMap", "Deployment", "Service"]),
        # The ConfigMap was deleted by hand: the builders' order.
        (("Deployment", "Service"), ["ConfigMap", "Deployment", "Service"]),
    ],
)
def test_write_order(live_kinds: tuple[str, ...], expected: list[str]) -> None:
    live: dict[tuple[str, str, str], dict[str, Any] | None] = {
        (m["apiVersion"], m["kind"], "m"): (LIVE if m["kind"] in live_kinds else None)
        for m in (CM, DEP, SVC)
    }
    assert [m["kind"] for m in write_order([CM, DEP, SVC], live)] == expected
