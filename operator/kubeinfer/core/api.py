"""The kubeinfer.io/v1alpha1 API, defined once: InferenceService and InferenceRuntime.

Owns: every field, default, bound and cross-field rule of the API. The CRDs in crds/ are
generated from these models (``core.crdgen``), so schema validation, CEL rules and defaults in
the cluster are the same ones the operator parses with. Pure data: no I/O here.

Cross-field rules are CEL expressions attached with ``_cel`` (rendered as
``x-kubernetes-validations``); ``model_validator`` repeats the ones that matter for objects
parsed outside the API server (tests, ``kubeinfer plan``).
"""

from __future__ import annotations

import enum
import itertools
from decimal import Decimal
from typing import Annotated, Any

import pydantic
from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from kubeinfer.core import storage_uri

GROUP = "kubeinfer.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
# An InferenceService's (namespace, name): what the handlers, the work queue, the autoscaler,
# the reconciler and the store key their per-service entries by.
ServiceKey = tuple[str, str]

STORAGE_URI_PATTERN = r"^(pvc|https|http|s3|file)://.+"
GPU_RESOURCE_PATTERN = r"^nvidia\.com/(gpu|mig-[1-7]g\.[0-9]+gb)$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


def _cel(*rules: tuple[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]}


class _Model(pydantic.BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are rejected, not dropped."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class ModelFormat(enum.StrEnum):
    ONNX = "onnx"
    TENSORRT = "tensorrt"
    PYTORCH = "pytorch"
    TENSORFLOW = "tensorflow"
    PYTHON = "python"


class TensorDatatype(enum.StrEnum):
    """The v2 inference protocol's tensor datatypes (what requests carry)."""

    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BF16 = "BF16"
    BYTES = "BYTES"


class GPUParallelism(enum.StrEnum):
    DATA = "Data"  # each of the replica's GPUs holds a whole copy of the model
    MODEL = "Model"  # one copy spread over all of the replica's GPUs (the model shards itself)


class VersionPolicyKind(enum.StrEnum):
    LATEST = "Latest"
    ALL = "All"
    SPECIFIC = "Specific"


class ScalingMode(enum.StrEnum):
    AUTO = "Auto"
    RECOMMEND = "Recommend"
    OFF = "Off"


class ScalingMetric(enum.StrEnum):
    QUEUE_DEPTH = "QueueDepth"
    QUEUE_TIME = "QueueTime"
    REQUEST_RATE = "RequestRate"


class VersionPolicy(_Model):
    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "self.policy != 'Specific' || size(self.versions) > 0",
                "versionPolicy.versions must list at least one version when policy is Specific",
            ),
        )
    )
    policy: VersionPolicyKind = VersionPolicyKind.LATEST
    versions: Annotated[list[Annotated[int, Field(ge=1)]], Field(max_length=16)] = []


