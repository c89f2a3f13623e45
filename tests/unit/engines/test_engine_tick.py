"""The autoscaler engine's tick, observe -> step -> act, on a virtual clock.

Real pieces: the watch-fed store (in memory), a real aiohttp scrape of a real HTTP server on
127.0.0.1 serving Triton's metric names, the pure step. Recorded instead of sent: the API
writes (the scale subresource, Events, status) - the one I/O a unit test cannot do for real.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kubeinfer.clients import catalogue, kube, store
from kubeinfer.core import api, metrics, scale_in, status
from kubeinfer.engines import autoscaler

NS, NAME = "unit-tick", "svc"


class Clock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


class Pod:
    """A serving pod's /metrics: pending requests, and completed ones counted up over time."""

    def __init__(self) -> None:
        self.pending = 0.0
        self.completed = 0.0
        self.provider: str | None = None  # the ONNX server's kubeinfer_execution_provider

    def text(self) -> str:
        provider = (
            "# TYPE kubeinfer_execution_provider gauge\n"
            f'kubeinfer_execution_provider{{model="m",provider="{self.provider}"}} 1\n'
            if self.provider
            else ""
        )
        return provider + (
            "# TYPE nv_inference_pending_request_count gauge\n"
            f'nv_inference_pending_request_count{{model="m",version="1"}} {self.pending}\n'
            "# TYPE nv_inference_request_success counter\n"
            f'nv_inference_request_success{{model="m",version="1"}} {self.completed}\n'
        )


@pytest.fixture
async def pod_server() -> Any:
    pod = Pod()

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=pod.text())

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield pod, port
    await runner.cleanup()


def _objects(port: int, monkeypatch: pytest.MonkeyPatch) -> store.Store:
    """The service, its Deployment, one Ready pod and the runtime, as the watches fed them,
    in a store of the test's own (the engine and the catalogue read it)."""
    STORE = store.Store()
    monkeypatch.setattr(autoscaler, "STORE", STORE)
    monkeypatch.setattr(catalogue, "STORE", STORE)
    STORE.replace(api.API_VERSION, "InferenceRuntime", [], None)
    STORE.observe(
        {
            "apiVersion": api.API_VERSION,
            "kind": "InferenceRuntime",
            "metadata": {"name": "onnxruntime", "resourceVersion": "1"},
            "spec": {"image": "i", "formats": [{"name": "onnx"}], "ports": {"metrics": port}},
        }
    )
    STORE.observe(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"namespace": NS, "name": f"{NAME}-predictor", "resourceVersion": "1"},
            "spec": {"replicas": 1},
        }
    )
    STORE.replace("v1", "Pod", [], None)
    STORE.observe(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "namespace": NS,
                "name": "p1",
                "resourceVersion": "1",
                "labels": {"kubeinfer.io/inferenceservice": NAME},
                "creationTimestamp": "2026-12-02T00:00:00Z",
            },
            "status": {
                "podIP": "127.0.0.1",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "lastTransitionTime": "2026-12-02T00:00:05Z",
                    }
                ],
            },
        }
    )
    return STORE


def _record_writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """The engine's API writes (scale, Event, status.autoscaler), recorded in order instead of
    sent."""
    writes: list[tuple[str, Any]] = []
    monkeypatch.setattr(kube, "set_scale", lambda ns, name, n: writes.append(("scale", n)))
    monkeypatch.setattr(kube, "emit_event", lambda obj, **kw: writes.append(("event", kw)))
    monkeypatch.setattr(
        kube, "patch_status", lambda *a, **_: writes.append(("status", a[-1]["autoscaler"]))
    )
    return writes


