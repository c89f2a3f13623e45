"""The local cluster's port picker never hands out a port twice (the scheduler once got etcd's)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from kubeinfer_cluster import run


def test_ports_handed_out_are_never_repeated() -> None:
    ports = [run._free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)


def test_a_port_the_kernel_offers_again_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel's repeat, made certain: it offers port 1 twice, then 2 (ports that binding to
    port 0 never gives, so no earlier pick in this process can hold them)."""
    offered = iter([1, 1, 2])

    class Probe:
        def __enter__(self) -> Probe:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def bind(self, address: Any) -> None:
            self.port = next(offered)

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(socket, "socket", Probe)
    assert [run._free_port(), run._free_port()] == [1, 2]