class TensorSpec(_Model):
    """One input or output tensor of the model: name, datatype and shape."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "self.dims.all(d, d == -1 || d >= 1)",
                "dims entries must be -1 (any size) or positive",
            ),
        )
    )
    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:/-]+$")]
    datatype: TensorDatatype
    dims: Annotated[
        list[Annotated[int, Field(ge=-1, le=2_147_483_647)]],
        Field(
            min_length=1,
            max_length=8,
            description="Shape of one request's tensor without the batch dimension when "
            "batching.maxBatchSize > 0; -1 for a dimension of any size.",
        ),
    ]

    @pydantic.field_validator("dims")
    @classmethod
    def _dims(cls, dims: list[int]) -> list[int]:
        if 0 in dims:
            raise ValueError("dims entries must be -1 (any size) or positive")
        return dims


# Formats whose runtime cannot read the tensor signature from the model file (Triton's
# pytorch and python backends), so the spec must state it.
FORMATS_NEEDING_SIGNATURE = frozenset({ModelFormat.PYTORCH, ModelFormat.PYTHON})


class ModelSpec(_Model):
    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "!(self.format in ['pytorch', 'python']) || "
                "(size(self.inputs) > 0 && size(self.outputs) > 0)",
                "model.inputs and model.outputs are required for model.format pytorch and "
                "python: Triton cannot read them from the model",
            ),
            (
                "!self.storageUri.startsWith('http://') || "
                "self.storageUri.matches('^http://(127\\\\.[0-9.]+|localhost)([:/]|$)')",
                "model.storageUri: http:// is accepted for loopback hosts only; use https:// "
                "(the storage initializer refuses to fetch a model over plain HTTP)",
            ),
            (
                "self.format != 'tensorflow' || !self.storageUri.startsWith('http')",
                "model.storageUri must be a directory (s3://, pvc://, file://) for model.format "
                "tensorflow: a SavedModel is a directory, an http(s) URL is one file",
            ),
        )
    )
    name: Annotated[
        str,
        Field(
            min_length=1,
            max_length=63,
            pattern=DNS_LABEL_PATTERN,
            description="Model name in the repository and the v2 URL.",
        ),
    ]
    format: ModelFormat
    storage_uri: Annotated[
        str,
        Field(
            max_length=2048,
            pattern=STORAGE_URI_PATTERN,
            description="pvc://CLAIM/path, https://, s3://bucket/key or file:// (development).",
        ),
    ]
    version: Annotated[
        int, Field(ge=1, le=1_000_000, description="Version directory the fetched model lands in.")
    ] = 1
    version_policy: VersionPolicy = VersionPolicy()
    credentials_secret: Annotated[
        str | None,
        Field(
            max_length=253,
            description="Secret with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
            "HTTP_AUTHORIZATION, passed to the storage initializer only.",
        ),
    ] = None
    inputs: Annotated[
        list[TensorSpec],
        Field(
            max_length=64,
            description="The model's input tensors, written into Triton's config. Required "
            "for formats pytorch and python; ONNX and TensorRT models describe themselves.",
        ),
    ] = []
    outputs: Annotated[list[TensorSpec], Field(max_length=64)] = []

    @pydantic.field_validator("storage_uri")
    @classmethod
    def _fetchable(cls, value: str) -> str:
        # The storage initializer's own grammar: a URI it would refuse never reaches a pod.
        storage_uri.parse_storage_uri(value)
        return value

    @pydantic.model_validator(mode="after")
    def _signature(self) -> ModelSpec:
        if self.format in FORMATS_NEEDING_SIGNATURE and not (self.inputs and self.outputs):
            raise ValueError(
                "model.inputs and model.outputs are required for model.format "
                f"{self.format.value}: Triton cannot read them from the model"
            )
        if self.format is ModelFormat.TENSORFLOW and self.storage_uri.startswith("http"):
            raise ValueError(
                "model.storageUri must be a directory (s3://, pvc://, file://) for "
                "model.format tensorflow"
            )
        return self


class GPUSpec(_Model):
    count: Annotated[int, Field(ge=0, le=64)] = 0
    resource_name: Annotated[str, Field(max_length=64, pattern=GPU_RESOURCE_PATTERN)] = (
        "nvidia.com/gpu"
    )
    product: Annotated[
        str | None,
        Field(max_length=128, description="nvidia.com/gpu.product node label to require."),
    ] = None
    parallelism: Annotated[
        GPUParallelism,
        Field(
            description="Data: one whole copy of the model per GPU of the replica. Model: one "
            "copy that places itself across all of them (tensor parallel; format python)."
        ),
    ] = GPUParallelism.DATA


class ResourceList(_Model):
    cpu: Annotated[str | None, Field(pattern=r"^[0-9]+(\.[0-9]+)?m?$")] = None
    memory: Annotated[str | None, Field(pattern=r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?)?$")] = None


# The suffixes the patterns above admit, as Kubernetes reads them.
_QUANTITY_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate("KMGTPE")},
    **{s + "i": Decimal(1024) ** (i + 1) for i, s in enumerate("KMGTPE")},
}


def quantity(text: str) -> Decimal:
    """A ResourceList value in cores or bytes: "2000m" and "2" are equal, as "1Gi" and
    "1024Mi" are (Kubernetes compares quantities, not their spellings)."""
    number = text.rstrip("mKMGTPEi")
    return Decimal(number) * _QUANTITY_SUFFIXES[text[len(number) :]]


class Resources(_Model):
    requests: ResourceList = ResourceList()
    limits: ResourceList = ResourceList()


class BatchingSpec(_Model):
    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "self.preferredBatchSizes.all(b, b <= self.maxBatchSize)",
                "batching.preferredBatchSizes must not exceed maxBatchSize",
            ),
        )
    )
    max_batch_size: Annotated[int, Field(ge=0, le=4096)] = 8
    max_queue_delay_microseconds: Annotated[int, Field(ge=0, le=10_000_000)] = 0
    preferred_batch_sizes: Annotated[list[Annotated[int, Field(ge=1)]], Field(max_length=16)] = []


# The shortest forecast period: its buckets (core/scaling/season.py, 288 per period) are then
# about one 2-second scrape wide; shorter ones would be empty between scrapes.
MIN_FORECAST_PERIOD_S = 600
FORECAST_PERIOD_RULE = (
    f"scaling.forecastPeriodSeconds must be 0 (off) or at least {MIN_FORECAST_PERIOD_S}"
)


class ScalingSpec(_Model):
    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "self.minReplicas <= self.maxReplicas",
                "scaling.minReplicas must be less than or equal to scaling.maxReplicas",
            ),
            (
                f"self.forecastPeriodSeconds == 0 || "
                f"self.forecastPeriodSeconds >= {MIN_FORECAST_PERIOD_S}",
                FORECAST_PERIOD_RULE,
            ),
        )
    )
    min_replicas: Annotated[
        int,
        Field(
            ge=0,
            le=1000,
            description="0 scales to zero after scaleToZeroAfterSeconds without demand; it "
            "needs router.enabled (the router holds requests at zero and wakes the service).",
        ),
    ] = 1
    max_replicas: Annotated[int, Field(ge=1, le=1000)] = 4
    mode: ScalingMode = ScalingMode.AUTO
    metric: ScalingMetric = ScalingMetric.QUEUE_DEPTH
    target: Annotated[
        float,
        Field(
            gt=0,
            le=1e9,
            description="Per replica: requests queued or executing (QueueDepth), queue "
            "milliseconds (QueueTime) or requests per second (RequestRate).",
        ),
    ] = 8.0
    stable_window_seconds: Annotated[int, Field(ge=6, le=3600)] = 60
    scale_down_delay_seconds: Annotated[
        int,
        Field(
            ge=0,
            le=3600,
            description="Scale down only to the highest recommendation of this many seconds, "
            "and of at least two learned cold starts (a replica given back for a shorter dip "
            "could not be Ready again in time).",
        ),
    ] = 60
    gpu_utilization_veto: Annotated[
        float | None,
        Field(
            gt=0,
            le=1,
            description="GPU utilization (0-1) at or above which scale-down is vetoed. Off by "
            "default: NVML utilization is the share of time a kernel runs, near 1 with dynamic "
            "batching at a fraction of a replica's capacity, so a veto would hold replicas "
            "long after the load left (bench/autoscaling measured 1.2-1.9x the cost).",
        ),
    ] = None
    fallback_replicas: Annotated[
        int | None,
        Field(ge=1, le=1000, description="Replicas to hold after repeated metric failures."),
    ] = None
    scale_to_zero_after_seconds: Annotated[
        int,
        Field(
            ge=5,
            le=86400,
            description="With minReplicas 0: seconds without demand (nothing in flight or "
            "queued on the pods, no request reaching the router) before the last replica goes.",
        ),
    ] = 300
    burst_headroom: Annotated[
        bool,
        Field(
            description="Keep spare replicas in proportion to how bursty the load has been: "
            "the current load times the 95th percentile of how much demand grew within one "
            "cold start over the last 15 minutes (1x on a smooth load); and while the load "
            "has been calm for minutes and pods start quickly, run somewhat hotter than the "
            "target (QueueDepth and RequestRate; status shows calmTargetFactor), which "
            "assumes a target planned with room for bursts (kubeinfer plan). Off: the target "
            "alone, for a target that is a hard limit."
        ),
    ] = True
    forecast_period_seconds: Annotated[
        int,
        Field(
            ge=0,
            le=7 * 86400,
            description="The demand repeats with this period (a day by default): kubeinfer "
            "remembers the last period's demand in 5-minute buckets (1/288 of it) and, while "
            "the last four hours (1/6 of it) tracked it closely (a day may run up to half an "
            "hour, 6 buckets, early or late), scales ahead of the rise it had within the next "
            "cold start and runs hotter than the target with a short "
            "scale-down window (status shows forecastDemand and forecastError). The reactive "
            "rules return as soon as today stops tracking. 0: off.",
        ),
    ] = 86400

    @pydantic.model_validator(mode="after")
    def _forecast_period(self) -> ScalingSpec:
        period = self.forecast_period_seconds
        if 0 < period < MIN_FORECAST_PERIOD_S:
            raise ValueError(FORECAST_PERIOD_RULE)
        return self


class Toleration(_Model):
    key: Annotated[str | None, Field(max_length=316)] = None
    operator: Annotated[str | None, Field(pattern=r"^(Exists|Equal)$")] = None
    value: Annotated[str | None, Field(max_length=63)] = None
    effect: Annotated[str | None, Field(pattern=r"^(NoSchedule|PreferNoSchedule|NoExecute)$")] = (
        None
    )
    toleration_seconds: int | None = None


class TopologySpread(_Model):
    max_skew: Annotated[int, Field(ge=1, le=100)] = 1
    topology_key: Annotated[str, Field(max_length=316)] = "kubernetes.io/hostname"
    when_unsatisfiable: Annotated[str, Field(pattern=r"^(DoNotSchedule|ScheduleAnyway)$")] = (
        "ScheduleAnyway"
    )


class SchedulingSpec(_Model):
    node_selector: Annotated[dict[str, str], Field(max_length=32)] = {}
    tolerations: Annotated[list[Toleration], Field(max_length=32)] = []
    priority_class_name: Annotated[str | None, Field(max_length=253)] = None
    topology_spread: TopologySpread = TopologySpread()


class PodMetadata(_Model):
    """Extra labels and annotations for the serving pods (service mesh, cost allocation...).
    kubeinfer's own labels win on a clash, since the selector depends on them."""

    labels: Annotated[dict[str, str], Field(max_length=32)] = {}
    annotations: Annotated[dict[str, str], Field(max_length=32)] = {}


