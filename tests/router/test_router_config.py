"""config: documents and flags into a RouterConfig, and errors that name the field."""

from __future__ import annotations

import pytest

from kubeinfer_router import cli, config


def parse(doc: dict[str, object]) -> config.RouterConfig:
    return config.parse_document(doc)


def test_a_full_document() -> None:
    cfg = parse(
        {
            "listen": "127.0.0.1:9000",
            "policy": "inflight-p2c",
            "discovery": {"mode": "pods", "namespace": "ml", "httpPort": 8000},
            "variants": [
                {"name": "stable", "weight": 90, "selector": {"app": "m", "track": "stable"},
                 "deployment": "m-stable"},
                {"name": "canary", "weight": 10, "selector": {"app": "m", "track": "canary"}},
            ],
            "wake": {"kind": "kubernetes"},
            "maxQueued": 7,
            "holdTimeoutSeconds": 2.5,
        }
    )  # fmt: skip
    assert (cfg.listen_host, cfg.listen_port) == ("127.0.0.1", 9000)
    assert cfg.policy is config.Policy.INFLIGHT_P2C
    assert cfg.discovery.mode is config.DiscoveryMode.PODS
    assert cfg.discovery.http_port == "8000"
    assert [(v.name, v.weight) for v in cfg.variants] == [("stable", 90), ("canary", 10)]
    assert cfg.variants[0].selector == {"app": "m", "track": "stable"}
    assert cfg.wake.kind is config.WakeKind.KUBERNETES
    assert (cfg.max_queued, cfg.hold_timeout_s) == (7, 2.5)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({}, "variants"),
        ({"variants": [{"name": "a"}, {"name": "a"}]}, "unique"),
        ({"variants": [{"name": "a", "weight": 0}]}, "at least one weight"),
        ({"variants": [{"weight": 1}]}, "variants[0].name"),
        ({"variants": [{"name": "a"}], "maxQueued": -1}, "maxQueued"),
        ({"variants": [{"name": "a"}], "maxQueued": True}, "maxQueued"),
        ({"variants": [{"name": "a"}], "policy": "round-robin"}, "policy"),
        ({"variants": [{"name": "a"}], "listen": "nope"}, "listen"),
        ({"variants": [{"name": "a"}], "discovery": {"mode": "pods"}}, "selector"),
        ({"variants": [{"name": "a"}], "discovery": {"mode": "endpointslices"}}, "service"),
        ({"variants": [{"name": "a"}], "wake": {"kind": "webhook"}}, "wake.url"),
        ({"variants": [{"name": "a", "endpoints": ["1.2.3.4"]}]}, "endpoints[0].address"),
        ({"variants": [{"name": "a", "selector": {"k": 1}}]}, "selector"),
    ],
)
def test_errors_name_the_field(doc: dict[str, object], field: str) -> None:
    with pytest.raises(config.ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse(doc)


@pytest.mark.parametrize(
    ("flag", "variant", "doc"),
    [
        ("127.0.0.2:8000", "stable", {"address": "127.0.0.2:8000"}),
        ("127.0.0.2:8000:8002", "stable", {"address": "127.0.0.2:8000", "metricsPort": 8002}),
        (
            "canary=127.0.0.3:8000:8002",
            "canary",
            {"address": "127.0.0.3:8000", "metricsPort": 8002},
        ),
        ("[::1]:8000:8002", "stable", {"address": "[::1]:8000", "metricsPort": 8002}),
        ("[::1]:8000", "stable", {"address": "[::1]:8000"}),
    ],
)
def test_endpoint_flags(flag: str, variant: str, doc: dict[str, object]) -> None:
    assert config.endpoint_flag(flag) == (variant, doc)


@pytest.mark.parametrize("flag", ["127.0.0.1", "127.0.0.1:x", "a:1:2:3", "canary="])
def test_bad_endpoint_flags(flag: str) -> None:
    with pytest.raises(config.ConfigError):
        config.endpoint_flag(flag)


def test_flags_merge_over_the_file(tmp_path: object) -> None:
    import pathlib

    path = pathlib.Path(str(tmp_path)) / "router.yaml"
    path.write_text(
        "maxQueued: 5\npolicy: random\nvariants:\n- name: stable\n  weight: 90\n"
        "  endpoints: ['127.0.0.2:8000']\n- name: canary\n  weight: 10\n"
        "  endpoints: ['127.0.0.3:8000']\n"
    )
    args = cli.parse_args(["--config", str(path), "--max-queued", "9", "--weight", "canary=30"])
    cfg = cli.load_config(args)
    assert cfg.max_queued == 9 and cfg.policy is config.Policy.RANDOM
    assert [(v.name, v.weight) for v in cfg.variants] == [("stable", 90), ("canary", 30)]
    assert cfg.variants[1].endpoints[0].host == "127.0.0.3"
    args = cli.parse_args(["--endpoint", "127.0.0.9:1:2", "--endpoint", "c=127.0.0.8:1"])
    cfg = cli.load_config(args)
    assert [v.name for v in cfg.variants] == ["stable", "c"]
    assert cfg.variants[0].endpoints[0].metrics_port == 2
    with pytest.raises(config.ConfigError, match="no variant named"):
        cli.load_config(cli.parse_args(["--endpoint", "127.0.0.9:1", "--weight", "x=1"]))


def test_a_variant_may_name_its_own_queue_metric() -> None:
    cfg = config.parse_document(
        {
            "queueMetric": "nv_inference_pending_request_count",
            "variants": [
                {"name": "stable", "endpoints": ["127.0.0.1:8000"]},
                {"name": "canary", "endpoints": ["127.0.0.2:8000"], "queueMetric": "my_queue"},
            ],
        }
    )
    assert cfg.queue_metric_of("stable") == "nv_inference_pending_request_count"
    assert cfg.queue_metric_of("canary") == "my_queue"
    assert cfg.queue_metric_of("gone") == "nv_inference_pending_request_count"
    with pytest.raises(config.ConfigError, match=r"queueMetric: expected str"):
        config.parse_document({"variants": [{"name": "s", "queueMetric": 3}]})
