"""What a pod's containers become on this host: a pure translation, no I/O.

Owns: the table of container entrypoints the local kubelet knows how to run as host processes
(kubeinfer's own images and Triton), Kubernetes' ``$(VAR)`` expansion of args, the mapping of
each volume mount to a folder in the pod's sandbox directory (mount paths in args become host
paths), the listen address (a container binding 0.0.0.0 binds the pod's loopback IP here), and
the dev cluster's per-pod emulation knobs (annotations). ``kubelet.py`` does the I/O.

A host process is not a container: it sees the host's filesystem and network. What keeps the
translation honest is that every path and address the process is given comes from the pod
spec the operator generated, rewritten only where a container and a host differ.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import re
import sys
from collections.abc import Mapping
from typing import Any

from kubernetes.utils.quantity import parse_quantity

# Pods carrying this label are run by the local kubelet (init containers, then the serving
# container as real processes on the pod's IP, probes decide Ready); kwok only fakes the rest.
# Its value picks how: "container" runs each image kubeinfer built (`make images`) in runc,
# as a node would; anything else ("true") runs the program an image holds as a host process.
RUN_LABEL = "cluster.kubeinfer.io/run"
CONTAINER_MODE = "container"
# Time the main container waits before it starts: a model download and load, emulated.
COLD_START_ANNOTATION = "kubeinfer.io/simulated-cold-start"
# An emulated accelerator: every model execution of kubeinfer's ONNX server takes this long
# (its --emulate-device-ms), so one replica serves a known rate whatever the host's speed.
DEVICE_MS_ANNOTATION = "cluster.kubeinfer.io/device-ms"
# How Triton's stand-in model learns the emulated device time (triton/host.py passes it on).
DEVICE_MS_ENV = "KUBEINFER_EMULATE_DEVICE_MS"

# Container entrypoint -> the host command that is that program. Images name their default
# entrypoint in IMAGE_ENTRYPOINTS; a container's own `command[0]` wins.
HOST_COMMANDS: dict[str, list[str]] = {
    "kubeinfer": [sys.executable, "-m", "kubeinfer.cli"],
    "kubeinfer-onnx-server": [sys.executable, "-m", "kubeinfer_onnx.server"],
    # Real Triton 2.51 (the pytriton wheel) with the CPU stand-in: triton/host.py.
    "tritonserver": [sys.executable, "-m", "kubeinfer_cluster.triton.host"],
    # kubeinfer-router (router/), which the operator image carries and runs by this command.
    "kubeinfer-router": [sys.executable, "-m", "kubeinfer_router"],
}
# The last path element of an image repository -> its ENTRYPOINT (docker/*.Dockerfile).
IMAGE_ENTRYPOINTS = {
    "operator": "kubeinfer",
    "onnx-server": "kubeinfer-onnx-server",
    "tritonserver": "tritonserver",
}


# Where the API server's ServiceAccount admission mounts a pod's token, CA and namespace. A
# host process cannot read it there (the host's own path), so it gets a kubeconfig naming the
# same files in the pod's sandbox: the pod's own identity, never the host's credentials.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class Unsupported(ValueError):
    """The pod asks for something this host cannot run; the message says what."""


@dataclasses.dataclass(frozen=True)
class Probe:
    path: str
    port: int
    period_s: float
    failure_threshold: int
    initial_delay_s: float
    timeout_s: float


@dataclasses.dataclass(frozen=True)
class Bind:
    """A volume mount in a container: the host file or folder behind a container path."""

    destination: str
    source: pathlib.Path
    readonly: bool


@dataclasses.dataclass(frozen=True)
class ContainerPlan:
    name: str
    image: str
    argv: list[str]
    env: dict[str, str]
    # Files to write before the container starts: host path -> content (configMap items).
    files: dict[pathlib.Path, str]
    startup: Probe | None = None
    readiness: Probe | None = None
    liveness: Probe | None = None
    fallback_to_logs: bool = False
    # preStop sleep, then SIGTERM; SIGKILL after the grace period.
    pre_stop_s: float = 0.0
    # For a container run in runc: the pod's command and args (the image supplies what is
    # absent), its volume mounts, and who it runs as.
    command: list[str] | None = None
    args: list[str] | None = None
    binds: tuple[Bind, ...] = ()
    run_as: tuple[int, int] = (1000, 1000)
    read_only_root: bool = True


@dataclasses.dataclass(frozen=True)
class PodPlan:
    init: list[ContainerPlan]
    main: list[ContainerPlan]
    cold_start_s: float
    grace_s: float
    # Run each container's image in runc (RUN_LABEL "container") rather than as a process.
    in_containers: bool = False


def parse_duration(text: str) -> float:
    """'3s', '500ms', '2m' or a bare number of seconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m)?\s*", text)
    if not match:
        raise Unsupported(f"not a duration: {text!r} (use e.g. 3s, 500ms, 2m)")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined variables are replaced, $$ escapes a $, an
    undefined reference stays as written."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, text)