class GrpcTLSSpec(_Model):
    """gRPC over TLS (HTTP, the probes and the metrics port stay plaintext, as Triton serves
    them): the serving pods mount a kubernetes.io/tls Secret (cert-manager writes one) and the
    runtime gets its TLS arguments (``InferenceRuntimeSpec.grpc_tls``)."""

    secret_name: Annotated[
        str,
        Field(
            min_length=1,
            max_length=253,
            pattern=DNS_SUBDOMAIN_PATTERN,
            description="Secret in the service's namespace with tls.crt and tls.key (PEM), "
            "and ca.crt when mutual.",
        ),
    ]
    mutual: Annotated[
        bool,
        Field(
            description="Also require client certificates, signed by the Secret's ca.crt.",
        ),
    ] = False


class EndpointPickerFailureMode(enum.StrEnum):
    """What a gateway does when the Endpoint Picker does not answer (the upstream enum)."""

    FAIL_CLOSE = "FailClose"
    FAIL_OPEN = "FailOpen"


class InferencePoolSpec(_Model):
    """The InferencePool (Gateway API Inference Extension, inference.networking.k8s.io/v1)
    kubeinfer creates for the service when that CRD is installed."""

    enabled: Annotated[
        bool, Field(description="Create the InferencePool when its CRD is installed.")
    ] = True
    endpoint_picker: Annotated[
        str | None,
        Field(
            max_length=63,
            pattern=DNS_LABEL_PATTERN,
            description="Endpoint Picker Service in this namespace; default <name>-epp.",
        ),
    ] = None
    endpoint_picker_port: Annotated[int, Field(ge=1, le=65535)] = 9002
    failure_mode: EndpointPickerFailureMode = EndpointPickerFailureMode.FAIL_CLOSE


