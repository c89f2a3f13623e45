"""The ``kubeinfer-cluster`` command: up, down, status, env and build of the local cluster, and
``images`` (build kubeinfer's container images here: ``make images``)."""

from __future__ import annotations

import argparse
import sys

from kubeinfer_cluster import build, hosttools, images, run


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
    # The monitoring tests' Prometheus and promtool (tests/integration/monitoring).
    build.build_prometheus(build.cache_root())
    return 0


def _images(args: argparse.Namespace) -> int:
    print(f"{'image':<48}{'size':>10}{'pull':>10}  {'':<8}archive")

    def report(built: images.Built, fresh: bool) -> None:
        state = f"built {built.build_seconds:.0f}s" if fresh else "cached"
        print(
            f"{built.ref:<48}{built.size_bytes / 1e6:>8.0f}MB{built.compressed_bytes / 1e6:>8.0f}MB"
            f"  {state:<8} {built.archive}",
            flush=True,
        )

    images.build_images(
        names=args.only,
        registry=args.registry,
        tag=args.tag or None,
        python_image=args.python_image or None,
        force=args.force,
        refresh_base=args.refresh_base,
        report=report,
    )
    print("size: uncompressed layers (`docker images`); pull: gzip layers (what a node downloads)")
    return 0


ACTIONS = {
    "up": _up,
    "down": _down,
    "status": _status,
    "env": _env,
    "build": _build,
    "images": _images,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kubeinfer-cluster",
        description="A local Kubernetes control plane with fake GPU nodes, all on loopback.",
    )
    parser.add_argument("action", choices=list(ACTIONS))
    parser.add_argument("--name", default="default")
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--gpus", type=int, default=8, help="nvidia.com/gpu per node")
    group = parser.add_argument_group("images", "options of `kubeinfer-cluster images`")
    group.add_argument("--only", action="append", default=[], help="build only this image")
    group.add_argument("--registry", default=images.DEFAULT_REGISTRY)
    group.add_argument("--tag", default="", help="default: the VERSION file")
    group.add_argument(
        "--python-image",
        default="",
        help="base image (e.g. python:3.11-slim-bookworm); default: one made from Debian packages",
    )
    group.add_argument("--force", action="store_true", help="rebuild even when nothing changed")
    group.add_argument("--refresh-base", action="store_true", help="rebuild the Debian base")
    args = parser.parse_args(argv)
    try:
        return ACTIONS[args.action](args)
    except (build.BuildError, run.ClusterError, images.ImageError, hosttools.HostToolError) as exc:
        print(f"kubeinfer-cluster {args.action}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
