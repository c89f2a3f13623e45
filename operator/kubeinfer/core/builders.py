"""Pure builders: an InferenceService (+ its resolved runtime) -> the manifests of its children.

Owns: what the Deployment, Service and PodDisruptionBudget look like, and the per-model config
the runtime reads (carried in the pod template, see ``_storage``). Each ``build_*`` takes
parsed specs and returns a plain dict ready for server-side apply. No I/O.

One rule matters above the others: ``build_deployment`` never sets ``spec.replicas``. Replicas
have a single writer, the scaling path (autoscaler or ``spec.replicas`` when scaling is Off),
which writes through the scale subresource under its own field manager; so re-applying the
same InferenceService can never reset a scaled replica count.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from kubeinfer.core import api, rollout, storage_uri, triton
from kubeinfer.core.config import OperatorConfig

LABEL_ISVC = "kubeinfer.io/inferenceservice"
LABEL_RUNTIME = "kubeinfer.io/runtime"
MODELS_VOLUME = storage_uri.MODEL_VOLUME_NAME
DEFAULT_CONFIG = OperatorConfig()
CONFIG_VOLUME = "model-config"
# The pod template annotation that carries the per-model config; a downwardAPI volume turns it
# into the file the runtime reads.
CONFIG_ANNOTATION = "kubeinfer.io/model-config"
# Where the storage initializer reads the generated config.pbtxt, outside the repository.
GENERATED_CONFIG_DIR = "/etc/kubeinfer/model-config"
# The ONNX server's device setting (kubeinfer_onnx.device.ENV; the packages share no code).
DEVICE_ENV = "KUBEINFER_DEVICE"
# The server container's CPU limit in millicores, from the downward API (kubeinfer_onnx.cpus.
# LIMIT_ENV): with it the ONNX server can tell cores it owns where the kubelet pinned them and
# dropped the CFS quota, which is the only other place the limit shows.
CPU_LIMIT_ENV = "KUBEINFER_CPU_LIMIT_MILLICORES"
# Where a service's gRPC TLS Secret is mounted, and the variables that name its files in the
# runtime's TLS arguments (api.RuntimeGrpcTLS).
GRPC_TLS_VOLUME = "grpc-tls"
GRPC_TLS_DIR = "/etc/kubeinfer/grpc-tls"
GRPC_TLS_FILES = {"GRPC_TLS_CERT": "tls.crt", "GRPC_TLS_KEY": "tls.key", "GRPC_TLS_CA": "ca.crt"}


@dataclasses.dataclass(frozen=True)
class Owner:
    """Identity of the InferenceService the children belong to."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": api.API_VERSION,
            "kind": "InferenceService",
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