class RouterPolicy(enum.StrEnum):
    """How kubeinfer-router picks a pod (its `policy` setting)."""

    LEAST_WAIT = "least-wait"  # power of two choices over in-flight + queued per capacity
    INFLIGHT_P2C = "inflight-p2c"  # power of two choices over the router's in-flight only
    RANDOM = "random"  # what a Service through kube-proxy does; a baseline


class RouterSpec(_Model):
    """kubeinfer-router in front of the serving pods: queue-aware routing, and the requests
    held at zero replicas (needed for scaling.minReplicas 0)."""

    enabled: Annotated[
        bool,
        Field(
            description="Deploy <name>-router and point the service's Service at it; the "
            "serving pods stay reachable for the router by pod IP."
        ),
    ] = False
    policy: RouterPolicy = RouterPolicy.LEAST_WAIT
    max_queued: Annotated[
        int,
        Field(
            ge=1,
            le=100_000,
            description="Requests held while no replica is Ready; more are answered 429.",
        ),
    ] = 100
    hold_timeout_seconds: Annotated[
        int,
        Field(
            ge=1,
            le=3600,
            description="How long a held request waits for a Ready replica, then 503.",
        ),
    ] = 120
    replicas: Annotated[
        int,
        Field(
            ge=1,
            le=10,
            description="Router pods. Two or more survive a node's loss or a rollout without a "
            "gap (a PodDisruptionBudget keeps one up, spread over nodes); each holds its own "
            "requests at zero (maxQueued per router) and any of them may write the 0 -> 1.",
        ),
    ] = 1


