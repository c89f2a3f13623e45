"""Part e of bench/router: a canary with 5 % errors, rolled back on the router's own metrics.

Real processes on loopback: two stable `mlp` servers, one canary server whose model fails 5 %
of its requests at random (`build_flaky_repo`), the router in static discovery with a config
file, and vegeta sending the same request at a fixed open-loop rate.

Side by side in one run, the same load and split (25 % to the canary) for the same time:
  - a static split with no analysis (what KServe's `canaryTrafficPercent` does: the split
    stays until a person changes it), and
  - kubeinfer's analysis: the operator's own pure step (`kubeinfer.core.canary.decide`, with
    `analysis.window_between` over the router's `/metrics` as `metrics.parse_router_variants`
    reads it, exactly what `engines/canary.py` runs), every interval; on RolledBack the bench
    writes what the reconciler would render (canary weight 0) into the router's config file.

The canary server starts only after the load has begun: until its readiness probe passes,
the router must send it nothing (counted: the router's retries after a failed connection).
Owns nothing the product runs: it drives the product's step, it does not copy it.
"""

from __future__ import annotations

import json
import pathlib
import threading
import time
from typing import Any

import numpy as np
import onnx
import router_processes as rp
from onnx import TensorProto, helper, numpy_helper

from kubeinfer.core import analysis, api, canary, metrics, router
from kubeinfer.core.scaling import decide as scaling_decide

STABLE = router.VARIANT_STABLE
CANARY = router.VARIANT_CANARY
WEIGHT = 25  # the canary's share, percent
ERROR_SHARE = 0.05  # the canary's model fails this share of its requests
SCRAPE_ALLOWANCE_S = 1.0  # the last check's own scrape, on top of interval x failureLimit
INFER = "/v2/models/mlp/infer"
HEADERS = {"Content-Type": "application/json"}


def build_flaky_repo(root: pathlib.Path) -> pathlib.Path:
    """`mlp`'s signature (FP32 [batch, 64] -> [batch, 10]) and a regression: on a draw of
    RandomUniform below ERROR_SHARE it asks Reshape for rows of 7 out of 64 values, which
    onnxruntime refuses at run time (a 500 from the server, as a real bug would give). The
    model draws, not the client: which requests fail cannot line up with the router's
    deterministic split (smooth weighted round-robin), so the canary sees 5 % whatever the
    order of the load."""
    repo = root / "repo-flaky"
    target = repo / "mlp" / "1" / "model.onnx"
    if target.exists():
        return repo
    w = numpy_helper.from_array(
        (np.random.default_rng(7).standard_normal((64, 10)) / 8).astype(np.float32), "w"
    )
    consts = [
        numpy_helper.from_array(np.array(ERROR_SHARE, dtype=np.float32), "share"),
        numpy_helper.from_array(np.array([64], dtype=np.int64), "wide"),
        numpy_helper.from_array(np.array([57], dtype=np.int64), "cut"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "rows"),
    ]
    nodes = [
        helper.make_node("RandomUniform", [], ["draw"], shape=[1], low=0.0, high=1.0),
        helper.make_node("Less", ["draw", "share"], ["unlucky"]),
        helper.make_node("Cast", ["unlucky"], ["flag"], to=TensorProto.INT64),
        helper.make_node("Mul", ["flag", "cut"], ["minus"]),
        helper.make_node("Sub", ["wide", "minus"], ["width"]),  # 64, or 7 when unlucky
        helper.make_node("Concat", ["rows", "width"], ["shape"], axis=0),
        helper.make_node("Reshape", ["INPUT0", "shape"], ["reshaped"]),
        helper.make_node("MatMul", ["reshaped", "w"], ["OUTPUT0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "flaky",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", 10])],
        initializer=[w, *consts],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))
    (repo / "mlp" / "config.json").write_text(json.dumps({"max_batch_size": 0}))
    return repo


def router_document(
    stable: list[rp.OnnxServer], canary_endpoint: dict[str, Any], canary_weight: int
) -> dict[str, Any]:
    return {
        "discovery": {"mode": "static", "probe": True},
        "variants": [
            {
                "name": STABLE,
                "weight": 100 - canary_weight,
                "endpoints": [
                    {"address": f"{s.address}:{s.http_port}", "metricsPort": s.metrics_port}
                    for s in stable
                ],
            },
            {
                "name": CANARY,
                "weight": canary_weight,
                "endpoints": [canary_endpoint],
            },
        ],
    }


def write_config(path: pathlib.Path, doc: dict[str, Any]) -> None:
    # Written beside and renamed, as a ConfigMap volume swaps it: the router never reads half.
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(doc))
    scratch.replace(path)


def spec(interval_s: int, failure_limit: int) -> api.CanarySpec:
    return api.CanarySpec.model_validate(
        {
            "model": {"storageUri": "file:///bench/flaky.onnx"},
            "steps": [WEIGHT, 50],
            "analysis": {
                "intervalSeconds": interval_s,
                "maxErrorRate": 0.01,
                "failureLimit": failure_limit,
                "minRequests": 20,
            },
        }
    )


