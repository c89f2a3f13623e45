"""Statistics of several worker processes summed as one server's (metrics.snapshot/merge,
workers.Peers over real Unix sockets), the latency histogram rendered by hand, and the flags
a server of several workers refuses."""

from __future__ import annotations

import asyncio
import json
import pathlib
import secrets

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kubeinfer_onnx import metrics, server, workers


def worker_stats(*, successes: int, pending: int, last_ms: int) -> metrics.ModelStats:
    stats = metrics.ModelStats(model="m", version="1", provider="CPUExecutionProvider")
    for _ in range(successes):
        stats.record_success(duration_ns=2_000_000)
    stats.record_failure(reason="REJECTED", duration_ns=10)
    stats.queue.add(500)
    stats.inference_count += successes
    stats.record_batch(rows=successes, input_ns=1, infer_ns=2, output_ns=3)
    stats.last_inference_ms = last_ms
    stats.pending = lambda: pending
    stats.running = lambda: 1
    return stats


def test_merge_sums_counters_and_gauges_and_keeps_the_latest_inference() -> None:
    first = worker_stats(successes=3, pending=2, last_ms=100)
    second = worker_stats(successes=5, pending=4, last_ms=300)
    other = metrics.ModelStats(model="n", version="2")
    # A peer's records arrive as JSON: merged exactly as this process's own.
    from_peer = json.loads(json.dumps([metrics.snapshot(second), metrics.snapshot(other)]))

    (total, only_there) = metrics.merge([[first], from_peer])

    assert (total.model, total.version, total.provider) == ("m", "1", "CPUExecutionProvider")
    assert (total.success.count, total.success.ns) == (8, 16_000_000)
    assert total.fail.count == 2 and total.failures["REJECTED"] == 2
    assert total.queue.ns == 1000
    assert (total.inference_count, total.execution_count) == (8, 2)
    assert total.last_inference_ms == 300
    assert sorted(total.batches) == [3, 5]
    assert total.batches[3].compute_output.ns == 3
    assert sum(total.latency.counts) == 8
    assert total.latency.sum_s == pytest.approx(0.016)
    assert (total.pending(), total.running()) == (6, 2)
    assert (only_there.model, only_there.version) == ("n", "2")


def test_latency_histogram_renders_cumulative_buckets_with_bounds_inclusive() -> None:
    stats = metrics.ModelStats(model="m", version="1")
    for seconds in (0.001, 0.0011, 20.0):  # On a bound, just past it, past the last bound.
        stats.record_success(duration_ns=int(seconds * 1e9))
    text = metrics.render_latency([stats])
    (family,) = text_string_to_metric_families(text)
    assert family.type == "histogram"
    samples = {
        (s.name, s.labels.get("le")): s.value for s in family.samples if s.labels["model"] == "m"
    }
    name = metrics.LATENCY
    assert samples[(name + "_bucket", "0.0005")] == 0
    assert samples[(name + "_bucket", "0.001")] == 1
    assert samples[(name + "_bucket", "0.002")] == 2
    assert samples[(name + "_bucket", "10.0")] == 2
    assert samples[(name + "_bucket", "+Inf")] == 3
    assert samples[(name + "_count", None)] == 3
    assert samples[(name + "_sum", None)] == pytest.approx(20.0021)


async def test_peers_gather_every_answering_siblings_records() -> None:
    registries = [metrics.Metrics(), metrics.Metrics()]
    registries[0].add_model(worker_stats(successes=1, pending=0, last_ms=1))
    registries[1].add_model(worker_stats(successes=2, pending=3, last_ms=2))
    # Three workers, the third still loading: it has no socket yet, so it is left out.
    token = secrets.token_hex(8)
    peers = [workers.Peers(token, index, 3) for index in (0, 1)]
    for peer, registry in zip(peers, registries, strict=True):
        await peer.start(registry)
    try:
        assert not peers[0].all_up(), "ready while a worker is still loading"
        for registry in registries:
            (total,) = await registry.collect()
            assert total.success.count == 3
            assert total.pending() == 3
        text = (await registries[1].scrape()).decode()
        assert 'nv_inference_request_success{model="m",version="1"} 3' in text
    finally:
        await asyncio.gather(*(peer.close() for peer in peers))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--workers", "2", "--http-port", "0"], "needs fixed ports: --http-port is 0"),
        (["--workers", "2", "--grpc-port", "0"], "needs fixed ports: --grpc-port is 0"),
    ],
)
def test_flags_a_server_of_several_workers_refuses(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture, flags: list[str], message: str
) -> None:
    assert server.main(["--model-repository", str(tmp_path), *flags]) == 2
    assert message in caplog.text


def test_auto_starts_two_workers_only_for_small_models_on_two_cpus_with_memory_to_spare() -> None:
    assert workers.default_count(cpus=2, on_device=False) == 2
    assert workers.default_count(cpus=16, on_device=False) == 2
    assert workers.default_count(cpus=1, on_device=False) == 1
    assert workers.default_count(cpus=8, on_device=True) == 1
    mib = 1 << 20
    small, big = workers.SMALL_MODELS_BYTES, workers.SMALL_MODELS_BYTES + 1
    assert workers.default_count(cpus=4, on_device=False, model_bytes=small) == 2
    assert workers.default_count(cpus=4, on_device=False, model_bytes=big) == 1
    enough, short = 64 * mib, 60 * mib
    assert (
        workers.default_count(cpus=4, on_device=False, model_bytes=small, memory_limit=enough) == 2
    )
    assert (
        workers.default_count(cpus=4, on_device=False, model_bytes=small, memory_limit=short) == 1
    )


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({"memory.max": "2147483648\n"}, 2 << 30),
        ({"memory.max": "max\n"}, None),
        ({"memory/memory.limit_in_bytes": "1073741824\n"}, 1 << 30),
        ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),  # v1: no limit
        ({}, None),
    ],
)
def test_the_memory_limit_read_from_cgroup_v2_or_v1(
    tmp_path: pathlib.Path, files: dict[str, str], limit: int | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert workers.cgroup_memory_limit(tmp_path) == limit


@pytest.mark.parametrize("text", ["0", "-1", "two"])
def test_a_worker_count_is_auto_or_positive(text: str) -> None:
    with pytest.raises(SystemExit):
        server.parse_args(["--model-repository", "/x", "--workers", text])
    assert server.parse_args(["--model-repository", "/x", "--workers", "3"]).workers == 3
    assert server.parse_args(["--model-repository", "/x"]).workers is None