class CanaryModel(_Model):
    """What the canary serves instead of spec.model: the same model name and format (one v2
    URL for both variants, so the router can split one request stream), another artifact (or
    the same one on another runtime, canary.runtime)."""

    storage_uri: Annotated[
        str,
        Field(
            max_length=2048,
            pattern=STORAGE_URI_PATTERN,
            description="The canary's model: pvc://, https://, s3:// or file://.",
        ),
    ]
    version: Annotated[
        int | None,
        Field(ge=1, le=1_000_000, description="Version directory; spec.model.version if unset."),
    ] = None

    @pydantic.field_validator("storage_uri")
    @classmethod
    def _fetchable(cls, value: str) -> str:
        storage_uri.parse_storage_uri(value)
        return value


class CanaryAnalysis(_Model):
    """The check the operator makes once per interval on the router's per-variant metrics."""

    interval_seconds: Annotated[int, Field(ge=5, le=3600)] = 30
    max_error_rate: Annotated[
        float, Field(ge=0.0, le=1.0, description="Canary 5xx share a passing check allows.")
    ] = 0.01
    max_p99_ratio: Annotated[
        float, Field(ge=1.0, le=100.0, description="Canary p99 over stable p99 allowed.")
    ] = 1.5
    failure_limit: Annotated[
        int, Field(ge=1, le=100, description="Failed checks (in all) that roll the canary back.")
    ] = 3
    min_requests: Annotated[
        int, Field(ge=1, le=1_000_000, description="Canary requests a window needs to count.")
    ] = 20


STEPS_INCREASE = "canary.steps must increase"


