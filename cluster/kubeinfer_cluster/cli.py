"""The ``kubeinfer-cluster`` command: up, down, status, env and build of the local cluster."""

from __future__ import annotations

import argparse
import sys

from kubeinfer_cluster import build, run


def _name_flag(name: str) -> str:
    return "" if name == "default" else f" --name {name}"


def _up(args: argparse.Namespace) -> int:
    cluster = run.up(args.name, nodes=run.NodeSpec(count=args.nodes, gpus_per_node=args.gpus))
    print(f"Cluster {cluster.name!r} is up: {cluster.server}")
    print(f"  kubeconfig: {cluster.kubeconfig}")
    flag = _name_flag(args.name)
    print(f'  use it:     eval "$(kubeinfer-cluster env{flag})"; kubectl get nodes')
    print(f"  stop it:    kubeinfer-cluster down{flag}")
    return 0


def _status(args: argparse.Namespace) -> int:
    components = run.status(args.name)
    if not components:
        print(f"no cluster {args.name!r}")
        return 1
    for component, alive in components.items():
        print(f"{component:<24} {'running' if alive else 'STOPPED'}")
    return 0 if all(components.values()) else 1


def _down(args: argparse.Namespace) -> int:
    print("stopped" if run.down(args.name) else f"no cluster {args.name!r} running")
    return 0


def _env(args: argparse.Namespace) -> int:
    print(run.env_exports(args.name), end="")
    return 0


def _build(args: argparse.Namespace) -> int:
    build.ensure_tools(with_helm=True)
    build.build_kubeconform(build.cache_root())
    return 0


ACTIONS = {"up": _up, "down": _down, "status": _status, "env": _env, "build": _build}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kubeinfer-cluster",
        description="A local Kubernetes control plane with fake GPU nodes, all on loopback.",
    )
    parser.add_argument("action", choices=list(ACTIONS))
    parser.add_argument("--name", default="default")
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--gpus", type=int, default=8, help="nvidia.com/gpu per node")
    args = parser.parse_args(argv)
    try:
        return ACTIONS[args.action](args)
    except (build.BuildError, run.ClusterError) as exc:
        print(f"kubeinfer-cluster {args.action}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
