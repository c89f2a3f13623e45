"""reloading: one apply path for a changed router.yaml, whichever source delivers it (the
ConfigMap watch or the mounted file), a bad document refused with the previous one kept, and
the file ignored while the watch is live. The proxy and table are real, in-process; the
ConfigMap watch against the API server is in test_router_configmap.py."""

from __future__ import annotations

import os
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kubeinfer_router import cli, config, proxy, reloading, table, telemetry

TWO = "variants: [{name: stable, weight: 90}, {name: canary, weight: 10}]\n"


def document(stable: int, canary: int) -> str:
    return f"variants: [{{name: stable, weight: {stable}}}, {{name: canary, weight: {canary}}}]\n"


@pytest.fixture
async def running(tmp_path: pathlib.Path) -> AsyncIterator[tuple[reloading.Reloader, proxy.Proxy]]:
    path = tmp_path / "router.yaml"
    path.write_text(TWO)
    args = cli.parse_args([f"--config={path}"])
    cfg = cli.load_config(args)
    endpoints = table.Table(v.name for v in cfg.variants)
    router = proxy.Proxy(cfg=cfg, endpoints=endpoints, stats=telemetry.Telemetry(), wake=None)
    reloader = reloading.Reloader(
        text=TWO,
        load=lambda text: cli.load_config(args, text),
        router=router,
        endpoints=endpoints,
        finder=None,
    )
    yield reloader, router
    await router.close()


async def test_a_changed_document_applies_weights_once(
    running: tuple[reloading.Reloader, proxy.Proxy],
) -> None:
    reloader, router = running
    assert not reloader.apply(TWO, source="configmap")  # what it started on
    assert reloader.apply(document(75, 25), source="configmap")
    assert router.splitter.weights == {"stable": 75, "canary": 25}
    # The kubelet's copy of the same document, a minute later: nothing to do.
    assert not reloader.apply(document(75, 25), source="file")
    assert reloader.applied == 1


@pytest.mark.parametrize(
    "bad",
    [
        "variants: [{name: stable, weight: -1}]\n",  # invalid
        "variants: [{name: stable\n",  # not YAML
        "- a list\n",  # not a mapping
    ],
)
async def test_a_bad_document_is_refused_and_the_previous_one_kept(
    running: tuple[reloading.Reloader, proxy.Proxy], bad: str
) -> None:
    reloader, router = running
    assert not reloader.apply(bad, source="configmap")
    assert router.splitter.weights == {"stable": 90, "canary": 10}
    assert reloader.apply(document(50, 50), source="configmap")  # a fix applies
    assert router.splitter.weights == {"stable": 50, "canary": 50}


async def test_flags_still_win_over_a_watched_document(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(TWO)
    args = cli.parse_args([f"--config={path}", "--max-queued=7"])
    cfg = cli.load_config(args, "maxQueued: 100\n" + document(0, 100))
    assert cfg.max_queued == 7
    assert [v.weight for v in cfg.variants] == [0, 100]


async def test_the_file_applies_only_while_the_watch_is_not_live(
    running: tuple[reloading.Reloader, proxy.Proxy], tmp_path: pathlib.Path
) -> None:
    reloader, router = running
    path = tmp_path / "router.yaml"
    live = [True]
    poll = reloading.FilePoll(path=path, reloader=reloader, watching=lambda: live[0])
    assert not poll.check()  # unchanged since start-up
    # The watch applied 50/50; the kubelet then writes an older document (its cache lags
    # the API): not read, so the newer step stands.
    assert reloader.apply(document(50, 50), source="configmap")
    rewrite(path, document(75, 25))
    assert not poll.check()
    assert router.splitter.weights == {"stable": 50, "canary": 50}
    # With the watch down the file is the source again: its next change applies.
    live[0] = False
    rewrite(path, document(25, 75))
    assert poll.check()
    assert router.splitter.weights == {"stable": 25, "canary": 75}
    assert reloader.applied == 2


def rewrite(path: pathlib.Path, text: str) -> None:
    # A later mtime whatever the file system's timestamp granularity (writes within one
    # clock tick can share one).
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


@pytest.mark.parametrize(
    ("listing", "expected"),
    [
        ([], None),  # not there (yet): keep what runs
        ([{"metadata": {"name": "m-router"}, "data": {"router.yaml": TWO}}], TWO),
        ([{"metadata": {"name": "m-router"}, "data": {"other.yaml": TWO}}], None),
        ([{"metadata": {"name": "m-router"}}], None),  # no data at all
        ([{"metadata": {"name": "x"}, "data": {"router.yaml": TWO}}], None),
    ],
)
def test_the_document_is_the_key_named_like_the_file(
    listing: list[dict[str, Any]], expected: str | None
) -> None:
    assert reloading.document_text(listing, name="m-router", key="router.yaml") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("m-router", ("default", "m-router")), ("ns/m-router", ("ns", "m-router"))],
)
def test_a_configmap_reference(text: str, expected: tuple[str, str]) -> None:
    assert reloading.parse_reference(text, namespace="default") == expected


@pytest.mark.parametrize("text", ["", "ns/", "/m", "a/b/c"])
def test_a_bad_configmap_reference_is_refused(text: str) -> None:
    with pytest.raises(config.ConfigError, match="--configmap"):
        reloading.parse_reference(text, namespace="default")


def test_a_configmap_needs_the_config_file() -> None:
    assert cli.main(["--endpoint=127.0.0.9:1", "--configmap=ns/m-router"]) == 2
