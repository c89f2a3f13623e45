"""The local kubelet: runs the pods labelled ``cluster.kubeinfer.io/run=true`` for real.

kwok fakes every other pod (Running and Ready the moment it is scheduled). For a labelled pod
this process plays the kubelet instead: it gives the pod an IP on loopback, runs its init
containers and then its containers as host processes (``plan.py`` says how each container
becomes a command), probes them as the pod spec says, restarts a container that exits or
fails its liveness probe (with the kubelet's back-off), and writes the pod's status - phase,
container states with exit codes and termination messages, and Ready only while the readiness
probe passes. On deletion it runs the preStop sleep, sends SIGTERM, waits out the grace period
and then removes the pod. So ``kubectl get`` shows Ready only when a request would be served.

One thread watches pods; one thread per pod owns that pod's processes and status (observe the
processes and probes -> decide the states -> write the status when it changed).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import ipaddress
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from kubeinfer_cluster import containers, images, oci
from kubeinfer_cluster.kubelet import plan as plan_
from kubeinfer_cluster.kubelet import podstatus

log = logging.getLogger("kubeinfer_cluster.kubelet")

# Back-off between restarts of a failing container: 10 s doubling to 5 min, like the kubelet.
BACKOFF_START_S, BACKOFF_MAX_S = 10.0, 300.0
# Pods run here get IPs from 127.3.<node>.0/24, apart from kwok's 127.1.<node>.0/24 pool, so
# the two allocators can never hand out the same address.
IP_PREFIX = "127.3"
TICK_S = 0.1
# How often a running pod's configMap and secret volumes are brought up to date, as the
# kubelet's sync does (there about a minute: its sync period plus its cache TTL; short here, so
# a test of a component that re-reads its mounted file, such as a renewed certificate, waits
# seconds; kubeinfer-router watches its ConfigMap through the API and gets its weights before
# that).
# subPath mounts are copies and never change, as on a real node.
VOLUME_SYNC_S = 2.0


def _die_with_parent() -> None:
    # A server outlives nothing: if the kubelet dies (even SIGKILL), its processes die too.
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)


class Addresses:
    """Pod IPs per node, handed out and taken back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._used: set[str] = set()

    def take(self, node_index: int) -> str:
        with self._lock:
            for host in range(2, 255):
                ip = f"{IP_PREFIX}.{node_index}.{host}"
                if ip not in self._used:
                    self._used.add(ip)
                    return ip
        raise RuntimeError(f"no free pod IP on node {node_index}")

    def give_back(self, ip: str | None) -> None:
        with self._lock:
            self._used.discard(ip or "")


