"""Part g of bench/router: ten scale-ins under open-loop load, with and without the mark.

Real processes on loopback: three `mlp` servers behind the router (static discovery, a config
file it reloads), vegeta at a fixed rate. Each round removes one server and starts a fresh one
in its place, so every round scales in from three. Side by side in one run, on the same load:

  - kubeinfer: the least loaded server (the router's own in-flight + queued, as the
    autoscaler's choice reads the pods) is marked draining (what the pod-deletion-cost mark
    and `kubeinfer.io/draining` tell the router in a cluster), the router drains it, then it
    gets SIGTERM and leaves the list;
  - a Service as a plain Deployment runs it: the ReplicaSet's pick (the oldest server here),
    SIGTERM with no preStop and no drain delay, the endpoint gone from the list 1 s later (the
    EndpointSlice -> kube-proxy propagation), a random pick and no retry (kube-proxy retries
    nothing once a connection is open). A preStop sleep longer than the propagation closes
    most of that gap; the operator's pods have one (5 s), which is also what a real node gives
    the router to drain in.

Counted: failed requests (vegeta's, any non-200 or transport error), requests the router sent
to a server after it was marked, and how long the drain took.
"""

from __future__ import annotations

import json
import pathlib
import signal
import threading
import time
from typing import Any

import router_processes as rp

ROUNDS = 10
PROPAGATION_S = 1.0  # deletion -> endpoint gone from kube-proxy's list, a typical cluster's
INFER = "/v2/models/mlp/infer"
HEADERS = {"Content-Type": "application/json"}


def _document(servers: list[rp.OnnxServer], *, draining: str | None, baseline: bool) -> Any:
    doc: dict[str, Any] = {
        "discovery": {"mode": "static", "probe": True},
        "variants": [
            {
                "name": "stable",
                "endpoints": [
                    {
                        "address": f"{s.address}:{s.http_port}",
                        "metricsPort": s.metrics_port,
                        "draining": s.address == draining,
                    }
                    for s in servers
                ],
            }
        ],
    }
    if baseline:
        # kube-proxy: a random pick, no retry, and no health probing of its own: an endpoint
        # is in the list until the EndpointSlice says otherwise.
        doc |= {"policy": "random", "retries": 0}
        doc["discovery"]["probe"] = False
    return doc


def _write(path: pathlib.Path, doc: Any) -> None:
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(doc))
    scratch.replace(path)


def _endpoint(router: rp.Router, address: str) -> dict[str, Any] | None:
    for e in router.endpoints()["endpoints"]:
        if f"//{address}:" in e["url"]:
            found: dict[str, Any] = e
            return found
    return None