def entrypoint(container: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(host command, remaining args from `command`) for a container, or Unsupported."""
    command = list(container.get("command") or [])
    if command:
        program, rest = command[0], command[1:]
    else:
        image = str(container.get("image") or "")
        repository = image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
        program, rest = IMAGE_ENTRYPOINTS.get(repository, ""), []
        if not program:
            raise Unsupported(
                f"image {image!r}: this local kubelet runs only "
                f"{', '.join(sorted(IMAGE_ENTRYPOINTS))} images or the commands "
                f"{', '.join(sorted(HOST_COMMANDS))}"
            )
    host = HOST_COMMANDS.get(program)
    if host is None:
        raise Unsupported(
            f"command {program!r}: this local kubelet runs only {', '.join(sorted(HOST_COMMANDS))}"
        )
    return list(host), rest


def _port(container: Mapping[str, Any], port: Any) -> int:
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise Unsupported(f"container {container.get('name')}: no port named {port!r}")


def _probe(container: Mapping[str, Any], key: str) -> Probe | None:
    spec = container.get(key)
    if not spec:
        return None
    http = spec.get("httpGet")
    if not http:
        raise Unsupported(f"container {container.get('name')}: {key} must be an httpGet probe")
    return Probe(
        path=str(http.get("path") or "/"),
        port=_port(container, http.get("port")),
        period_s=float(spec.get("periodSeconds", 10)),
        failure_threshold=int(spec.get("failureThreshold", 3)),
        initial_delay_s=float(spec.get("initialDelaySeconds", 0)),
        timeout_s=float(spec.get("timeoutSeconds", 1)),
    )


_FIELD = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")


def downward_files(pod: Mapping[str, Any], items: list[dict[str, Any]]) -> dict[str, str]:
    """A downwardAPI volume's (or projected source's) files: path -> the pod field it names.
    The pod's name, namespace, and one label or annotation each; other fields (resources,
    uid) are refused rather than guessed."""
    meta = pod["metadata"]
    files: dict[str, str] = {}
    for item in items:
        field = (item.get("fieldRef") or {}).get("fieldPath", "")
        keyed = _FIELD.fullmatch(field)
        if field in ("metadata.name", "metadata.namespace"):
            files[item["path"]] = str(meta.get(field.removeprefix("metadata."), ""))
        elif keyed is not None:
            # As the kubelet does: an absent key makes an empty file.
            files[item["path"]] = str((meta.get(keyed[1]) or {}).get(keyed[2], ""))
        else:
            raise Unsupported(f"downwardAPI field {field!r} is not supported")
    return files


def volume_dirs(pod: Mapping[str, Any], sandbox: pathlib.Path) -> dict[str, pathlib.Path]:
    """Volume name -> its folder in the pod's sandbox (emptyDir, configMap, secret, projected
    and downwardAPI volumes)."""
    dirs: dict[str, pathlib.Path] = {}
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        if {"emptyDir", "configMap", "secret", "projected", "downwardAPI"} & set(volume):
            dirs[name] = sandbox / "volumes" / name
        else:
            kinds = sorted(k for k in volume if k != "name")
            raise Unsupported(f"volume {name!r}: {', '.join(kinds)} volumes are not supported here")
    return dirs


def mounts(
    container: Mapping[str, Any],
    volumes: Mapping[str, pathlib.Path],
    contents: Mapping[str, Mapping[str, str]],
) -> tuple[list[tuple[str, pathlib.Path]], dict[pathlib.Path, str]]:
    """(container path -> host path, longest first; files to write) for a container's mounts.

    A subPath mount of a configMap key inside another mount (the model config file mounted
    into the model repository) becomes that file written into the enclosing mount's folder.
    """
    table: list[tuple[str, pathlib.Path]] = []
    subpaths: list[tuple[str, str, str]] = []
    for mount in container.get("volumeMounts") or []:
        path, name = str(mount["mountPath"]).rstrip("/") or "/", mount["name"]
        if name not in volumes:
            raise Unsupported(f"volumeMount {path}: volume {name!r} is not defined")
        if mount.get("subPath"):
            subpaths.append((path, name, str(mount["subPath"])))
        else:
            table.append((path, volumes[name]))
    table.sort(key=lambda entry: len(entry[0]), reverse=True)
    files: dict[pathlib.Path, str] = {}
    for path, name, key in subpaths:
        data = contents.get(name, {})
        if key not in data:
            raise Unsupported(f"volumeMount {path}: subPath {key!r} is not in volume {name!r}")
        host = to_host(path, table)
        if host is None:
            raise Unsupported(f"volumeMount {path}: a subPath mount outside every other mount")
        files[host] = data[key]
    return table, files


def to_host(path: str, table: list[tuple[str, pathlib.Path]]) -> pathlib.Path | None:
    """The host path of a container path, through the longest mount that contains it."""
    for mount_path, host in table:
        if path == mount_path:
            return host
        if path.startswith(mount_path.rstrip("/") + "/"):
            return host / path[len(mount_path.rstrip("/")) + 1 :]
    return None


def rewrite_arg(arg: str, table: list[tuple[str, pathlib.Path]], ip: str) -> str:
    """Mount paths in an argument become host paths; a wildcard bind address the pod's IP."""
    arg = bind_address(arg, ip)
    prefix, eq, value = arg.partition("=")
    candidate = value if eq else arg
    if candidate.startswith("/"):
        host = to_host(candidate, table)
        if host is not None:
            candidate = str(host)
    return f"{prefix}={candidate}" if eq else candidate


