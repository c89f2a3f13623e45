"""Fixtures for the images tier: the built images (built first when missing or stale) and a
runc state directory per session. runc that cannot run here fails the tier with its exact
error: nothing is skipped."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from kubeinfer_cluster import containers, hosttools, images
from tests.images.pods import Images


@pytest.fixture(scope="session")
def built() -> dict[str, images.Built]:
    """Every image, current with the sources (`make test-images` runs `make images` first, so
    this only checks; run alone, it builds)."""
    try:
        return {b.name: b for b in images.build_images()}
    except (images.ImageError, hosttools.HostToolError) as exc:
        problem = f"the images could not be built (see `make images`):\n{exc}"
    pytest.fail(problem, pytrace=False)


@pytest.fixture(scope="session")
def runc_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
    state = tmp_path_factory.mktemp("runc-state")
    problem = None
    try:
        containers.preflight(state)
    except containers.ContainerError as exc:
        problem = f"runc cannot run containers here: {exc}"
    if problem:
        pytest.fail(problem, pytrace=False)
    yield state
    containers.clean_state(state)


@pytest.fixture(scope="session")
def imageset(
    built: dict[str, images.Built],
    runc_state: pathlib.Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Images:
    images_ = Images(built=built, work=tmp_path_factory.mktemp("bundles"), state=runc_state)
    problem = None
    try:
        # One trivial container first: when runc cannot run here, every test would fail the
        # same way; this fails once, with runc's exact error and what to do.
        containers.smoke(images_.rootfs("operator"), images_.work, runc_state)
    except containers.ContainerError as exc:
        problem = str(exc)
    if problem:
        pytest.fail(problem, pytrace=False)
    return images_