def run_side(stack: Any, vegeta: Any, *, label: str, baseline: bool, rate: float) -> Any:
    addresses = iter(f"127.0.{70 if baseline else 60}.{i}" for i in range(2, 250))
    servers = [stack.server("mlp", next(addresses)) for _ in range(3)]
    path = stack.work / f"router-{label}.json"
    _write(path, _document(servers, draining=None, baseline=baseline))
    router = stack.router(label, "--config", str(path))
    targets = vegeta.targets(router.url + INFER, rp.mlp_request(1), HEADERS)
    results: list[tuple[int, float]] = []
    seconds = 60.0
    load = threading.Thread(
        target=lambda: results.extend(vegeta.attack(targets, rate=rate, seconds=seconds))
    )
    began = time.monotonic()
    load.start()
    rp.wait_for(lambda: router.metric("kubeinfer_router_requests_total") > rate, 10, "load on")
    drains_ms: list[float] = []
    polls_ms: list[float] = []
    after_mark = 0.0
    for _ in range(ROUNDS):
        if baseline:
            victim = servers[0]  # the ReplicaSet's own ranking, blind to load: the oldest here
            victim.process.send_signal(signal.SIGTERM)
            time.sleep(PROPAGATION_S)  # models the propagation; the bench's load runs meanwhile
        else:
            loads = {
                s.address: (e["in_flight"] + e["queued"]) if (e := _endpoint(router, s.address))
                else 0.0
                for s in servers
            }  # fmt: skip
            victim = min(servers, key=lambda s: loads[s.address])
            marked = time.monotonic()
            _write(path, _document(servers, draining=victim.address, baseline=False))

            def seen(address: str = victim.address) -> bool:
                e = _endpoint(router, address)
                return e is not None and e["draining"]

            def drained(address: str = victim.address) -> bool:
                e = _endpoint(router, address)
                return e is not None and e["in_flight"] == 0

            # The router reads its config file once a second (a ConfigMap volume; in a cluster
            # the mark comes from its Pod watch within tens of ms): time the drain from when
            # the router had the mark, and the file poll apart.
            rp.wait_for(seen, 10, "the router has the mark", every=0.005)
            mark_seen = time.monotonic()
            rp.wait_for(drained, 10, "the marked server drained", every=0.002)
            polls_ms.append((mark_seen - marked) * 1000)
            drains_ms.append((time.monotonic() - mark_seen) * 1000)
            served_at_mark = victim.successes()
        servers.remove(victim)
        _write(path, _document(servers, draining=None, baseline=baseline))
        if not baseline:
            # Anything the marked server answered after its drain was sent after the mark.
            after_mark += victim.successes() - served_at_mark
        stack.stop(victim)
        fresh = stack.server("mlp", next(addresses))
        servers.append(fresh)
        _write(path, _document(servers, draining=None, baseline=baseline))
        rp.wait_for(
            lambda a=fresh.address: bool((e := _endpoint(router, a)) and e["ready"]),
            30,
            "the new server in the router's list",
        )
    rounds_s = time.monotonic() - began
    load.join()
    out = {
        "requests": len(results),
        "failed": sum(1 for status, _ in results if status != 200),
        "transport_errors": sum(1 for status, _ in results if status == 0),
        "rounds": ROUNDS,
        "rounds_done_within_load_s": round(rounds_s, 1),
        "load_s": seconds,
    }
    if not baseline:
        out["drain_ms_median"] = sorted(drains_ms)[len(drains_ms) // 2]
        out["drain_ms_max"] = max(drains_ms)
        out["mark_seen_after_write_ms_median"] = sorted(polls_ms)[len(polls_ms) // 2]
        out["answered_by_marked_after_drain"] = after_mark
    for process in [router, *servers]:
        stack.stop(process)
    return out


def part_scale_in(stack: Any, vegeta: Any, quick: bool) -> dict[str, Any]:
    rate = 150.0
    marked = run_side(stack, vegeta, label="scale-in-marked", baseline=False, rate=rate)
    plain = run_side(stack, vegeta, label="scale-in-plain", baseline=True, rate=rate)
    return {"rate_rps": rate, "propagation_s": PROPAGATION_S, "kubeinfer": marked, "plain": plain}


def markdown(g: dict[str, Any], ran: str) -> list[str]:
    k, p = g["kubeinfer"], g["plain"]
    return [
        "## g. Ten scale-ins under load",
        "",
        ran,
        "",
        f"Three `mlp` servers, {g['rate_rps']:.0f} req/s open-loop (vegeta) for {k['load_s']:.0f} "
        "s per side; each round removes one server and starts a fresh one in its place. "
        "kubeinfer: the least loaded server marked draining, drained by the router, then "
        "SIGTERM. A plain Deployment behind a Service: the oldest server gets SIGTERM (no "
        f"preStop, no drain delay), its endpoint leaves the list {g['propagation_s']:.0f} s later "
        "(EndpointSlice -> kube-proxy), random pick, no retry, no health probe of its own. A "
        "preStop sleep longer than the propagation closes most of that gap (the operator's "
        "pods have 5 s). The drain is timed from when the router had the mark; the router "
        f"read the rewritten config file {k['mark_seen_after_write_ms_median']:.0f} ms (median) "
        "after the write (it polls the file; in a cluster the mark arrives by its Pod watch).",
        "",
        "| side | scale-ins | requests | failed | drain once the router had the mark "
        "(median / max) | answered by a server after its drain |",
        "|---|---:|---:|---:|---:|---:|",
        f"| kubeinfer (mark, drain, then SIGTERM) | {k['rounds']} | {k['requests']} | "
        f"{k['failed']} | {k['drain_ms_median']:.1f} / {k['drain_ms_max']:.1f} ms | "
        f"{k['answered_by_marked_after_drain']:.0f} |",
        f"| plain Deployment + Service | {p['rounds']} | {p['requests']} | {p['failed']} | - | - |",
        "",
        "Both sides lost nothing here, and the baseline is kinder than kube-proxy: it is the "
        "router with its mark, probe and retry switched off, but it still stops sending to an "
        "endpoint after one refused connection (passive ejection, 5 s), which kube-proxy never "
        "does, and the server answers what it accepted before closing. What the mark adds on "
        "this bench is the choice (the least loaded server goes, not the oldest) and a drain "
        "measured in milliseconds before SIGTERM, so no request is cut even by a server that "
        "exits at once.",
        "",
        "The same rule on the local cluster, through the autoscaler's own choice, the real "
        "ReplicaSet controller and Pod discovery: `tests/router/test_router_scale_in.py` "
        "(router tier of `make test`).",
        "",
    ]