class CanarySpec(_Model):
    """A second variant behind the router, promoted step by step or rolled back on its own
    metrics (core.canary). Promotion sends all traffic to the canary and says so in status;
    the user then moves canary.model into spec.model (and canary.runtime into spec.runtime)
    and removes spec.canary (the operator never rewrites a spec: GitOps tools own it)."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                # Sorted and no repeats: strictly increasing (CEL has no pairwise walk).
                "self.steps.isSorted() && "
                "self.steps.all(x, self.steps.filter(y, y == x).size() == 1)",
                STEPS_INCREASE,
            )
        )
    )

    model: CanaryModel
    runtime: Annotated[
        str | None,
        Field(
            max_length=63,
            pattern=DNS_LABEL_PATTERN,
            description="InferenceRuntime the canary runs on (another server for the same "
            "model: Triton beside the ONNX server, say); the service's runtime if unset.",
        ),
    ] = None
    steps: Annotated[
        list[Annotated[int, Field(ge=1, le=99)]],
        Field(
            min_length=1,
            max_length=20,
            description="Canary traffic percents, one per passed check; a single step is a "
            "fixed weight that is promoted after one passed check.",
        ),
    ] = [10, 25, 50]
    analysis: CanaryAnalysis = CanaryAnalysis()

    @pydantic.field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[int]) -> list[int]:
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError(STEPS_INCREASE)
        return steps


# A canary that would run the stable set's exact pods has nothing to be judged on. Only what
# the spec says can be compared here: a canary.runtime naming the runtime that spec.runtime
# leaves to the catalogue's choice is not caught.
CANARY_DIFFERS = (
    "canary must differ from the stable set in model.storageUri, model.version or runtime"
)

CANARY_NEEDS_ROUTER = (
    "canary needs router.enabled: true (the router splits traffic between the variants and "
    "measures each)"
)


# At zero replicas only the router answers (it holds the request and writes 0 -> 1): without
# it a service at zero would refuse every request until someone scaled it by hand.
SCALE_TO_ZERO_NEEDS_ROUTER = (
    "scaling.minReplicas 0 needs router.enabled: true (at zero replicas the router holds "
    "requests and wakes the service)"
)


class InferenceServiceSpec(_Model):
    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "self.model.format != 'tensorrt' || self.gpu.count >= 1",
                "gpu.count must be at least 1 for model.format tensorrt: TensorRT runs on GPUs",
            ),
            (
                "!self.gpu.resourceName.startsWith('nvidia.com/mig-') || self.gpu.count <= 7",
                "gpu.count must be at most 7 for a MIG profile",
            ),
            (
                "self.gpu.parallelism != 'Model' || self.model.format == 'python'",
                "gpu.parallelism Model needs model.format python: only a model that places "
                "itself on its GPUs can shard",
            ),
            (
                "self.gpu.parallelism != 'Model' || self.gpu.count >= 2",
                "gpu.parallelism Model needs gpu.count of at least 2",
            ),
            (
                "self.scaling.minReplicas >= 1 || self.router.enabled",
                SCALE_TO_ZERO_NEEDS_ROUTER,
            ),
            ("!has(self.canary) || self.router.enabled", CANARY_NEEDS_ROUTER),
            (
                # An unset canary version or runtime is the stable set's.
                "!has(self.canary) || self.canary.model.storageUri != self.model.storageUri || "
                "(has(self.canary.model.version) && "
                "self.canary.model.version != self.model.version) || "
                "(has(self.canary.runtime) && "
                "(!has(self.runtime) || self.canary.runtime != self.runtime))",
                CANARY_DIFFERS,
            ),
        )
    )
    model: ModelSpec
    runtime: Annotated[
        str | None,
        Field(
            max_length=63,
            pattern=DNS_LABEL_PATTERN,
            description="InferenceRuntime name; chosen by format and priority when absent.",
        ),
    ] = None
    resources: Annotated[
        Resources,
        Field(
            description="The server container's CPU and memory. Limits in whole CPUs with "
            "requests equal (or unset) make a Guaranteed pod, model download included: on a "
            "node whose kubelet runs the static CPU manager policy its cores are its own, "
            "and kubeinfer's ONNX server then lets onnxruntime spin on them (models over "
            "16 MiB).",
        ),
    ] = Resources()
    gpu: GPUSpec = GPUSpec()
    batching: BatchingSpec = BatchingSpec()
    scaling: ScalingSpec = ScalingSpec()
    replicas: Annotated[
        int | None,
        Field(
            ge=0, le=1000, description="Replicas when scaling.mode is Off (kubectl scale kisvc)."
        ),
    ] = None
    stopped: Annotated[
        bool, Field(description="Scale to zero and free the GPUs; keep the configuration.")
    ] = False
    scheduling: SchedulingSpec = SchedulingSpec()
    pod_metadata: PodMetadata = PodMetadata()
    inference_pool: InferencePoolSpec = InferencePoolSpec()
    router: RouterSpec = RouterSpec()
    canary: CanarySpec | None = None
    grpc_tls: GrpcTLSSpec | None = None

    @pydantic.model_validator(mode="after")
    def _cross_field(self) -> InferenceServiceSpec:
        if self.scaling.min_replicas == 0 and not self.router.enabled:
            raise ValueError(SCALE_TO_ZERO_NEEDS_ROUTER)
        if self.canary is not None and not self.router.enabled:
            raise ValueError(CANARY_NEEDS_ROUTER)
        if self.canary is not None and (
            self.canary.model.storage_uri,
            self.canary.model.version or self.model.version,
            self.canary.runtime or self.runtime,
        ) == (self.model.storage_uri, self.model.version, self.runtime):
            raise ValueError(CANARY_DIFFERS)
        if self.scaling.min_replicas > self.scaling.max_replicas:
            raise ValueError(
                "scaling.minReplicas must be less than or equal to scaling.maxReplicas"
            )
        if self.model.format is ModelFormat.TENSORRT and self.gpu.count < 1:
            raise ValueError("gpu.count must be at least 1 for model.format tensorrt")
        if self.gpu.parallelism is GPUParallelism.MODEL and (
            self.model.format is not ModelFormat.PYTHON or self.gpu.count < 2
        ):
            raise ValueError(
                "gpu.parallelism Model needs model.format python and gpu.count of at least 2"
            )
        return self


class RuntimeFormat(_Model):
    name: ModelFormat
    priority: Annotated[int, Field(ge=0, le=100)] = 1


class RuntimePorts(_Model):
    http: Annotated[int, Field(ge=1, le=65535)] = 8000
    grpc: Annotated[int, Field(ge=1, le=65535)] = 8001
    metrics: Annotated[int, Field(ge=1, le=65535)] = 8002


class RuntimeProbes(_Model):
    readiness_path: str = "/v2/health/ready"
    liveness_path: str = "/v2/health/live"
    startup_timeout_seconds: Annotated[
        int,
        Field(
            ge=1,
            le=7200,
            description="How long a model may take to load before the container is restarted.",
        ),
    ] = 600


class BatchingConfigKind(enum.StrEnum):
    TRITON_PBTXT = "TritonPbtxt"
    KUBEINFER_JSON = "KubeinferJson"


class RuntimeMetricNames(_Model):
    """Which metric family carries which signal on the runtime's /metrics (Triton's names by
    default; both kubeinfer's ONNX server and Triton export them). Counters without _total."""

    # Requests queued and not yet executing (a gauge): the fastest honest queue signal.
    queue_depth: str = "nv_inference_pending_request_count"
    # Cumulative microseconds requests spent queued, and in the server in all.
    queue_time: str = "nv_inference_queue_duration_us"
    request_duration: str = "nv_inference_request_duration_us"
    # Completed and failed requests.
    request_count: str = "nv_inference_request_success"
    request_failure: str = "nv_inference_request_failure"
    gpu_utilization: str = "nv_gpu_utilization"
    gpu_utilization_scale: Annotated[
        float,
        Field(gt=0, le=1, description="Multiplier to 0..1: 1 for Triton, 0.01 for DCGM (0-100)."),
    ] = 1.0
    # A gauge labelled `provider` per model version: the execution provider the model runs on.
    # kubeinfer's ONNX server has one (runtimes/defaults/onnxruntime.yaml names it); Triton
    # none: a KIND_GPU model there fails to load rather than run on CPU.
    execution_provider: Annotated[
        str | None,
        Field(
            max_length=128,
            description="Gauge whose `provider` label names where the model computes "
            "(CPUExecutionProvider: on CPU), for the GPUInUse condition; unset: the runtime "
            "does not say, and GPU services get no such condition.",
        ),
    ] = None


