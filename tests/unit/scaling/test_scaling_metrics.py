"""Parsing recorded Triton /metrics text and turning two scrapes into pod signals."""

from __future__ import annotations

import pathlib

import pytest

from kubeinfer.core import api, metrics

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def load(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_parse_sums_across_models_and_versions() -> None:
    raw = metrics.parse_metrics(load("triton_t2.prom"))
    assert raw == metrics.RawScrape(
        pending_requests=9,
        queue_duration_us=6_500_000,
        request_duration_us=27_500_000,
        request_success=2200,
        request_failure=5,
        gpu_utilization=0.91,
    )


def test_parse_without_gpu_metric_reads_none_and_zeros() -> None:
    raw = metrics.parse_metrics("# TYPE other gauge\nother 3\n")
    assert raw == metrics.RawScrape()
    assert raw.gpu_utilization is None


def test_parse_dcgm_with_configured_name_and_scale() -> None:
    names = api.RuntimeMetricNames(
        gpu_utilization="DCGM_FI_DEV_GPU_UTIL", gpu_utilization_scale=0.01
    )
    raw = metrics.parse_metrics(load("dcgm.prom"), names=names)
    assert raw.gpu_utilization == pytest.approx(0.60)
    assert raw.request_success == 0


def test_parse_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        metrics.parse_metrics("nv_inference_count{model= 1 2 3\n")


def test_pod_signals_from_counter_deltas() -> None:
    before = metrics.parse_metrics(load("triton_t0.prom"))
    after = metrics.parse_metrics(load("triton_t2.prom"))
    pod = metrics.pod_signals(
        pod="resnet-0", previous=before, previous_time=100.0, current=after, current_time=102.0
    )
    assert pod.pending_requests == 9
    assert pod.request_rate == pytest.approx(500.0)  # 1000 completions in 2 s
    assert pod.queue_time_us == pytest.approx(4400.0)  # 4.4 s queued over 1000 requests
    assert pod.executing == pytest.approx(5.0)  # (14.4 s - 4.4 s) busy / 2 s
    assert pod.in_flight == pytest.approx(14.0)
    assert pod.failure_rate == pytest.approx(1.5)
    assert pod.gpu_utilization == pytest.approx(0.91)


def test_pod_signals_handle_counter_reset() -> None:
    before = metrics.parse_metrics(load("triton_t2.prom"))
    after = metrics.parse_metrics(load("triton_reset.prom"))
    pod = metrics.pod_signals(
        pod="resnet-0", previous=before, previous_time=102.0, current=after, current_time=104.0
    )
    assert pod.request_rate == pytest.approx(25.0)
    assert pod.queue_time_us == pytest.approx(2000.0)
    assert pod.executing == pytest.approx(0.25)
    assert pod.failure_rate == 0


def test_a_first_scrape_is_only_a_baseline() -> None:
    """Its gauges alone would read as a pod executing nothing: after an operator start, every
    pod's first scrape would make the service look idle."""
    after = metrics.parse_metrics(load("triton_t2.prom"))
    assert (
        metrics.pod_signals(
            pod="p", previous=None, previous_time=None, current=after, current_time=5.0
        )
        is None
    )


def test_first_scrapes_count_the_answers_with_no_baseline_yet() -> None:
    raw = metrics.parse_metrics(load("triton_t2.prom"))
    baselines = metrics.Baselines()
    scrapes = {"old": raw, "new": raw, "slow": None}
    assert baselines.first_scrapes(scrapes) == 2  # a failed scrape is not one
    assert baselines.signals(scrapes, 1.0) == []
    scrapes["young"] = raw
    assert baselines.first_scrapes(scrapes) == 1
    assert len(baselines.signals(scrapes, 3.0)) == 2


def test_no_completions_means_unknown_queue_time() -> None:
    raw = metrics.parse_metrics(load("triton_t0.prom"))
    pod = metrics.pod_signals(
        pod="p", previous=raw, previous_time=1.0, current=raw, current_time=3.0
    )
    assert pod.queue_time_us is None
    assert pod.request_rate == 0


# ---- where the pod's models compute (for the GPUInUse condition) ----------------------------

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
# The onnxruntime runtime's names, as its default InferenceRuntime sets them.
ONNX = api.RuntimeMetricNames(execution_provider="kubeinfer_execution_provider")


def provider_page(*providers: str) -> str:
    lines = ["# TYPE kubeinfer_execution_provider gauge"]
    for i, provider in enumerate(providers):
        lines.append(
            f'kubeinfer_execution_provider{{device="gpu",model="m{i}",'
            f'provider="{provider}",version="1"}} 1'
        )
    return "\n".join(lines) + "\n"


def test_parse_reads_the_onnx_servers_provider() -> None:
    """A page the real server rendered: --device gpu on the CPU-only onnxruntime wheel."""
    raw = metrics.parse_metrics(load("onnx_gpu_on_cpu.prom"), names=ONNX)
    assert raw.execution_provider == CPU
    assert raw.request_success == 1 and raw.gpu_utilization is None


@pytest.mark.parametrize(
    ("page", "provider"),
    [
        (provider_page(CUDA), CUDA),
        (provider_page(TRT, CUDA), CUDA),  # all on GPUs: one of them
        (provider_page(CUDA, CPU, TRT), CPU),  # one model on CPU makes it a CPU pod
        (provider_page(), None),
        (
            "# TYPE kubeinfer_execution_provider gauge\n"
            'kubeinfer_execution_provider{provider="CUDAExecutionProvider"} 0\n',
            None,
        ),
    ],
)
def test_parse_execution_provider(page: str, provider: str | None) -> None:
    assert metrics.parse_metrics(page, names=ONNX).execution_provider == provider


def test_a_runtime_without_the_name_says_nothing_about_providers() -> None:
    assert metrics.parse_metrics(load("triton_t2.prom"), names=ONNX).execution_provider is None
    # Triton's names have no provider gauge: even a page with one is not read.
    assert metrics.parse_metrics(load("onnx_gpu_on_cpu.prom")).execution_provider is None


def test_pod_providers_keep_failed_scrapes_and_drop_gone_pods() -> None:
    on = metrics.RawScrape
    previous = {"a": CUDA, "b": CPU, "gone": CUDA}
    scrapes: dict[str, metrics.RawScrape | None] = {
        "a": on(execution_provider=CPU),  # changed
        "b": None,  # this scrape failed: keeps CPU
        "c": on(execution_provider=CUDA),  # new
        "d": on(),  # a runtime that does not say
    }
    assert metrics.pod_providers(previous, scrapes) == {"a": CPU, "b": CPU, "c": CUDA}


def test_provider_use_summarises_for_status() -> None:
    uses = metrics.provider_use({"p3": CUDA, "p1": CPU, "p2": CUDA, "p0": CUDA})
    assert [u.model_dump() for u in uses] == [
        {"provider": CPU, "pods": 1, "example": "p1"},
        {"provider": CUDA, "pods": 3, "example": "p0"},
    ]
    assert metrics.provider_use({}) == []


def test_queued_sums_every_answer_and_counts_a_silent_pod_at_the_mean() -> None:
    # A first scrape's gauge counts (only counters need a baseline); a pod that did not
    # answer is counted at the answering pods' mean; none answering: unknown.
    scrapes: dict[str, metrics.RawScrape | None] = {
        "a": metrics.RawScrape(pending_requests=4.0),
        "b": metrics.RawScrape(pending_requests=8.0),
        "c": None,
    }
    assert metrics.queued(scrapes) == pytest.approx(18.0)
    assert metrics.queued({"a": None}) is None
    assert metrics.queued({}) is None