class Analysis:
    """The engine's observe -> decide loop, on the bench's clock; act = a config rewrite."""

    def __init__(self, router_: rp.Router, cspec: api.CanarySpec, rewrite: Any) -> None:
        self.router = router_
        self.spec = cspec
        self.rewrite = rewrite
        self.state = canary.start(cspec)
        self.checks: list[dict[str, Any]] = []
        self.verdict_at: float | None = None
        self.canary_total_at_verdict: float | None = None

    def snapshot(self) -> dict[str, analysis.Snapshot]:
        return metrics.parse_router_variants([self.router.metrics()])

    def run(self, began: float, stop: threading.Event) -> None:
        interval = self.spec.analysis.interval_seconds
        empty = analysis.Snapshot(successes=0, errors=0, bounds=(), buckets=())
        before, taken = self.snapshot(), time.monotonic()
        while not stop.is_set() and self.state.phase is api.CanaryPhase.PROGRESSING:
            if stop.wait(max(0.0, taken + interval - time.monotonic())):
                return
            after, now = self.snapshot(), time.monotonic()
            windows = {
                v: analysis.window_between(before.get(v, empty), after.get(v, empty))
                for v in (STABLE, CANARY)
            }
            decision = canary.decide(
                state=self.state,
                spec=self.spec,
                stable=windows[STABLE],
                canary=windows[CANARY],
                now=scaling_decide.iso(time.time()),
            )
            self.checks.append(
                {
                    "at_s": round(now - began, 2),
                    "canary_requests": windows[CANARY].requests,
                    "canary_error_rate": round(windows[CANARY].error_rate, 4),
                    "phase": decision.state.phase.value,
                    "weight": decision.state.weight,
                    "failures": decision.state.failures,
                }
            )
            if decision.state.weight != self.state.weight:
                self.rewrite(decision.state.weight)
            if decision.state.phase is api.CanaryPhase.ROLLED_BACK:
                self.verdict_at = now
                # Read after the router applied weight 0: nothing may reach the canary after.
                done = self.snapshot().get(CANARY, empty)
                self.canary_total_at_verdict = done.successes + done.errors
            self.state = decision.state
            before, taken = after, now


def run_side(
    stack: Any,
    vegeta: Any,
    *,
    label: str,
    analyse: bool,
    rate: float,
    seconds: float,
    interval_s: int,
    failure_limit: int,
    canary_after_s: float,
) -> dict[str, Any]:
    work: pathlib.Path = stack.work
    stable = [stack.server("mlp", f"127.0.0.{40 + i}") for i in range(2)]
    address = "127.0.0.42"
    http_port, metrics_port = rp.free_port(address), rp.free_port(address)
    canary_endpoint = {"address": f"{address}:{http_port}", "metricsPort": metrics_port}
    path = work / f"router-{label}.json"
    write_config(path, router_document(stable, canary_endpoint, WEIGHT))
    router_ = stack.router(label, "--config", str(path))
    applied: dict[int, float] = {}

    def rewrite(weight: int) -> None:
        written = time.monotonic()
        write_config(path, router_document(stable, canary_endpoint, weight))
        # The router polls its config file (as it would a ConfigMap volume): when did it apply?
        rp.wait_for(
            lambda: router_.endpoints()["weights"].get(CANARY) == weight,
            10,
            f"the router at canary weight {weight}",
            every=0.01,
        )
        applied[weight] = time.monotonic() - written

    targets = vegeta.targets(router_.url + INFER, rp.mlp_request(1), HEADERS)
    results: list[tuple[int, float]] = []
    load = threading.Thread(
        target=lambda: results.extend(vegeta.attack(targets, rate=rate, seconds=seconds))
    )
    began = time.monotonic()
    load.start()
    # The canary comes up while the load runs: until its probe passes it must get nothing.
    rp.wait_for(lambda: time.monotonic() - began >= canary_after_s, canary_after_s + 5, "load")
    server = rp.start_onnx(
        build_flaky_repo(work),
        work / f"server-canary-{label}.log",
        address=address,
        http_port=http_port,
        metrics_port=metrics_port,
    )
    stack.processes.append(server)
    rp.wait_for(
        lambda: any(
            e["variant"] == CANARY and e["ready"] for e in router_.endpoints()["endpoints"]
        ),
        30,
        "the router sees the canary Ready",
    )
    canary_ready = time.monotonic()
    stop = threading.Event()
    judge = Analysis(router_, spec(interval_s, failure_limit), rewrite)
    checker = threading.Thread(target=judge.run, args=(canary_ready, stop)) if analyse else None
    if checker:
        checker.start()
    load.join()
    stop.set()
    if checker:
        checker.join()
    retries = router_.metric("kubeinfer_router_decisions_total", reason="retry")
    counts = metrics.parse_router_variants([router_.metrics()])
    to_canary = counts.get(CANARY)
    failed = sum(1 for status, _ in results if status != 200)
    out: dict[str, Any] = {
        "requests": len(results),
        "failed": failed,
        "transport_errors": sum(1 for status, _ in results if status == 0),
        "to_canary": (to_canary.successes + to_canary.errors) if to_canary else 0.0,
        "canary_errors": to_canary.errors if to_canary else 0.0,
        "router_retries": retries,
        "canary_ready_after_load_s": round(canary_ready - began, 2),
        "checks": judge.checks if analyse else [],
    }
    if analyse:
        out["phase"] = judge.state.phase.value
        out["verdict_after_ready_s"] = (
            round(judge.verdict_at - canary_ready, 2) if judge.verdict_at else None
        )
        out["budget_s"] = interval_s * failure_limit
        out["weight_applied_after_write_ms"] = {
            str(w): round(t * 1000, 1) for w, t in applied.items()
        }
        out["canary_requests_after_rollback"] = (
            out["to_canary"] - judge.canary_total_at_verdict
            if judge.canary_total_at_verdict is not None
            else None
        )
    for process in [router_, server, *stable]:
        stack.stop(process)
    return out


