"""The operator's configuration: one frozen object, built once at start-up, passed down.

Owns: what an operator installation decides for every InferenceService it manages (which
namespaces it watches, the storage-initializer image and the pull secrets serving pods use),
and their defaults. The command line (``kubeinfer operator``) builds it from flags the Helm
chart sets from its values; handlers, the reconciler and the pod builder receive it as an
argument, never through module globals.
"""

from __future__ import annotations

import dataclasses

# The image the chart's operator runs; also the storage initializer (entrypoint `kubeinfer`).
OPERATOR_IMAGE_REPOSITORY = "ghcr.io/kubeinfer/operator"


@dataclasses.dataclass(frozen=True, kw_only=True)
class OperatorConfig:
    # Namespaces watched; empty: the whole cluster.
    namespaces: tuple[str, ...] = ()
    # The storage initializer's image (the operator image, by default at its own version).
    init_image: str = f"{OPERATOR_IMAGE_REPOSITORY}:latest"
    # Secrets for pulling the serving and init images (air-gapped or private registries).
    image_pull_secrets: tuple[str, ...] = ()


def default_init_image(version: str) -> str:
    return f"{OPERATOR_IMAGE_REPOSITORY}:{version}"