def bind_address(arg: str, ip: str) -> str:
    """0.0.0.0 (also inside a URL) becomes the pod's IP: every pod here shares the host's
    network, so a wildcard would take the port on every pod address at once."""
    return arg.replace("0.0.0.0", ip)


def binds(container: Mapping[str, Any], volumes: Mapping[str, pathlib.Path]) -> tuple[Bind, ...]:
    """The container's volume mounts as binds of the sandbox's volume folders (or a file in
    one, for a subPath), for a container run in runc."""
    out = []
    for mount in container.get("volumeMounts") or []:
        source = volumes[mount["name"]]
        if mount.get("subPath"):
            source = source / str(mount["subPath"])
        out.append(Bind(str(mount["mountPath"]), source, bool(mount.get("readOnly", False))))
    return tuple(out)


def resource_field(container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    """A downward-API resourceFieldRef's value as a kubelet computes it: the container's own
    request or limit over the divisor, rounded up. A kubelet would give the node's allocatable
    for a limit the container lacks; the operator never asks for one, so that is Unsupported."""
    name = str(container["name"])
    if ref.get("containerName", name) != name:
        raise Unsupported(f"container {name}: resourceFieldRef to another container")
    kind, _, resource = str(ref.get("resource", "")).partition(".")
    value = ((container.get("resources") or {}).get(kind) or {}).get(resource)
    if kind not in ("requests", "limits") or resource not in ("cpu", "memory") or value is None:
        raise Unsupported(f"container {name}: resourceFieldRef {ref.get('resource')!r} is unset")
    divisor = parse_quantity(str(ref.get("divisor", "1")))
    return str(math.ceil(parse_quantity(str(value)) / divisor))


def container_plan(
    container: Mapping[str, Any],
    *,
    ip: str,
    volumes: Mapping[str, pathlib.Path],
    contents: Mapping[str, Mapping[str, str]],
    secrets: Mapping[str, Mapping[str, str]],
    annotations: Mapping[str, str],
    sandbox: pathlib.Path,
    run_as: tuple[int, int] = (1000, 1000),
    in_containers: bool = False,
    api_server: str = "",
) -> ContainerPlan:
    name = str(container["name"])
    host, command_args = ([], []) if in_containers else entrypoint(container)
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        ref = str((source.get("secretRef") or source.get("configMapRef") or {}).get("name"))
        if ref not in secrets:
            raise Unsupported(f"container {name}: envFrom {ref!r} is not available")
        env.update(secrets[ref])
    for item in container.get("env") or []:
        field_ref = (item.get("valueFrom") or {}).get("resourceFieldRef")
        if field_ref is not None:
            env[item["name"]] = resource_field(container, field_ref)
            continue
        key_ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        if key_ref is not None:
            # The kubelet (volume_contents) fetched it and checked the key.
            value = secrets.get(key_ref["name"], {}).get(key_ref["key"])
            if value is not None:
                env[item["name"]] = value
            continue
        if "value" not in item:
            raise Unsupported(
                f"container {name}: env {item.get('name')} must have a value or a secretKeyRef"
            )
        env[item["name"]] = expand(str(item["value"]), env)
    table, files = mounts(container, volumes, contents)
    if not in_containers:
        # A host process has the host's /tmp: point it at the pod's.
        env.setdefault("TMPDIR", str(to_host("/tmp", table) or sandbox / "tmp" / name))
    args = [expand(str(a), env) for a in [*command_args, *(container.get("args") or [])]]
    argv = host + [rewrite_arg(a, table, ip) for a in args]
    # What a kubelet's downward API would give a container that asked: the pod's IP.
    env.setdefault("POD_IP", ip)
    account = to_host(SERVICE_ACCOUNT_DIR, table)
    if account is not None and api_server and not in_containers:
        config = sandbox / "kubeconfig" / name
        files[config] = service_account_kubeconfig(api_server, account)
        env.setdefault("KUBECONFIG", str(config))
    device_ms = annotations.get(DEVICE_MS_ANNOTATION)
    if device_ms and host == HOST_COMMANDS["kubeinfer-onnx-server"]:
        argv.append(f"--emulate-device-ms={float(device_ms):g}")
    elif device_ms and host == HOST_COMMANDS["tritonserver"]:
        env[DEVICE_MS_ENV] = f"{float(device_ms):g}"
    pre_stop = ((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}
    security = container.get("securityContext") or {}
    command = container.get("command")
    container_args = container.get("args")
    return ContainerPlan(
        name=name,
        image=str(container.get("image") or ""),
        argv=argv,
        env=env,
        files=files,
        startup=_probe(container, "startupProbe"),
        readiness=_probe(container, "readinessProbe"),
        liveness=_probe(container, "livenessProbe"),
        fallback_to_logs=container.get("terminationMessagePolicy") == "FallbackToLogsOnError",
        pre_stop_s=float(pre_stop.get("seconds", 0)),
        command=[bind_address(str(c), ip) for c in command] if command else None,
        args=[bind_address(str(a), ip) for a in container_args] if container_args else None,
        binds=binds(container, volumes),
        run_as=(
            int(security.get("runAsUser", run_as[0])),
            int(security.get("runAsGroup", run_as[1])),
        ),
        read_only_root=bool(security.get("readOnlyRootFilesystem", False)),
    )


def service_account_kubeconfig(api_server: str, account: pathlib.Path) -> str:
    """A kubeconfig for a host process that authenticates as its pod's ServiceAccount (the
    token file the kubelet projected, re-read on each load) and trusts the cluster's CA."""
    return (
        "apiVersion: v1\n"
        "kind: Config\n"
        "clusters:\n"
        f"- name: cluster\n  cluster:\n    server: {api_server}\n"
        f"    certificate-authority: {account / 'ca.crt'}\n"
        "users:\n"
        f"- name: pod\n  user:\n    tokenFile: {account / 'token'}\n"
        "contexts:\n"
        "- name: pod\n  context:\n    cluster: cluster\n    user: pod\n"
        "current-context: pod\n"
    )


def pod_plan(
    pod: Mapping[str, Any],
    *,
    ip: str,
    sandbox: pathlib.Path,
    contents: Mapping[str, Mapping[str, str]],
    secrets: Mapping[str, Mapping[str, str]],
    api_server: str = "",
) -> PodPlan:
    """The whole pod, or Unsupported naming the first thing this host cannot do."""
    annotations = pod["metadata"].get("annotations") or {}
    volumes = volume_dirs(pod, sandbox)
    spec = pod["spec"]

    pod_security = spec.get("securityContext") or {}
    run_as = (int(pod_security.get("runAsUser", 1000)), int(pod_security.get("runAsGroup", 1000)))
    labels = pod["metadata"].get("labels") or {}
    in_containers = labels.get(RUN_LABEL) == CONTAINER_MODE

    def plan(container: Mapping[str, Any]) -> ContainerPlan:
        return container_plan(
            container,
            ip=ip,
            volumes=volumes,
            contents=contents,
            secrets=secrets,
            annotations=annotations,
            sandbox=sandbox,
            run_as=run_as,
            in_containers=in_containers,
            api_server=api_server,
        )

    cold = annotations.get(COLD_START_ANNOTATION)
    return PodPlan(
        init=[plan(c) for c in spec.get("initContainers") or []],
        main=[plan(c) for c in spec.get("containers") or []],
        cold_start_s=parse_duration(cold) if cold else 0.0,
        grace_s=float(spec.get("terminationGracePeriodSeconds", 30)),
        in_containers=in_containers,
    )