class Process:
    """One container's host process: started, watched, stopped by its process group."""

    def __init__(self, plan: plan_.ContainerPlan, log_path: pathlib.Path) -> None:
        self.plan = plan
        self.log_path = log_path
        for path, content in plan.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        pathlib.Path(plan.env["TMPDIR"]).mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as out:
            self.popen = subprocess.Popen(
                plan.argv,
                env={**_host_env(), **plan.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def exited(self) -> int | None:
        return _exit_code(self.popen.poll())

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signum)

    def stop(self, grace_s: float) -> int:
        """SIGTERM, then SIGKILL after ``grace_s``; returns the exit code."""
        self.signal(signal.SIGTERM)
        try:
            return _exit_code(self.popen.wait(timeout=grace_s)) or 0
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            return _exit_code(self.popen.wait()) or 0

    def message(self) -> str:
        if not self.plan.fallback_to_logs:
            return ""
        try:
            return podstatus.termination_message(self.log_path.read_text(errors="replace"))
        except FileNotFoundError:
            return ""


class ContainerProcess:
    """One container run in runc from the image kubeinfer built (``make images``): the pod's
    volumes bound in, its user, a read-only root if it asks for one, the host's network (the
    pod IP is a loopback address). The same face as ``Process``."""

    def __init__(
        self, plan: plan_.ContainerPlan, sandbox: pathlib.Path, container_id: str, kubelet: Kubelet
    ) -> None:
        self.plan = plan
        archive = images.find_archive(plan.image)
        if archive is None:
            raise plan_.Unsupported(
                f"image {plan.image!r} is not built on this machine: run `make images`"
            )
        info = oci.read_archive(archive)
        rootfs = oci.unpack(archive, kubelet.state / "rootfs")
        env = {**kubelet.cluster_env, **plan.env}
        self.termination_log = sandbox / "termination" / plan.name
        self.termination_log.parent.mkdir(parents=True, exist_ok=True)
        self.termination_log.write_text("")
        self.termination_log.chmod(0o666)
        bundle_dir = sandbox / "bundles" / container_id
        containers.bundle(
            bundle_dir,
            rootfs,
            args=containers.process_args(
                info.config, command=plan.command, args=plan.args, env=env
            ),
            env=containers.env_for(info.config, env),
            mounts=[
                *(containers.Mount(b.destination, b.source, b.readonly) for b in plan.binds),
                containers.Mount("/dev/termination-log", self.termination_log, readonly=False),
            ],
            uid=plan.run_as[0],
            gid=plan.run_as[1],
            readonly=plan.read_only_root,
        )
        self.container = containers.Container(container_id, bundle_dir, kubelet.state / "runc")
        self.container.run()

    def exited(self) -> int | None:
        return _exit_code(self.container.exit_code())

    def signal(self, signum: int) -> None:
        self.container.kill(signal.Signals(signum))

    def stop(self, grace_s: float) -> int:
        return _exit_code(self.container.stop(timeout=grace_s)) or 0

    def message(self) -> str:
        written = self.termination_log.read_text(errors="replace").strip()
        if written or not self.plan.fallback_to_logs:
            return written[: podstatus.TAIL_BYTES]
        return podstatus.termination_message(self.container.output())


Runnable = Process | ContainerProcess


def _exit_code(code: int | None) -> int | None:
    """As a container runtime reports it: death by signal N is 128 + N (SIGKILL: 137)."""
    return 128 - code if code is not None and code < 0 else code


def _host_env() -> dict[str, str]:
    # Only what a process needs to run on this host; the container's env comes on top.
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "PYTHONPATH")
    return {k: v for k, v in os.environ.items() if k in keep}


def http_ok(ip: str, probe: plan_.Probe) -> bool:
    try:
        with urllib.request.urlopen(
            f"http://{ip}:{probe.port}{probe.path}", timeout=probe.timeout_s
        ) as resp:
            return bool(200 <= resp.status < 400)
    except (urllib.error.URLError, OSError, ValueError):
        return False


class ProbeState:
    """When a probe is due next, and its consecutive failures."""

    def __init__(self, probe: plan_.Probe, started: float) -> None:
        self.probe = probe
        self.due = started + probe.initial_delay_s
        self.failures = 0

    def run(self, ip: str, now: float) -> bool | None:
        """None when not due; else whether the probe passed."""
        if now < self.due:
            return None
        self.due = now + self.probe.period_s
        ok = http_ok(ip, self.probe)
        self.failures = 0 if ok else self.failures + 1
        return ok

    @property
    def failed(self) -> bool:
        return self.failures >= self.probe.failure_threshold


Launch = Callable[[plan_.ContainerPlan, int], Runnable]


class MainContainer:
    """A serving container: its process, probes, restarts and status record."""

    def __init__(self, plan: plan_.ContainerPlan, launch: Launch, grace_s: float) -> None:
        self.plan = plan
        self.launch = launch
        self.grace_s = grace_s
        self.status = podstatus.Container(name=plan.name, image=plan.image)
        self.process: Runnable | None = None
        self.restart_at = 0.0
        self.backoff = BACKOFF_START_S
        self.startup: ProbeState | None = None
        self.readiness: ProbeState | None = None
        self.liveness: ProbeState | None = None

    def start(self, now: float) -> None:
        self.process = self.launch(self.plan, self.status.restart_count)
        self.status.running()
        self.startup = ProbeState(self.plan.startup, now) if self.plan.startup else None
        self.readiness = ProbeState(self.plan.readiness, now) if self.plan.readiness else None
        self.liveness = ProbeState(self.plan.liveness, now) if self.plan.liveness else None
        self.status.started = self.startup is None

    def step(self, ip: str, now: float) -> None:
        """Observe the process and the probes; restart it when it died or failed liveness."""
        if self.process is None:
            if now >= self.restart_at:
                try:
                    self.start(now)
                except (plan_.Unsupported, containers.ContainerError, oci.OciError) as exc:
                    # What a kubelet reports when it cannot create the container; it retries.
                    self.status.waiting("CreateContainerError", str(exc)[-1000:])
                    self.restart_at = now + self.backoff
                    return
                log.info(
                    "%s %s: started (restart %d)", ip, self.plan.name, self.status.restart_count
                )
            return
        code = self.process.exited()
        was_ready = self.status.ready
        if code is None and self.status.started:
            if self.readiness is not None:
                ok = self.readiness.run(ip, now)
                if ok is not None:
                    self.status.ready = ok or (self.status.ready and not self.readiness.failed)
            else:
                self.status.ready = True
            live = self.liveness
            if live is not None and live.run(ip, now) is False and live.failed:
                log.info(
                    "%s %s: liveness failed %d times; restarting", ip, self.plan.name, live.failures
                )
                code = self.process.stop(grace_s=self.grace_s)
        elif code is None and self.startup is not None:
            ok = self.startup.run(ip, now)
            if ok:
                self.status.started = True
                if self.readiness is not None:
                    self.readiness.due = now  # ready at once: the same endpoint just answered
            elif self.startup.failed:
                log.info("%s %s: startup probe failed; restarting", ip, self.plan.name)
                code = self.process.stop(grace_s=self.grace_s)
        if self.status.ready != was_ready:
            log.info("%s %s: ready %s", ip, self.plan.name, self.status.ready)
        if code is not None:
            log.info(
                "%s %s: exited with code %d; back-off %gs", ip, self.plan.name, code, self.backoff
            )
            self.status.terminated(code, self.process.message())
            self.process = None
            self.restart_at = now + self.backoff
            self.status.restarting(self.backoff)
            self.backoff = min(self.backoff * 2, BACKOFF_MAX_S)