class RuntimeResolutionError(ValueError):
    """No runtime can serve this InferenceService; ``reason`` is the condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def choose_runtime(
    spec: api.InferenceServiceSpec, runtimes: dict[str, api.InferenceRuntimeSpec]
) -> tuple[str, api.InferenceRuntimeSpec]:
    """The named runtime, or the highest-priority one supporting the model format, the GPUs
    and the gRPC TLS the service asks for (name breaks ties, so the choice is deterministic)."""
    fmt = spec.model.format
    wants_gpu = spec.gpu.count > 0
    wants_tls = spec.grpc_tls is not None
    if spec.runtime is not None:
        runtime = runtimes.get(spec.runtime)
        if runtime is None:
            raise RuntimeResolutionError(
                "RuntimeNotFound", f"InferenceRuntime {spec.runtime!r} does not exist."
            )
        if fmt not in {f.name for f in runtime.formats}:
            raise RuntimeResolutionError(
                "FormatNotSupported",
                f"InferenceRuntime {spec.runtime!r} does not serve model format {fmt.value!r}.",
            )
        if wants_gpu and not runtime.supports_gpu:
            raise RuntimeResolutionError(
                "GPUNotSupported",
                f"InferenceRuntime {spec.runtime!r} cannot use GPUs but "
                f"gpu.count is {spec.gpu.count}.",
            )
        if wants_tls and runtime.grpc_tls is None:
            raise RuntimeResolutionError(
                "GrpcTLSNotSupported",
                f"InferenceRuntime {spec.runtime!r} cannot serve gRPC over TLS (it has no "
                "grpcTls arguments) but grpcTls is set.",
            )
        return spec.runtime, runtime
    candidates = [
        (f.priority, name, runtime)
        for name, runtime in runtimes.items()
        for f in runtime.formats
        if f.name == fmt
        and (runtime.supports_gpu if wants_gpu else runtime.supports_cpu)
        and (runtime.grpc_tls is not None or not wants_tls)
    ]
    if not candidates:
        needs = [*(["on GPUs"] if wants_gpu else []), *(["with gRPC TLS"] if wants_tls else [])]
        raise RuntimeResolutionError(
            "NoRuntimeForFormat",
            f"No InferenceRuntime serves model format {fmt.value!r}"
            f"{' ' + ' and '.join(needs) if needs else ''}; install one or set spec.runtime.",
        )
    candidates.sort(key=lambda c: (-c[0], c[1]))
    _, name, runtime = candidates[0]
    return name, runtime


def labels(owner: Owner, runtime_name: str) -> dict[str, str]:
    return {
        LABEL_ISVC: owner.name,
        LABEL_RUNTIME: runtime_name,
        "app.kubernetes.io/name": owner.name,
        "app.kubernetes.io/component": "predictor",
        "app.kubernetes.io/managed-by": "kubeinfer",
    }


def selector(owner: Owner) -> dict[str, str]:
    return {LABEL_ISVC: owner.name}


def selector_string(owner: Owner) -> str:
    return ",".join(f"{k}={v}" for k, v in selector(owner).items())


def child_name(owner: Owner) -> str:
    return f"{owner.name}-predictor"


def config_map_name(owner: Owner) -> str:
    return f"{owner.name}-model-config"


def _metadata(owner: Owner, runtime_name: str, name: str | None = None) -> dict[str, Any]:
    return {
        "name": name or child_name(owner),
        "namespace": owner.namespace,
        "labels": labels(owner, runtime_name),
        "ownerReferences": [owner.reference()],
    }


def build_model_config(
    spec: api.InferenceServiceSpec, runtime: api.InferenceRuntimeSpec
) -> tuple[str, str]:
    """(file name, content) of the per-model config that carries batching to the runtime."""
    b = spec.batching
    if runtime.batching_config is api.BatchingConfigKind.TRITON_PBTXT:
        return "config.pbtxt", triton.render_config(spec)
    config = {
        "max_batch_size": b.max_batch_size,
        "max_queue_delay_microseconds": b.max_queue_delay_microseconds,
        "preferred_batch_sizes": list(b.preferred_batch_sizes),
    }
    return "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n"


def _resources(spec: api.InferenceServiceSpec) -> dict[str, Any]:
    requests = {k: v for k, v in spec.resources.requests.model_dump().items() if v is not None}
    limits = {k: v for k, v in spec.resources.limits.model_dump().items() if v is not None}
    if spec.gpu.count > 0:
        # Extended resources cannot be overcommitted: the limit is the request.
        limits[spec.gpu.resource_name] = str(spec.gpu.count)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _guaranteed(spec: api.InferenceServiceSpec) -> dict[str, str] | None:
    """The server's CPU and memory limits when its resources make the pod Guaranteed (each
    has a limit, and a request that is unset, defaulting to the limit, or equal to it); else
    None. The other containers must then match (_init_resources)."""
    requests, limits = spec.resources.requests, spec.resources.limits
    out: dict[str, str] = {}
    for name in ("cpu", "memory"):
        limit, request = getattr(limits, name), getattr(requests, name)
        if limit is None:
            return None
        if request is not None and api.quantity(request) != api.quantity(limit):
            return None
        out[name] = limit
    return out


def _init_resources(spec: api.InferenceServiceSpec) -> dict[str, Any]:
    """The storage initializer's resources. Kubernetes calls a pod Guaranteed only when every
    container, init containers included, has requests equal to limits; so a server asked for
    that gets an initializer with its own figures, or the init container alone would make the
    pod Burstable, and the static CPU manager pins only Guaranteed pods' whole CPUs. That
    costs no room on the node: a pod requests the larger of its largest init container's and
    the sum of its containers' resources."""
    guaranteed = _guaranteed(spec)
    if guaranteed is not None:
        return {"requests": dict(guaranteed), "limits": dict(guaranteed)}
    return {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}}


_RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _storage(
    owner: Owner,
    spec: api.InferenceServiceSpec,
    runtime: api.InferenceRuntimeSpec,
    filename: str,
    config: OperatorConfig,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, init containers, runtime container mounts) that put the model in place.

    ``storage_uri.build_storage_plan`` decides: a read-only claim mount (pvc://, no copy) or
    the storage initializer filling an emptyDir. Added here: the init image and its limits, a
    writable /tmp, and the generated config. That is a file of a downwardAPI volume, projected
    from the pod template's ``CONFIG_ANNOTATION`` (not a ConfigMap of its own: one object and
    one API write less per service, nothing to order against the Deployment, and a config
    change is a template change, so it rolls the pods by itself). It is mounted at
    ``<model>/<file>`` for a claim (nothing else can be there); for a fetched model the storage
    initializer installs it, merged over a config.pbtxt the model ships, so the mount never
    hides the user's file.
    """
    repo = runtime.model_repository_path
    plan = storage_uri.build_storage_plan(
        spec.model.storage_uri,
        model_name=spec.model.name,
        version=spec.model.version,
        repository_path=repo,
        credentials_secret=spec.model.credentials_secret,
    )
    tmp = {"name": "tmp", "mountPath": "/tmp"}
    volumes: list[dict[str, Any]] = [
        *plan.volumes,
        {"name": "tmp", "emptyDir": {}},
        {
            "name": CONFIG_VOLUME,
            "downwardAPI": {
                "items": [
                    {
                        "path": filename,
                        "fieldRef": {"fieldPath": f"metadata.annotations['{CONFIG_ANNOTATION}']"},
                    }
                ]
            },
        },
    ]
    mounts: list[dict[str, Any]] = [*plan.runtime_volume_mounts, tmp]
    merge_config = filename == "config.pbtxt" and plan.init_container is not None
    if not merge_config:
        mounts.append(
            {
                "name": CONFIG_VOLUME,
                "mountPath": f"{repo}/{spec.model.name}/{filename}",
                "subPath": filename,
                "readOnly": True,
            }
        )
    if plan.init_container is None:
        return volumes, [], mounts
    container: dict[str, Any] = {
        **plan.init_container,
        "image": config.init_image,
        "args": [
            *plan.init_container["args"],
            f"--file-name={triton.model_file_name(spec.model.format)}",
        ],
        "volumeMounts": [*plan.init_container["volumeMounts"], tmp],
        "resources": _init_resources(spec),
        "securityContext": _RESTRICTED_CONTAINER,
    }
    if merge_config:
        container["args"].append(f"--config={GENERATED_CONFIG_DIR}/{filename}")
        container["volumeMounts"].append(
            {"name": CONFIG_VOLUME, "mountPath": GENERATED_CONFIG_DIR, "readOnly": True}
        )
    return volumes, [container], mounts


def server_image(spec: api.InferenceServiceSpec, runtime: api.InferenceRuntimeSpec) -> str:
    """The runtime's GPU image for a service given GPUs (when it has one): the spec's
    gpu.count chooses the variant, so CPU services keep the small image."""
    if spec.gpu.count > 0 and runtime.gpu_image:
        return runtime.gpu_image
    return runtime.image


def _server_container(
    spec: api.InferenceServiceSpec,
    runtime: api.InferenceRuntimeSpec,
    mounts: list[dict[str, Any]],
) -> dict[str, Any]:
    """The serving container: the runtime's image and args, ports, probes, drain, resources."""
    ports = runtime.ports
    container: dict[str, Any] = {
        "name": "server",
        "image": server_image(spec, runtime),
        "args": list(runtime.args),
        "env": [
            {"name": "MODEL_REPOSITORY", "value": runtime.model_repository_path},
            {"name": "MODEL_NAME", "value": spec.model.name},
            {"name": "HTTP_PORT", "value": str(ports.http)},
            {"name": "GRPC_PORT", "value": str(ports.grpc)},
            {"name": "METRICS_PORT", "value": str(ports.metrics)},
            # Where the model computes, from gpu.count: gpu makes kubeinfer's ONNX server ask
            # for CUDA/TensorRT (and report it when it ends on CPU); cpu keeps a pod given no
            # GPU off the node's GPUs even in the gpu image. Other runtimes ignore it.
            {"name": DEVICE_ENV, "value": "gpu" if spec.gpu.count > 0 else "cpu"},
        ],
        "ports": [
            {"name": "http", "containerPort": ports.http, "protocol": "TCP"},
            {"name": "grpc", "containerPort": ports.grpc, "protocol": "TCP"},
            {"name": "metrics", "containerPort": ports.metrics, "protocol": "TCP"},
        ],
        # Probed every second while the model loads: a new replica takes traffic (and counts
        # as capacity for the autoscaler) within a second of being ready, not up to a period
        # later; a local HTTP GET a second is nothing next to a model load.
        "startupProbe": {
            "httpGet": {"path": runtime.probes.readiness_path, "port": "http"},
            "periodSeconds": 1,
            "failureThreshold": runtime.probes.startup_timeout_seconds,
        },
        "readinessProbe": {
            "httpGet": {"path": runtime.probes.readiness_path, "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": runtime.probes.liveness_path, "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        # Endpoints drop the pod while it sleeps, then SIGTERM lets the server drain.
        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
        # A server that exits on a bad model leaves its log tail (Triton's load error) in
        # lastState.terminated.message, which status quotes (core.runtime_failures).
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
        "securityContext": _RESTRICTED_CONTAINER,
    }
    if runtime.command:
        container["command"] = list(runtime.command)
    if spec.grpc_tls is not None and runtime.grpc_tls is not None:
        container["env"] += [
            {"name": var, "value": f"{GRPC_TLS_DIR}/{file}"} for var, file in GRPC_TLS_FILES.items()
        ] + _grpc_tls_checks(spec.grpc_tls)
        container["args"] += runtime.grpc_tls.args
        if spec.grpc_tls.mutual:
            container["args"] += runtime.grpc_tls.mutual_args
        container["volumeMounts"] = [
            *mounts,
            {"name": GRPC_TLS_VOLUME, "mountPath": GRPC_TLS_DIR, "readOnly": True},
        ]
    resources = _resources(spec)
    if resources:
        container["resources"] = resources
    if spec.resources.limits.cpu is not None:
        # Only with a limit: without one the downward API would give the node's allocatable.
        container["env"].append(
            {
                "name": CPU_LIMIT_ENV,
                "valueFrom": {
                    "resourceFieldRef": {
                        "containerName": container["name"],
                        "resource": "limits.cpu",
                        "divisor": "1m",
                    }
                },
            }
        )
    return container


def _grpc_tls_volume(tls: api.GrpcTLSSpec) -> dict[str, Any]:
    """The service's TLS Secret as files, readable by the server's group (fsGroup) and no one
    else. Optional for the mount only: the container's `_grpc_tls_checks` are what stop it
    from starting without the Secret, so the kubelet says why (a required secret volume that is
    missing leaves the pod in ContainerCreating, with the reason only in an Event). Either way
    no pod serves plaintext: the runtime is told to serve TLS from these files."""
    return {
        "name": GRPC_TLS_VOLUME,
        "secret": {"secretName": tls.secret_name, "defaultMode": 0o440, "optional": True},
    }


def _grpc_tls_checks(tls: api.GrpcTLSSpec) -> list[dict[str, Any]]:
    """Environment variables that reference the Secret's public keys (tls.crt, and ca.crt for
    mutual TLS; never tls.key): the kubelet creates no container while one is missing, and
    reports CreateContainerConfigError naming the Secret or the key, which status quotes."""
    keys = ["tls.crt", *(["ca.crt"] if tls.mutual else [])]
    return [
        {
            "name": f"GRPC_TLS_SECRET_{key.split('.')[0].upper()}",
            "valueFrom": {"secretKeyRef": {"name": tls.secret_name, "key": key}},
        }
        for key in keys
    ]


def _placement(owner: Owner, spec: api.InferenceServiceSpec) -> dict[str, Any]:
    """Where the pods may run: node selector (GPU product), tolerations, spread, priority."""
    node_selector = dict(spec.scheduling.node_selector)
    tolerations = [
        t.model_dump(by_alias=True, exclude_none=True) for t in spec.scheduling.tolerations
    ]
    if spec.gpu.count > 0:
        if spec.gpu.product:
            node_selector["nvidia.com/gpu.product"] = spec.gpu.product
        # GPU nodes are commonly tainted nvidia.com/gpu:NoSchedule by the GPU operator.
        tolerations.append({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"})
    spread = spec.scheduling.topology_spread
    out: dict[str, Any] = {
        "topologySpreadConstraints": [
            {
                "maxSkew": spread.max_skew,
                "topologyKey": spread.topology_key,
                "whenUnsatisfiable": spread.when_unsatisfiable,
                "labelSelector": {"matchLabels": selector(owner)},
            }
        ],
    }
    if node_selector:
        out["nodeSelector"] = node_selector
    if tolerations:
        out["tolerations"] = tolerations
    if spec.scheduling.priority_class_name:
        out["priorityClassName"] = spec.scheduling.priority_class_name
    return out


def build_deployment(
    owner: Owner,
    spec: api.InferenceServiceSpec,
    runtime_name: str,
    runtime: api.InferenceRuntimeSpec,
    config: OperatorConfig = DEFAULT_CONFIG,
    *,
    strategy: api.RolloutStatus | None = None,
) -> dict[str, Any]:
    """The Deployment; ``strategy`` is the rollout decision (``core.rollout``), recorded in
    annotations beside the strategy it sets; without one, the default for the service."""
    decision = strategy or rollout.default(spec.gpu.count)
    filename, content = build_model_config(spec, runtime)
    volumes, init, mounts = _storage(owner, spec, runtime, filename, config)
    if spec.grpc_tls is not None and runtime.grpc_tls is not None:  # as the container's mount
        volumes.append(_grpc_tls_volume(spec.grpc_tls))
    pod_spec: dict[str, Any] = {
        "containers": [_server_container(spec, runtime, mounts)],
        "volumes": volumes,
        "terminationGracePeriodSeconds": 30,
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": runtime.run_as_user,
            "runAsGroup": runtime.run_as_user,
            "fsGroup": runtime.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        **_placement(owner, spec),
    }
    if init:
        pod_spec["initContainers"] = init
    if config.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in config.image_pull_secrets]
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(runtime.ports.metrics),
        "prometheus.io/path": "/metrics",
        # The runtime's config file (the model-config volume projects it): a change is a
        # template change, so it rolls the pods, as a config read once at start needs.
        CONFIG_ANNOTATION: content,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            **_metadata(owner, runtime_name),
            "annotations": rollout.to_annotations(decision),
        },
        "spec": {
            "selector": {"matchLabels": selector(owner)},
            "strategy": rollout.strategy_spec(decision),
            "progressDeadlineSeconds": rollout.progress_deadline_seconds(runtime),
            "template": {
                "metadata": {
                    "labels": {**spec.pod_metadata.labels, **labels(owner, runtime_name)},
                    "annotations": {**spec.pod_metadata.annotations, **annotations},
                },
                "spec": pod_spec,
            },
        },
    }


def build_service(
    owner: Owner,
    runtime_name: str,
    runtime: api.InferenceRuntimeSpec,
    *,
    router_selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The Service clients call. With ``router_selector`` (spec.router.enabled) it selects
    the router pods and carries HTTP only (the router proxies KServe v2 HTTP; its port is
    named http too); the serving pods stay reachable for the router by pod IP."""
    ports = runtime.ports
    if router_selector is not None:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(owner, runtime_name),
            "spec": {
                "type": "ClusterIP",
                "selector": router_selector,
                "ports": [
                    {"name": "http", "port": ports.http, "targetPort": "http", "protocol": "TCP"}
                ],
            },
        }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, runtime_name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(owner),
            "ports": [
                {"name": "http", "port": ports.http, "targetPort": "http", "protocol": "TCP"},
                {
                    "name": "grpc",
                    "port": ports.grpc,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                },
                {
                    "name": "metrics",
                    "port": ports.metrics,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }


def build_pdb(
    owner: Owner, spec: api.InferenceServiceSpec, runtime_name: str
) -> dict[str, Any] | None:
    """A PDB only when at least two replicas are promised; one replica cannot stay up."""
    if spec.scaling.min_replicas < 2 or spec.stopped:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(owner, runtime_name),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(owner)}},
    }


def service_url(
    owner: Owner, spec: api.InferenceServiceSpec, runtime: api.InferenceRuntimeSpec
) -> str:
    return (
        f"http://{child_name(owner)}.{owner.namespace}.svc:{runtime.ports.http}"
        f"/v2/models/{spec.model.name}"
    )


def initial_replicas(spec: api.InferenceServiceSpec) -> int:
    """Replicas the scaling path sets when it first sees the Deployment. A service that may
    scale to zero still starts with one: its first replica proves the model loads (Ready),
    and the autoscaler takes it away after the idle period."""
    if spec.stopped:
        return 0
    if spec.scaling.mode is api.ScalingMode.OFF:
        return spec.replicas if spec.replicas is not None else spec.scaling.min_replicas
    return max(spec.scaling.min_replicas, 1)


def clamp_replicas(spec: api.InferenceServiceSpec, current: int) -> int:
    """What the reconciler enforces on replicas: stopped -> 0, Off -> spec.replicas, else the
    current value inside [min, max] (the autoscaler moves it within the bounds)."""
    if spec.stopped:
        return 0
    if spec.scaling.mode is api.ScalingMode.OFF:
        return spec.replicas if spec.replicas is not None else current
    return max(spec.scaling.min_replicas, min(spec.scaling.max_replicas, current))
