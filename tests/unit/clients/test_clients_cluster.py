"""The GPU census' listing: which pods it asks the API server for."""

from __future__ import annotations

from kubeinfer.clients import cluster
from kubeinfer.core import census


def test_the_census_listing_skips_the_pods_the_census_counts_as_finished() -> None:
    # One definition of a finished pod (core.census); the listing's field selector is built
    # from it, so the server-side filter and the in-memory one cannot drift apart.
    assert cluster._HOLDING == "status.phase!=Failed,status.phase!=Succeeded"
    assert {part.split("!=")[1] for part in cluster._HOLDING.split(",")} == census.FINISHED_PHASES