async def test_a_queue_scales_up_and_status_explains_it(
    pod_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod, port = pod_server
    _objects(port, monkeypatch)
    writes = _record_writes(monkeypatch)
    monkeypatch.setattr(catalogue, "_parsed", {})
    clock = Clock()
    engine = autoscaler.Autoscaler(clock=clock)
    engine.track(
        {
            "metadata": {"namespace": NS, "name": NAME},
            "spec": {
                "model": {"name": "m", "format": "onnx", "storageUri": "https://h/m.onnx"},
                "scaling": {"target": 2, "maxReplicas": 4},
            },
            "status": {"runtime": "onnxruntime"},
        }
    )
    async with aiohttp.ClientSession() as session:
        # First tick: a baseline scrape only, so it holds and scales nothing.
        await engine.tick(session, (NS, NAME))
        assert not [w for w in writes if w[0] == "scale"]
        # A queue builds: 8 waiting against a target of 2 per replica.
        pod.pending, pod.completed = 8.0, 100.0
        clock.now += 2.0
        await engine.tick(session, (NS, NAME))
    assert ("scale", 4) in writes
    [event] = [w[1] for w in writes if w[0] == "event"]
    assert event["reason"] == "ScaledUp" and "panic mode" in event["message"]
    status = [w[1] for w in writes if w[0] == "status"][-1]
    assert status["desiredReplicas"] == 4
    assert status["decisions"][-1]["reason"] == "PanicScaleUp"
    # The memory that survives a restart is in status, within the CRD's size limit.
    saved = json.loads(status["state"])
    assert saved["window"]["buckets"] and len(status["state"]) < 16_384


@pytest.mark.parametrize("provider", [None, "CPUExecutionProvider"])
async def test_a_new_service_is_first_recorded_once_a_replica_is_ready(
    pod_server: Any, monkeypatch: pytest.MonkeyPatch, provider: str | None
) -> None:
    """While no replica is Ready, and on the Ready replica's first scrape (a baseline), a new
    service's ticks hold its count for want of data and write nothing (status's Ready
    condition already says it); the first decision made on data is the first written. Two
    writes per create (NoData, then Hold) became one. Where the pod reports its execution
    provider (the ONNX server does, on its first scrape) that rides in the same write."""
    pod, port = pod_server
    pod.provider = provider
    STORE = _objects(port, monkeypatch)
    STORE.observe(
        {
            "apiVersion": api.API_VERSION,
            "kind": "InferenceRuntime",
            "metadata": {"name": "onnxruntime", "resourceVersion": "2"},
            "spec": {
                "image": "i",
                "formats": [{"name": "onnx"}],
                "ports": {"metrics": port},
                "metrics": {"executionProvider": "kubeinfer_execution_provider"},
            },
        }
    )
    [p1] = STORE.pods(NS, NAME)
    starting = {**p1["status"], "conditions": [{"type": "Ready", "status": "False"}]}
    STORE.observe(
        {**p1, "metadata": {**p1["metadata"], "resourceVersion": "2"}, "status": starting}
    )
    writes = _record_writes(monkeypatch)
    monkeypatch.setattr(catalogue, "_parsed", {})
    clock = Clock()
    engine = autoscaler.Autoscaler(clock=clock)
    engine.track(
        {
            "metadata": {"namespace": NS, "name": NAME},
            "spec": {"model": {"name": "m", "format": "onnx", "storageUri": "https://h/m.onnx"}},
            "status": {"runtime": "onnxruntime"},
        }
    )
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            await engine.tick(session, (NS, NAME))
            clock.now += 2.0
        assert writes == []
        STORE.observe({**p1, "metadata": {**p1["metadata"], "resourceVersion": "3"}})
        await engine.tick(session, (NS, NAME))  # the baseline scrape
        assert writes == []
        clock.now += 2.0
        await engine.tick(session, (NS, NAME))
    [(kind, auto)] = writes
    assert kind == "status" and auto["desiredReplicas"] == 1
    [decision] = auto["decisions"]
    # minReplicas 1 (the default): the idle replica is held at the minimum.
    assert decision["reason"] == "AtMin" and decision["inputs"]["ready"] == 1
    if provider:
        assert auto["executionProviders"] == [
            {"provider": provider, "pods": 1, "example": p1["metadata"]["name"]}
        ]


# ---- load-aware scale-in ---------------------------------------------------------------------
COST, DRAIN = scale_in.DELETION_COST, scale_in.DRAINING


async def _serve(pod: Pod, host: str, port: int) -> web.AppRunner:
    async def page(_: web.Request) -> web.Response:
        return web.Response(text=pod.text())

    app = web.Application()
    app.router.add_get("/metrics", page)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def _second_pod(
    STORE: store.Store, *, name: str, ip: str, managed: list[dict[str, Any]] | None = None
) -> None:
    """Another Ready pod of the service (the first, p1 on 127.0.0.1, comes from _objects)."""
    meta: dict[str, Any] = {
        "namespace": NS,
        "name": name,
        "uid": f"uid-{name}",
        "resourceVersion": "2",
        "labels": {"kubeinfer.io/inferenceservice": NAME},
        "creationTimestamp": "2026-12-02T00:00:00Z",
    }
    if managed:
        meta["managedFields"] = managed
        meta["annotations"] = {COST: "10"}
    STORE.observe(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "status": {
                "podIP": ip,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "lastTransitionTime": "2026-12-02T00:00:05Z",
                    }
                ],
            },
        }
    )


