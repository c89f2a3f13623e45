"""Writing scale-in marks: which API answers are refusals the autoscaler backs off from."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from kubeinfer.clients import kube


def answer(status: int, reason: str = "", message: str = "") -> ApiException:
    exc = ApiException(status=status, reason="HTTP reason")
    exc.body = json.dumps({"kind": "Status", "reason": reason, "message": message})
    return exc


@pytest.mark.parametrize(
    "status,reason,kind",
    [
        (409, "Conflict", kube.Conflict),
        (422, "Invalid", kube.Refused),
        (403, "Forbidden", kube.Refused),  # an admission webhook's no
        (400, "BadRequest", kube.Refused),
    ],
)
def test_a_refused_write_names_the_servers_reason(
    monkeypatch: pytest.MonkeyPatch, status: int, reason: str, kind: type[kube.Refused]
) -> None:
    def refuse(*_: Any, **__: Any) -> None:
        raise answer(status, reason, 'metadata.annotations: Invalid value: "x"')

    monkeypatch.setattr(kube, "_request", refuse)
    with pytest.raises(kind) as caught:
        kube.apply_marks("ns", "p", {"k": "v"}, uid="u")
    assert type(caught.value) is kind
    assert caught.value.status == status
    assert caught.value.why == f'{reason}: metadata.annotations: Invalid value: "x"'


@pytest.mark.parametrize("status", [429, 500, 503])
def test_a_transient_failure_is_not_a_refusal(monkeypatch: pytest.MonkeyPatch, status: int) -> None:
    # Not backed off from: the tick fails, is logged, and the next one tries again.
    def fail(*_: Any, **__: Any) -> None:
        raise answer(status)

    monkeypatch.setattr(kube, "_request", fail)
    with pytest.raises(ApiException):
        kube.apply_marks("ns", "p", {}, uid="u")


def test_a_pod_gone_is_no_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    def gone(*_: Any, **__: Any) -> None:
        raise answer(404, "NotFound")

    monkeypatch.setattr(kube, "_request", gone)
    assert kube.apply_marks("ns", "p", {}, uid="u") is False
