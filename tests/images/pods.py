"""Run the built images in runc the way the chart and the operator's Deployments run them.

A test names the image and gives the container's command, args and env as a pod spec would
(usually taken from the chart or from kubeinfer's builders); this module turns them into a
runc bundle: the image's rootfs read-only, uid 1000, no capabilities, /tmp a tmpfs, volumes as
bind mounts, the host's loopback as the pod's network. Every container gets a unique runc id
under the session's state directory and is stopped (SIGTERM, then SIGKILL) and deleted by the
test that started it.

Why the address rewrite: a pod binds 0.0.0.0 inside its own network namespace; these
containers share the host's, so 0.0.0.0 becomes 127.0.0.1 (what stands for the pod's IP) and
nothing listens on the machine's other interfaces.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence

from kubeinfer_cluster import containers, images, oci

UID = GID = 1000  # the chart's and the InferenceRuntime's runAsUser / runAsGroup / fsGroup
POD_ADDRESS = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((POD_ADDRESS, 0))
        port: int = sock.getsockname()[1]
        return port


def http_status(url: str, timeout: float = 2) -> int | None:
    """The HTTP status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def empty_dir(path: pathlib.Path) -> pathlib.Path:
    """An emptyDir as the kubelet makes it with fsGroup 1000: writable by the pod's user."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, UID, GID)
    path.chmod(0o2775)
    return path


def pod_address(args: Sequence[str]) -> list[str]:
    return [arg.replace("0.0.0.0", POD_ADDRESS) for arg in args]


@dataclasses.dataclass
class Images:
    """The session's built images, unpacked once each, and where its containers live."""

    built: dict[str, images.Built]
    work: pathlib.Path
    state: pathlib.Path

    def config(self, image: str) -> oci.ImageConfig:
        return oci.read_archive(self.built[image].archive).config

    def rootfs(self, image: str) -> pathlib.Path:
        return oci.unpack(self.built[image].archive, images.rootfs_cache())

    def container(
        self,
        image: str,
        name: str,
        *,
        command: Sequence[str] | None = None,
        args: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        mounts: Sequence[containers.Mount] = (),
    ) -> containers.Container:
        """A created-but-not-started container of ``image`` (call run() or create())."""
        variables = dict(env or {})
        config = self.config(image)
        process = containers.process_args(config, command=command, args=args, env=variables)
        container_id = f"ki-{name}-{uuid.uuid4().hex[:8]}"
        bundle = containers.bundle(
            self.work / container_id,
            self.rootfs(image),
            args=pod_address(process),
            env=containers.env_for(config, {"HOSTNAME": name, **variables}),
            mounts=mounts,
            uid=UID,
            gid=GID,
            readonly=True,
            hostname=name,
        )
        return containers.Container(container_id, bundle, self.state)

    @contextlib.contextmanager
    def running(self, image: str, name: str, **kwargs: object) -> Iterator[containers.Container]:
        """The container, started with `runc run`; always stopped and deleted afterwards."""
        container = self.container(image, name, **kwargs)  # type: ignore[arg-type]
        container.run()
        try:
            yield container
        finally:
            container.stop(timeout=20)


def process_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict (Uid, Gid, CapEff, ...), read from the host."""
    out = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def root_mount_options(pid: int) -> list[str]:
    """The mount options of the process's / (from its mountinfo, seen from the host)."""
    for line in pathlib.Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":
            return fields[5].split(",")
    raise AssertionError(f"no / in /proc/{pid}/mountinfo")