async def _scale_in_two_pods(
    pod_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    *,
    managed: list[dict[str, Any]] | None,
    refuse: kube.Refused | None = None,
    ticks_after: int = 0,
) -> list[tuple[str, Any]]:
    """Two Ready pods, p1 busy (3 queued) and p2 idle, at 2 replicas with a target of 10 per
    replica: the engine scales in to 1 (then ticks ``ticks_after`` more times). Returns the
    API writes in the order they were made; ``refuse``: what the API server answers marks."""
    busy, port = pod_server
    STORE = _objects(port, monkeypatch)
    deployment = STORE.lookup("Deployment", NS, f"{NAME}-predictor")[1]
    assert deployment is not None
    # A new version of the Deployment (the store keeps what it holds of an unchanged one).
    meta = {**deployment["metadata"], "resourceVersion": "2"}
    STORE.observe({**deployment, "metadata": meta, "spec": {"replicas": 2}})
    _second_pod(STORE, name="p2", ip="127.0.0.2", managed=managed)
    idle = Pod()
    runner = await _serve(idle, "127.0.0.2", port)
    writes = _record_writes(monkeypatch)

    def apply_marks(ns: str, pod: str, marks: dict[str, str], *, uid: str) -> bool:
        writes.append(("marks", (pod, uid, marks)))
        if refuse is not None:
            raise refuse
        return True

    monkeypatch.setattr(kube, "apply_marks", apply_marks)
    monkeypatch.setattr(catalogue, "_parsed", {})
    clock = Clock()
    engine = autoscaler.Autoscaler(clock=clock)
    engine.track(
        {
            "metadata": {"namespace": NS, "name": NAME},
            "spec": {
                "model": {"name": "m", "format": "onnx", "storageUri": "https://h/m.onnx"},
                "scaling": {
                    "minReplicas": 1,
                    "target": 10,
                    "stableWindowSeconds": 6,
                    "scaleDownDelaySeconds": 0,
                },
            },
            "status": {"runtime": "onnxruntime"},
        }
    )
    try:
        async with aiohttp.ClientSession() as session:
            busy.pending = 3.0
            # Enough ticks for half a stable window of samples (decide.WARM_FRACTION).
            for _ in range(5):
                await engine.tick(session, (NS, NAME))
                clock.now += 2.0
                if any(w[0] == "scale" for w in writes):
                    break
            for _ in range(ticks_after):
                await engine.tick(session, (NS, NAME))
                clock.now += 2.0
    finally:
        await runner.cleanup()
    return writes


