"""The ``kubeinfer`` command line: one sub-command per job, each a thin call into its module.

Imports of heavy modules happen inside each command, so the storage initializer does not import
kopf. The local cluster is a separate dev tool (``kubeinfer-cluster``) and model profiling
belongs to the ONNX runtime (``kubeinfer-onnx-profile``): the operator imports neither.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Sub-commands implemented by other modules take their own argv verbatim.
    if argv and argv[0] == "storage-init":
        from kubeinfer.storage.main import storage_init_main

        return storage_init_main(argv[1:])
    if argv and argv[0] == "plan":
        from kubeinfer.planning_cli import plan_main

        return int(plan_main(argv[1:]) or 0)

    parser = argparse.ArgumentParser(prog="kubeinfer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
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
    operator.add_argument(
        "--init-image",
        help="the storage initializer's image (default: the operator image at this version)",
    )
    operator.add_argument(
        "--image-pull-secret",
        action="append",
        default=[],
        help="a Secret serving pods pull their images with (repeatable)",
    )
    sub.add_parser("crds", help="print the CustomResourceDefinitions generated from the models")
    sub.add_parser("storage-init", help="fetch a model into the model repository")
    sub.add_parser("plan", help="replicas and batching to start with, from a profile")
    args = parser.parse_args(argv)

    if args.command == "crds":
        from kubeinfer.core import crdgen

        print(crdgen.render_all(), end="")
        return 0
    if args.command == "operator":
        from kubeinfer import version
        from kubeinfer.core.config import OperatorConfig, default_init_image
        from kubeinfer.handlers import main as operator_main

        config = OperatorConfig(
            namespaces=tuple(args.namespace),
            init_image=args.init_image or default_init_image(version.VERSION),
            image_pull_secrets=tuple(args.image_pull_secret),
        )
        return operator_main.run(
            config,
            liveness=args.liveness,
            metrics_port=args.metrics_port,
            metrics_address=args.metrics_address,
        )
    return 2


if __name__ == "__main__":
    sys.exit(main())