def part_canary_rollback(stack: Any, vegeta: Any, quick: bool) -> dict[str, Any]:
    interval_s, failure_limit = 5, 2
    seconds = 20.0 if quick else 30.0
    rate = 120.0
    common = {
        "rate": rate,
        "seconds": seconds,
        "interval_s": interval_s,
        "failure_limit": failure_limit,
        "canary_after_s": 3.0,
    }
    static = run_side(stack, vegeta, label="canary-static", analyse=False, **common)
    judged = run_side(stack, vegeta, label="canary-analysis", analyse=True, **common)
    return {
        "rate_rps": rate,
        "seconds": seconds,
        "weight": WEIGHT,
        "error_share": ERROR_SHARE,
        "interval_s": interval_s,
        "failure_limit": failure_limit,
        "max_error_rate": 0.01,
        "static": static,
        "analysis": judged,
    }


def markdown(e: dict[str, Any], ran: str) -> list[str]:
    s, a = e["static"], e["analysis"]
    verdict = a.get("verdict_after_ready_s")
    # The last check fires at interval x failureLimit by construction; allow its scrape.
    within = verdict is not None and verdict <= a["budget_s"] + SCRAPE_ALLOWANCE_S
    told = "-" if verdict is None else f"{verdict:.1f} s ({a['phase']})"
    lines = [
        "## e. A canary with 5 % errors: rolled back on the router's own metrics",
        "",
        ran,
        "",
        f"Two stable `mlp` servers and one canary whose model fails {e['error_share']:.0%} of "
        "its requests at random (an onnxruntime error, a 500 from the server); the canary "
        f"at {e['weight']} %, {e['rate_rps']:.0f} req/s open-loop (vegeta) for "
        f"{e['seconds']:.0f} s per side; the canary server starts 3 s into the load. The "
        "analysis is the operator's own step (`core.canary.decide` on windows of the router's "
        f"`/metrics`), interval {e['interval_s']} s, failureLimit {e['failure_limit']}, "
        f"maxErrorRate {e['max_error_rate']:.0%}; its rollback writes canary weight 0 into the "
        "router's config, as the reconciler renders it.",
        "",
        "| side | requests | failed | to the canary | canary errors | retries (sent to an "
        "unready pod) | verdict after canary Ready | within interval x failureLimit |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        f"| static split, no analysis (KServe canaryTrafficPercent) | {s['requests']} | "
        f"{s['failed']} | {s['to_canary']:.0f} | {s['canary_errors']:.0f} | "
        f"{s['router_retries']:.0f} | never | - |",
        f"| kubeinfer analysis | {a['requests']} | {a['failed']} | {a['to_canary']:.0f} | "
        f"{a['canary_errors']:.0f} | {a['router_retries']:.0f} | "
        f"{told} | "
        f"{'yes' if within else 'no'} (budget {a['budget_s']} s + {SCRAPE_ALLOWANCE_S:.0f} s) |",
        "",
        f"After the verdict the router applied canary weight 0 "
        f"{a['weight_applied_after_write_ms'].get('0', float('nan')):.0f} ms after the config "
        f"write (its file poll), and sent the canary {a['canary_requests_after_rollback']:.0f} "
        "requests after that. The static split kept sending it "
        f"{s['to_canary'] / max(1.0, s['requests']):.0%} of the load, and its failures, to "
        "the end.",
        "",
        "Checks (seconds after the canary was Ready: canary requests in the window, its error "
        "rate, the phase after): "
        + "; ".join(
            f"{c['at_s']:.1f} s: {c['canary_requests']:.0f} req, {c['canary_error_rate']:.1%}, "
            f"{c['phase']}"
            for c in a["checks"]
        )
        + ".",
        "",
    ]
    return lines