class RuntimeGrpcTLS(_Model):
    """How a runtime is told to serve gRPC over TLS: its arguments, in which $(GRPC_TLS_CERT),
    $(GRPC_TLS_KEY) and $(GRPC_TLS_CA) are the mounted Secret's files (Kubernetes expands
    them). Triton's flags by default; kubeinfer's ONNX server takes the same ones."""

    args: Annotated[list[str], Field(min_length=1, max_length=16)] = [
        "--grpc-use-ssl=true",
        "--grpc-server-cert=$(GRPC_TLS_CERT)",
        "--grpc-server-key=$(GRPC_TLS_KEY)",
    ]
    mutual_args: Annotated[
        list[str],
        Field(
            min_length=1,
            max_length=16,
            description="Added to args when the service asks for client certificates.",
        ),
    ] = ["--grpc-use-ssl-mutual=true", "--grpc-root-cert=$(GRPC_TLS_CA)"]


class InferenceRuntimeSpec(_Model):
    image: Annotated[str, Field(min_length=1, max_length=512)]
    gpu_image: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=512,
            description="Image for InferenceServices with gpu.count above 0, e.g. the ONNX "
            "server's gpu variant (onnx-server:<version>-gpu); unset: image for every service.",
        ),
    ] = None
    formats: Annotated[list[RuntimeFormat], Field(min_length=1, max_length=8)]
    supports_gpu: bool = True
    supports_cpu: bool = True
    command: Annotated[list[str], Field(max_length=16)] = []
    args: Annotated[
        list[str],
        Field(
            max_length=64,
            description="$(MODEL_REPOSITORY), $(HTTP_PORT), $(GRPC_PORT) and "
            "$(METRICS_PORT) are expanded by Kubernetes.",
        ),
    ] = []
    ports: RuntimePorts = RuntimePorts()
    probes: RuntimeProbes = RuntimeProbes()
    model_repository_path: str = "/mnt/models"
    batching_config: BatchingConfigKind = BatchingConfigKind.TRITON_PBTXT
    metrics: RuntimeMetricNames = RuntimeMetricNames()
    run_as_user: Annotated[int, Field(ge=1)] = 1000
    grpc_tls: Annotated[
        RuntimeGrpcTLS | None,
        Field(
            description="Set when the runtime can serve gRPC over TLS (services with grpcTls "
            "need one that can); unset: it cannot."
        ),
    ] = None


class Condition(_Model):
    type: str
    status: Annotated[str, Field(pattern=r"^(True|False|Unknown)$")]
    reason: str
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


# Decisions status keeps (the newest); every decision is counted in the operator's metrics.
DECISION_HISTORY = 10
# The most characters status.autoscaler.state may hold (the engine fits its JSON to it): a
# 3600 s window at full resolution, a full burst history and a day of forecast history fit.
STATE_MAX_CHARS = 20480


