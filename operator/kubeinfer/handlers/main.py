"""Run the operator: kopf with our handlers, the operator metrics endpoint, liveness."""

from __future__ import annotations

import logging

import kopf
from prometheus_client import start_http_server

from kubeinfer.core.config import OperatorConfig
from kubeinfer.handlers import events, lifecycle  # noqa: F401  (importing registers them)
from kubeinfer.handlers.state import OperatorState


def run(
    config: OperatorConfig,
    *,
    liveness: str,
    metrics_port: int,
    metrics_address: str = "127.0.0.1",
) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # kopf logs every successful handler call at INFO; our Events and metrics say what matters.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if metrics_port:
        start_http_server(metrics_port, addr=metrics_address)
    kopf.run(
        standalone=True,
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        liveness_endpoint=liveness,
        memo=kopf.Memo(operator=OperatorState(config=config)),
    )
    return 0