class PodWorker(threading.Thread):
    """Owns one pod: sandbox, processes, status; ends when the pod is gone."""

    def __init__(self, kubelet: Kubelet, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.kubelet = kubelet
        self.pod = pod
        self.namespace, self.name = meta["namespace"], meta["name"]
        self.sandbox = kubelet.state / "pods" / f"{self.namespace}_{self.name}_{meta['uid'][:8]}"
        self.deleting = threading.Event()
        self.gone = threading.Event()
        self.ip: str | None = None
        self.host_ip = "127.0.0.1"
        self.started_at = podstatus.now_iso()
        self.init: list[podstatus.Container] = []
        self.main: list[MainContainer] = []
        self._written: dict[str, Any] = {}
        # Set when the API shows a status other than ours (the node lifecycle controller marks
        # pods NotReady when a node misses its heartbeats): the next tick writes ours again,
        # as the kubelet's status manager does.
        self._overwritten = False

    # ---- the lifecycle ----------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod %s/%s: the local kubelet failed", self.namespace, self.name)
        finally:
            self._teardown()

    def _run(self) -> None:
        node_index, self.host_ip = self.kubelet.node_address(self.pod["spec"]["nodeName"])
        self.ip = self.kubelet.addresses.take(node_index)
        for sub in ("logs", "volumes", "tmp"):
            (self.sandbox / sub).mkdir(parents=True, exist_ok=True)
        while True:
            try:
                contents, secrets = self.kubelet.volume_contents(self.pod)
                plan = plan_.pod_plan(
                    self.pod,
                    ip=self.ip,
                    sandbox=self.sandbox,
                    contents=contents,
                    secrets=secrets,
                    api_server=self.kubelet.api_server,
                )
                break
            except plan_.Unsupported as exc:
                # As the kubelet does: the pod waits, and starts once the Secret or ConfigMap
                # it needs exists (anything else this host cannot run stays waiting).
                containers = self.pod["spec"].get("containers") or []
                records = [podstatus.Container(c["name"], c.get("image", "")) for c in containers]
                for record in records:
                    record.waiting("CreateContainerConfigError", str(exc))
                self._write(main=records)
                if self.deleting.wait(2.0):
                    return
        self._write_volumes(contents)
        self.init = [podstatus.Container(name=p.name, image=p.image) for p in plan.init]
        launch = self._launcher(plan.in_containers)
        self.main = [MainContainer(p, launch, plan.grace_s) for p in plan.main]
        self._launch = launch
        for c in self.init:
            c.waiting("PodInitializing")
        self._write()
        for container_plan, record in zip(plan.init, self.init, strict=True):
            if not self._run_init(container_plan, record):
                return
        if plan.cold_start_s and self.deleting.wait(plan.cold_start_s):
            return
        next_sync = time.monotonic() + VOLUME_SYNC_S
        while not self.deleting.is_set():
            now = time.monotonic()
            for m in self.main:
                m.step(self.ip, now)
            self._write()
            if now >= next_sync:
                self._sync_volumes()
                next_sync = now + VOLUME_SYNC_S
            self.deleting.wait(TICK_S)

    def _run_init(self, container_plan: plan_.ContainerPlan, record: podstatus.Container) -> bool:
        """Run an init container to success, restarting it with back-off; False if deleted."""
        backoff = BACKOFF_START_S
        while not self.deleting.is_set():
            try:
                process = self._launch(container_plan, record.restart_count)
            except (plan_.Unsupported, containers.ContainerError, oci.OciError) as exc:
                record.waiting("CreateContainerError", str(exc)[-1000:])
                self._write()
                if self.deleting.wait(backoff):
                    return False
                continue
            record.running()
            self._write()
            while process.exited() is None:
                if self.deleting.wait(TICK_S):
                    process.stop(grace_s=1)
                    return False
            code = process.exited()
            assert code is not None
            record.terminated(code, process.message())
            if code == 0:
                self._write()
                return True
            record.restarting(backoff)
            self._write()
            if self.deleting.wait(backoff):
                return False
            backoff = min(backoff * 2, BACKOFF_MAX_S)
        return False

    def _launcher(self, in_containers: bool) -> Launch:
        uid = self.pod["metadata"]["uid"][:8]

        def launch(container_plan: plan_.ContainerPlan, restart: int) -> Runnable:
            if in_containers:
                container_id = f"{uid}-{container_plan.name}-{restart}"
                return ContainerProcess(container_plan, self.sandbox, container_id, self.kubelet)
            return Process(container_plan, self.sandbox / "logs" / f"{container_plan.name}.log")

        return launch

    def _write_volumes(self, contents: dict[str, dict[str, str]]) -> None:
        for volume in self.pod["spec"].get("volumes") or []:
            folder = self.sandbox / "volumes" / volume["name"]
            folder.mkdir(parents=True, exist_ok=True)
            # World-readable: a container runs as its pod's user, not as this process's.
            folder.chmod(0o777 if "emptyDir" in volume else 0o755)
            for key, value in contents.get(volume["name"], {}).items():
                path = folder / key
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(value)
                path.chmod(0o644)

    def _sync_volumes(self) -> None:
        """Rewrite the keys of configMap and secret volumes whose data changed (a renewed
        certificate, new router weights), each file replaced in one rename (a reader never
        sees half a file, and its mtime changes). A volume any container mounts with subPath
        is left alone: on a node that mount is a copy made at start and never changes, and the
        pod's files here are shared by all its mounts."""
        spec = self.pod["spec"]
        copied = {
            m["name"]
            for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
            for m in c.get("volumeMounts") or []
            if m.get("subPath")
        }
        for volume in spec.get("volumes") or []:
            if volume["name"] in copied or not {"configMap", "secret"} & set(volume):
                continue
            try:
                if "configMap" in volume:
                    data = self.kubelet.config_map(self.namespace, volume["configMap"]["name"])
                else:
                    data = self._secret_volume(volume["secret"])
            except Exception:  # deleted, or an API blip: the pod keeps what it has
                continue
            folder = self.sandbox / "volumes" / volume["name"]
            for key, value in data.items():
                path = folder / key
                with contextlib.suppress(OSError):
                    if path.read_text() == value:
                        continue
                fresh = folder / f".{key}.sync"
                fresh.write_text(value)
                fresh.chmod(0o644)
                os.replace(fresh, path)

    def _secret_volume(self, source: dict[str, Any]) -> dict[str, str]:
        return self.kubelet.secret(
            self.namespace, source["secretName"], optional=bool(source.get("optional"))
        )

    def _teardown(self) -> None:
        """preStop, SIGTERM, grace, SIGKILL; then the pod object goes (kwok does not)."""
        if any(m.process is not None for m in self.main):
            pre_stop = max(m.plan.pre_stop_s for m in self.main)
            if pre_stop and not self.gone.is_set():
                self.gone.wait(pre_stop)
        for m in self.main:
            if m.process is not None:
                m.process.stop(grace_s=m.grace_s)
                m.process = None
        self.kubelet.addresses.give_back(self.ip)
        if not self.gone.is_set():
            self.kubelet.delete_pod(self.namespace, self.name, self.pod["metadata"]["uid"])
        shutil.rmtree(self.sandbox, ignore_errors=True)

    # ---- status -----------------------------------------------------------------------------
    def _write(self, main: list[podstatus.Container] | None = None) -> None:
        if self.deleting.is_set():
            return
        status = podstatus.build(
            ip=self.ip,
            host_ip=self.host_ip,
            init=self.init,
            main=main if main is not None else [m.status for m in self.main],
            started_at=self.started_at,
        )
        status = podstatus.stamp(status, self._written, podstatus.now_iso())
        if status == self._written and not self._overwritten:
            return
        self._overwritten = False
        if self.kubelet.patch_status(self.namespace, self.name, status):
            self._written = status

    def seen(self, pod: dict[str, Any]) -> None:
        """The pod as the API holds it now: notice when its conditions are not ours."""
        mine = {c["type"]: c["status"] for c in self._written.get("conditions") or []}
        live = {
            c.get("type"): c.get("status")
            for c in (pod.get("status") or {}).get("conditions") or []
            if c.get("type") in mine
        }
        if mine and live != mine:
            self._overwritten = True


class Kubelet:
    def __init__(self, api: client.ApiClient, state: pathlib.Path) -> None:
        self.core = client.CoreV1Api(api)
        self.state = state
        # What every container learns about the API server (KUBERNETES_SERVICE_*): the
        # `kubernetes` Service's ClusterIP is not routable here, so the real address.
        # Host processes with a ServiceAccount token reach it by its real address too.
        self.api_server = str(api.configuration.host)
        server = urllib.parse.urlsplit(api.configuration.host)
        self.cluster_env = {
            "KUBERNETES_SERVICE_HOST": server.hostname or "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(server.port or 443),
        }
        self.addresses = Addresses()
        self.workers: dict[str, PodWorker] = {}
        self._nodes: dict[str, tuple[int, str]] = {}

    # ---- API calls the workers make ---------------------------------------------------------
    def node_address(self, node: str) -> tuple[int, str]:
        """(index for pod IPs, the node's InternalIP) from the node's podCIDR 127.1.N.0/24."""
        if node not in self._nodes:
            obj = self.core.read_node(node)
            cidr = ipaddress.ip_network(obj.spec.pod_cidr)
            index = int(str(cidr.network_address).split(".")[2])
            internal = next(
                (a.address for a in obj.status.addresses or [] if a.type == "InternalIP"),
                "127.0.0.1",
            )
            self._nodes[node] = (index, internal)
        return self._nodes[node]

    def volume_contents(
        self, pod: dict[str, Any]
    ) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
        """(configMap/secret/projected/downwardAPI volume contents by volume name, envFrom
        sources by name)."""
        ns = pod["metadata"]["namespace"]
        contents: dict[str, dict[str, str]] = {}
        for volume in pod["spec"].get("volumes") or []:
            if "configMap" in volume:
                contents[volume["name"]] = self.config_map(ns, volume["configMap"]["name"])
            elif "projected" in volume:
                contents[volume["name"]] = self._projected(pod, volume["projected"])
            elif "secret" in volume:
                source = volume["secret"]
                contents[volume["name"]] = self.secret(
                    ns, source["secretName"], optional=bool(source.get("optional"))
                )
            elif "downwardAPI" in volume:
                contents[volume["name"]] = plan_.downward_files(
                    pod, volume["downwardAPI"].get("items") or []
                )
        sources: dict[str, dict[str, str]] = {}
        containers = [*(pod["spec"].get("initContainers") or []), *pod["spec"]["containers"]]
        for container in containers:
            for source in container.get("envFrom") or []:
                if "secretRef" in source:
                    name = source["secretRef"]["name"]
                    sources[name] = self.secret(ns, name)
                elif "configMapRef" in source:
                    name = source["configMapRef"]["name"]
                    sources[name] = self.config_map(ns, name)
            for item in container.get("env") or []:
                ref = (item.get("valueFrom") or {}).get("secretKeyRef")
                if ref is None:
                    continue
                # As the kubelet does: a missing Secret or key stops the container from being
                # created (CreateContainerConfigError), naming it; optional refs are skipped.
                data = self.secret(ns, ref["name"], optional=bool(ref.get("optional")))
                if ref["key"] not in data and not ref.get("optional"):
                    raise plan_.Unsupported(
                        f"couldn't find key {ref['key']} in Secret {ns}/{ref['name']}"
                    )
                sources[ref["name"]] = data
        return contents, sources

    def _projected(self, pod: dict[str, Any], projected: dict[str, Any]) -> dict[str, str]:
        """A projected volume's files: what the API server's ServiceAccount admission mounts
        in every pod that may talk to it (a token, the cluster's CA, its namespace)."""
        ns = pod["metadata"]["namespace"]
        files: dict[str, str] = {}
        for source in projected.get("sources") or []:
            if "serviceAccountToken" in source:
                token = source["serviceAccountToken"]
                request = client.AuthenticationV1TokenRequest(
                    spec=client.V1TokenRequestSpec(
                        audiences=[token["audience"]] if token.get("audience") else [],
                        expiration_seconds=int(token.get("expirationSeconds", 3607)),
                    )
                )
                account = pod["spec"].get("serviceAccountName") or "default"
                made = self.core.create_namespaced_service_account_token(account, ns, request)
                files[token.get("path", "token")] = made.status.token
            elif "configMap" in source:
                data = self.config_map(ns, source["configMap"]["name"])
                for item in source["configMap"].get("items") or [
                    {"key": k, "path": k} for k in data
                ]:
                    files[item["path"]] = data[item["key"]]
            elif "downwardAPI" in source:
                files.update(plan_.downward_files(pod, source["downwardAPI"].get("items") or []))
            else:
                raise plan_.Unsupported(f"projected source {sorted(source)} is not supported")
        return files

    def secret(self, namespace: str, name: str, *, optional: bool = False) -> dict[str, str]:
        """A Secret's data; a missing one is an empty one when `optional`, as for the kubelet."""
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                if optional:
                    return {}
                raise plan_.Unsupported(f'secret "{name}" not found') from exc
            raise
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    def config_map(self, namespace: str, name: str) -> dict[str, str]:
        try:
            return dict(self.core.read_namespaced_config_map(name, namespace).data or {})
        except ApiException as exc:
            if exc.status == 404:
                raise plan_.Unsupported(f'configmap "{name}" not found') from exc
            raise

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        try:
            self.core.patch_namespaced_pod_status(
                name,
                namespace,
                {"status": status},
                _content_type="application/strategic-merge-patch+json",
            )
            return True
        except ApiException as exc:
            if exc.status != 404:
                log.warning("status of %s/%s: %s", namespace, name, exc.reason)
            return False

    def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        with contextlib.suppress(ApiException):
            self.core.delete_namespaced_pod(
                name,
                namespace,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid)
                ),
            )

    # ---- the watch --------------------------------------------------------------------------
    def observe(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        worker = self.workers.get(uid)
        if kind == "DELETED":
            if worker is not None:
                worker.gone.set()
                worker.deleting.set()
            return
        if worker is None:
            if meta.get("deletionTimestamp") or not pod["spec"].get("nodeName"):
                if meta.get("deletionTimestamp"):
                    self.delete_pod(meta["namespace"], meta["name"], uid)
                return
            worker = PodWorker(self, pod)
            self.workers[uid] = worker
            worker.start()
        elif meta.get("deletionTimestamp"):
            worker.deleting.set()
        else:
            worker.seen(pod)
        self.workers = {u: w for u, w in self.workers.items() if w.is_alive() or u == uid}

    def run(self) -> None:
        selector = plan_.RUN_LABEL  # any value: "container" runs images in runc
        while True:
            try:
                listing = self.core.list_pod_for_all_namespaces(label_selector=selector)
                for pod in listing.items:
                    self.observe("ADDED", self.core.api_client.sanitize_for_serialization(pod))
                stream = watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces,
                    label_selector=selector,
                    resource_version=listing.metadata.resource_version,
                    timeout_seconds=300,
                )
                for event in stream:
                    obj = self.core.api_client.sanitize_for_serialization(event["object"])
                    self.observe(event["type"], obj)
            except Exception:  # the API server may restart (tests do that): list again
                log.warning("pod watch failed; listing again", exc_info=True)
                time.sleep(1)

    def stop_all(self) -> None:
        for worker in list(self.workers.values()):
            worker.gone.set()
            worker.deleting.set()
        for worker in list(self.workers.values()):
            worker.join(timeout=40)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubeinfer-cluster kubelet", description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--state", required=True, type=pathlib.Path)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s: %(message)s"
    )
    kubelet = Kubelet(config.new_client_from_config(config_file=args.kubeconfig), args.state)

    def stop(signum: int, _frame: Any) -> None:
        kubelet.stop_all()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    kubelet.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
