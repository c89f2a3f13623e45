"""The ``kubeinfer`` command line: one sub-command per job, each a thin call into its module.

Imports of heavy modules happen inside each command, so ``kubeinfer cluster env`` stays fast and
the storage initializer does not import kopf.
"""

from __future__ import annotations

import argparse
import sys


def _cluster(args: argparse.Namespace) -> int:
    from kubeinfer.cluster import build, run

    try:
        if args.action == "up":
            cluster = run.up(
                args.name, nodes=run.NodeSpec(count=args.nodes, gpus_per_node=args.gpus)
            )
            print(f"Cluster {cluster.name!r} is up: {cluster.server}")
            print(f"  kubeconfig: {cluster.kubeconfig}")
            print(
                f'  use it:     eval "$(kubeinfer cluster env{_name_flag(args.name)})"; '
                "kubectl get nodes"
            )
            print(f"  stop it:    kubeinfer cluster down{_name_flag(args.name)}")
        elif args.action == "down":
            print("stopped" if run.down(args.name) else f"no cluster {args.name!r} running")
        elif args.action == "status":
            components = run.status(args.name)
            if not components:
                print(f"no cluster {args.name!r}")
                return 1
            for component, alive in components.items():
                print(f"{component:<24} {'running' if alive else 'STOPPED'}")
            return 0 if all(components.values()) else 1
        elif args.action == "env":
            print(run.env_exports(args.name), end="")
        elif args.action == "build":
            build.ensure_tools(with_helm=True)
            build.build_kubeconform(build.cache_root())
    except (build.BuildError, run.ClusterError) as exc:
        print(f"kubeinfer cluster {args.action}: {exc}", file=sys.stderr)
        return 2
    return 0


def _name_flag(name: str) -> str:
    return "" if name == "default" else f" --name {name}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Sub-commands implemented by other modules take their own argv verbatim.
    if argv and argv[0] == "storage-init":
        from kubeinfer.storage.main import storage_init_main

        return storage_init_main(argv[1:])
    if argv and argv[0] == "profile":
        from kubeinfer_onnx.profile import profile_main

        return int(profile_main(argv[1:]) or 0)
    if argv and argv[0] == "plan":
        from kubeinfer.planning_cli import plan_main

        return int(plan_main(argv[1:]) or 0)

    parser = argparse.ArgumentParser(prog="kubeinfer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    cluster = sub.add_parser("cluster", help="a local control plane with fake GPU nodes")
    cluster.add_argument("action", choices=["up", "down", "status", "env", "build"])
    cluster.add_argument("--name", default="default")
    cluster.add_argument("--nodes", type=int, default=4)
    cluster.add_argument("--gpus", type=int, default=8, help="nvidia.com/gpu per node")
    operator = sub.add_parser("operator", help="run the operator against $KUBECONFIG")
    operator.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="watch only these namespaces (repeatable); default all",
    )
    operator.add_argument("--liveness", default="http://127.0.0.1:8080/healthz")
    operator.add_argument("--metrics-port", type=int, default=8081)
    operator.add_argument(
        "--metrics-address", default="127.0.0.1", help="0.0.0.0 in a pod, so it can be scraped"
    )
    sub.add_parser("crds", help="print the CustomResourceDefinitions generated from the models")
    sub.add_parser("storage-init", help="fetch a model into the model repository")
    sub.add_parser("profile", help="profile an ONNX model at several batch sizes")
    sub.add_parser("plan", help="replicas and batching to start with, from a profile")
    args = parser.parse_args(argv)

    if args.command == "cluster":
        return _cluster(args)
    if args.command == "crds":
        from kubeinfer.core import crdgen

        print(crdgen.render_all(), end="")
        return 0
    if args.command == "operator":
        from kubeinfer.handlers import main as operator_main

        return operator_main.run(
            namespaces=args.namespace,
            liveness=args.liveness,
            metrics_port=args.metrics_port,
            metrics_address=args.metrics_address,
        )
    return 2


if __name__ == "__main__":
    sys.exit(main())