async def test_a_scale_in_marks_the_idle_pod_just_before_the_scale(
    pod_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = await _scale_in_two_pods(pod_server, monkeypatch, managed=None)
    kinds = [w[0] for w in writes]
    assert ("scale", 1) in writes, writes
    # The marks on the idle pod, then the scale: the ReplicaSet controller reads the cost
    # when it scales.
    [marks] = [w[1] for w in writes if w[0] == "marks"]
    assert marks == ("p2", "uid-p2", {COST: scale_in.MARKED_COST, DRAIN: "true"})
    assert kinds.index("marks") < kinds.index("scale")
    [event] = [w[1] for w in writes if w[0] == "event"]
    assert "Removing the least loaded: p2 (0 in flight)." in event["message"]
    status = [w[1] for w in writes if w[0] == "status"][-1]
    assert status["decisions"][-1]["reason"] == "ScaleDown"
    assert status["decisions"][-1]["message"].endswith(
        "Removing the least loaded: p2 (0 in flight)."
    )


async def test_a_scale_in_backs_off_when_another_manager_owns_the_cost(
    pod_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    karpenter = [
        {
            "manager": "karpenter",
            "operation": "Update",
            "fieldsV1": {"f:metadata": {"f:annotations": {f"f:{COST}": {}}}},
        }
    ]
    writes = await _scale_in_two_pods(pod_server, monkeypatch, managed=karpenter)
    # The scale-in itself goes ahead (the ReplicaSet controller follows karpenter's costs);
    # no pod is marked.
    assert ("scale", 1) in writes, writes
    assert not [w for w in writes if w[0] == "marks"]
    status = [w[1] for w in writes if w[0] == "status"][-1]
    assert status["decisions"][-1]["message"].endswith(
        f"another field manager owns {COST} on p2 (karpenter)."
    )


@pytest.mark.parametrize(
    "refuse",
    [
        kube.Refused(422, "Invalid: metadata.annotations: Invalid value"),
        kube.Conflict(409, 'Conflict: Apply failed with 1 conflict: conflict with "karpenter"'),
    ],
)
async def test_a_scale_in_backs_off_when_the_api_server_refuses_the_marks(
    pod_server: Any, monkeypatch: pytest.MonkeyPatch, refuse: kube.Refused
) -> None:
    """The store showed no other owner, but the API server refuses the marks on the chosen pod
    (another manager took the annotation meanwhile, an invalid value, a webhook's no): the
    tick backs off and says why, the scale-in still goes ahead, and the pod is not written
    again on the next ticks."""
    writes = await _scale_in_two_pods(
        pod_server, monkeypatch, managed=None, refuse=refuse, ticks_after=2
    )
    assert ("scale", 1) in writes, writes
    assert [w[1][0] for w in writes if w[0] == "marks"] == ["p2"]
    message = [w[1] for w in writes if w[0] == "status"][-1]["decisions"][-1]["message"]
    assert message.endswith(
        f"Not choosing the pods to remove: the API server refused the scale-in marks on p2 "
        f"({refuse.status} {refuse.why})."
    ), message


@pytest.mark.parametrize("mode", [None, "Recommend", "Off"])
async def test_marks_left_on_a_survivor_are_cleared(
    pod_server: Any, monkeypatch: pytest.MonkeyPatch, mode: str | None
) -> None:
    """A pod marked for a scale-in that did not happen (the count went back up before the
    ReplicaSet controller acted): once the count is settled, its marks go. Also when the
    service left Auto meanwhile, for Recommend or Off (which has no tick, only this pass):
    nothing else would clear them, and a pod left draining gets no work."""
    _, port = pod_server
    STORE = _objects(port, monkeypatch)
    [p1] = STORE.pods(NS, NAME)
    ours = {
        "manager": "kubeinfer-autoscaler",
        "operation": "Apply",
        "fieldsV1": {"f:metadata": {"f:annotations": {f"f:{COST}": {}, f"f:{DRAIN}": {}}}},
    }
    meta = {
        **p1["metadata"],
        "uid": "uid-p1",
        "resourceVersion": "5",
        "annotations": {COST: "-1", DRAIN: "true"},
        "managedFields": [ours],
    }
    STORE.observe({**p1, "metadata": meta})
    writes: list[tuple[str, Any]] = []
    monkeypatch.setattr(kube, "set_scale", lambda ns, name, n: writes.append(("scale", n)))
    monkeypatch.setattr(kube, "patch_status", lambda *a, **_: None)
    monkeypatch.setattr(
        kube,
        "apply_marks",
        lambda ns, pod, marks, *, uid: writes.append(("marks", (pod, uid, marks))) or True,
    )
    monkeypatch.setattr(catalogue, "_parsed", {})
    engine = autoscaler.Autoscaler(clock=Clock())
    engine.track(
        {
            "metadata": {"namespace": NS, "name": NAME},
            "spec": {
                "model": {"name": "m", "format": "onnx", "storageUri": "https://h/m.onnx"},
                **({"scaling": {"mode": mode}} if mode else {}),
            },
            "status": {"runtime": "onnxruntime"},
        }
    )
    async with aiohttp.ClientSession() as session:
        await engine.tick_all(session)
        assert writes == [("marks", ("p1", "uid-p1", {}))]
        if mode == "Off":
            # One pass: an Off service leaves the loop until its next event.
            await engine.tick_all(session)
            assert len(writes) == 1


class OnnxPod(Pod):
    """An ONNX server's page: also where its model computes."""

    def __init__(self) -> None:
        super().__init__()
        self.provider = "CPUExecutionProvider"

    def text(self) -> str:
        return super().text() + (
            "# TYPE kubeinfer_execution_provider gauge\n"
            f'kubeinfer_execution_provider{{device="gpu",model="m",provider="{self.provider}",'
            'version="1"} 1\n'
        )


async def test_where_pods_compute_reaches_status_and_the_gpu_condition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pod = OnnxPod()

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=pod.text())

    app = web.Application()
    app.router.add_get("/metrics", page)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    objects = _objects(runner.addresses[0][1], monkeypatch)
    # The onnxruntime runtime as its default names it: with the execution provider gauge.
    objects.observe(
        {
            "apiVersion": api.API_VERSION,
            "kind": "InferenceRuntime",
            "metadata": {"name": "onnxruntime", "resourceVersion": "2"},
            "spec": {
                "image": "i",
                "formats": [{"name": "onnx"}],
                "ports": {"metrics": runner.addresses[0][1]},
                "metrics": {"executionProvider": "kubeinfer_execution_provider"},
            },
        }
    )
    written: list[dict[str, Any]] = []
    monkeypatch.setattr(kube, "set_scale", lambda *a: None)
    monkeypatch.setattr(kube, "emit_event", lambda *a, **kw: None)
    news: list[bool] = []

    def patch_status(*a: Any, **kw: Any) -> None:
        written.append(a[-1]["autoscaler"])
        news.append(bool(kw.get("news")))

    monkeypatch.setattr(kube, "patch_status", patch_status)
    monkeypatch.setattr(catalogue, "_parsed", {})
    clock = Clock()
    isvc = {
        "metadata": {"namespace": NS, "name": NAME},
        "spec": {
            "model": {"name": "m", "format": "onnx", "storageUri": "https://h/m.onnx"},
            "gpu": {"count": 1},
        },
        "status": {"runtime": "onnxruntime"},
    }
    engine = autoscaler.Autoscaler(clock=clock)
    engine.track(isvc)

    def gpu_condition(auto: dict[str, Any]) -> dict[str, Any]:
        """What the reconciler builds from the status the autoscaler wrote."""
        built = status.build_status(
            status.Observed(
                generation=1,
                runtime_name="onnxruntime",
                runtime_problem=None,
                spec_problem=None,
                stopped=False,
                gpu_resource="nvidia.com/gpu",
                gpus_per_replica=1,
                url=None,
                selector="",
                deployment=None,
                pods=[],
                execution_providers=status.recorded_providers({"autoscaler": auto}),
                runtime_reports_provider=True,
            )
        )
        return next(c.model_dump() for c in built.conditions if c.type == "GPUInUse")

    try:
        async with aiohttp.ClientSession() as session:
            # The first scrape is a baseline: the provider waits one tick for a decision on
            # data, and both go in one write.
            await engine.tick(session, (NS, NAME))
            assert written == []
            clock.now += 2.0
            await engine.tick(session, (NS, NAME))
            assert len(written) == 1
            assert written[-1]["executionProviders"] == [
                {"provider": "CPUExecutionProvider", "pods": 1, "example": "p1"}
            ]
            cpu = gpu_condition(written[-1])
            assert (cpu["status"], cpu["reason"]) == ("False", "RunningOnCPU")
            # The pod restarts on a working GPU: the next tick writes the change by itself.
            pod.provider = "CUDAExecutionProvider"
            before = len(written)
            clock.now += 2.0
            await engine.tick(session, (NS, NAME))
            assert len(written) == before + 1
            gpu = gpu_condition(written[-1])
            assert (gpu["status"], gpu["reason"]) == ("True", "RunningOnGPU")
            # A changed provider is news for the reconciler (it builds GPUInUse from it): the
            # write's watch event must queue a reconcile, not pass as the echo of our own.
            assert news[-1] is True
            # A restarted operator seeds what it wrote: the same fact is not written again.
            restarted = autoscaler.Autoscaler(clock=clock)
            restarted.track(
                {**isvc, "status": {"runtime": "onnxruntime", "autoscaler": written[-1]}}
            )
            tracked = restarted._tracked[(NS, NAME)]
            assert (
                metrics.provider_use({"p1": "CUDAExecutionProvider"}) == tracked.written_providers
            )
    finally:
        await runner.cleanup()


def test_a_first_provider_report_waits_a_while_but_not_for_good() -> None:
    engine = autoscaler.Autoscaler(clock=Clock())
    engine.track(
        {
            "metadata": {"namespace": NS, "name": NAME},
            "spec": {"model": {"name": "m", "format": "onnx", "storageUri": "https://h/m.onnx"}},
        }
    )
    tracked = engine._tracked[(NS, NAME)]
    cpu = metrics.provider_use({"p1": "CPUExecutionProvider"})
    hold = autoscaler.Autoscaler._hold_providers
    assert hold(tracked, [], 100.0)  # nothing new to say about providers
    assert hold(tracked, cpu, 100.0)  # new: may ride with the next tick's decision
    assert hold(tracked, cpu, 100.0 + autoscaler.PROVIDERS_WAIT_S - 1)
    assert not hold(tracked, cpu, 100.0 + autoscaler.PROVIDERS_WAIT_S)  # written by itself