class DecisionRecord(_Model):
    """One autoscaler decision as status shows it: when, from what, to what, and why."""

    time: str
    desired: int
    current: int
    reason: str
    message: str = ""
    clamps: list[str] = []
    inputs: dict[str, float] = {}


class ProviderUse(_Model):
    """How many serving pods run the model on one execution provider, as their /metrics say."""

    provider: Annotated[str, Field(max_length=128)]
    pods: Annotated[int, Field(ge=1)]
    example: Annotated[str, Field(max_length=253, description="One such pod.")]


class AutoscalerStatus(_Model):
    desired_replicas: int | None = None
    signals: dict[str, float] = {}
    cold_start_seconds: float | None = None
    last_scale_time: str | None = None
    decisions: Annotated[list[DecisionRecord], Field(max_length=DECISION_HISTORY)] = []
    execution_providers: Annotated[
        list[ProviderUse],
        Field(
            max_length=8,
            description="Where the Ready pods' models compute, from their /metrics (the "
            "GPUInUse condition is built from this); empty when the runtime does not say.",
        ),
    ] = []
    state: Annotated[
        str | None,
        Field(
            max_length=STATE_MAX_CHARS,
            description="Serialized scaler state that survives operator "
            "restarts (windows, last scale time, learned cold start, burst history).",
        ),
    ] = None


class RolloutStrategy(enum.StrEnum):
    SURGE = "Surge"  # one extra pod first: maxSurge 1, maxUnavailable 0
    NO_SURGE = "NoSurge"  # one old pod down first: maxSurge 0, maxUnavailable 1


class RolloutState(enum.StrEnum):
    NOT_STARTED = "NotStarted"  # no rollout since the service was created
    PROGRESSING = "Progressing"  # pods of an older template are being replaced
    COMPLETE = "Complete"  # the last rollout has replaced every pod


class RolloutStatus(_Model):
    """How the Deployment replaces pods in a rollout, and why (core.rollout)."""

    # Only in status: whether the rollout this strategy was decided for is under way
    # (Progressing) or done (Complete); a new service has had none (NotStarted).
    state: RolloutState | None = None
    strategy: RolloutStrategy
    max_surge: Annotated[int, Field(ge=0, le=1)]
    max_unavailable: Annotated[int, Field(ge=0, le=1)]
    reason: str
    message: str = ""


class CanaryPhase(enum.StrEnum):
    PROGRESSING = "Progressing"  # at steps[step], checked every interval
    PROMOTED = "Promoted"  # every step passed: all traffic to the canary
    ROLLED_BACK = "RolledBack"  # failureLimit failed checks: no traffic, no replica


class CanaryStatus(_Model):
    """Where the canary stands (written by the canary engine only, core.canary decides)."""

    revision: Annotated[str, Field(description="Hash of the spec.canary this is about.")]
    phase: CanaryPhase
    step: Annotated[int, Field(ge=0, description="Index into spec.canary.steps.")]
    weight: Annotated[int, Field(ge=0, le=100, description="Canary traffic percent now.")]
    failures: Annotated[int, Field(ge=0)] = 0
    reason: Annotated[
        str | None,
        Field(description="Why it was rolled back: ErrorRate or LatencyRatio (both: ErrorRate)."),
    ] = None
    last_analysis_time: str | None = None
    # The last judged window's figures, for status readers and the rollback condition.
    requests: int | None = None
    error_rate: float | None = None
    p99_seconds: float | None = None
    stable_p99_seconds: float | None = None
    message: str = ""


class InferenceServiceStatus(_Model):
    observed_generation: int | None = None
    replicas: int | None = None
    ready_replicas: int | None = None
    gpus: int | None = None
    selector: str | None = None
    url: str | None = None
    runtime: str | None = None
    conditions: list[Condition] = []
    rollout: RolloutStatus | None = None
    autoscaler: AutoscalerStatus | None = None
    canary: CanaryStatus | None = None


def parse_spec(raw: dict[str, Any]) -> InferenceServiceSpec:
    """Parse a spec as the API server stored it (defaults applied); raises ValidationError."""
    return InferenceServiceSpec.model_validate(raw)


def parse_runtime(raw: dict[str, Any]) -> InferenceRuntimeSpec:
    return InferenceRuntimeSpec.model_validate(raw)
