"""The local cluster's port picker never hands out a port twice (the scheduler once got etcd's)."""

from __future__ import annotations

from kubeinfer_cluster import run


def test_ports_handed_out_are_never_repeated() -> None:
    ports = [run._free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
