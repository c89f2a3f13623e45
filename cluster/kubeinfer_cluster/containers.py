"""Run a built image's container with runc, the way a kubelet would run the chart's pods.

Owns: writing an OCI bundle's ``config.json`` (``build_config``: pure, no I/O), Kubernetes'
rules for a container's process (command/args, ``$(VAR)`` expansion, env over the image's),
and starting, stopping and deleting containers by id under a caller-chosen runc state
directory, plus telling what to do when runc cannot run here. Root filesystems come from
``oci.unpack``; it never builds images (``images`` does) and never talks to Kubernetes.

Why these choices, on this kind of machine (a root shell in a VM with cgroup v1+v2 hybrid and
no CAP_SYS_RESOURCE):
- No ``linux.resources``: runc cannot apply them here (podman's defaults fail on rlimits and
  the hybrid cgroup layout); kubelet limits are not what these containers test.
- No network namespace: the container shares the caller's loopback, so tests reach it on
  127.0.0.0/8 and it reaches the local API server, exactly as the pod's IP would be reached.
- No rlimits: the container inherits the caller's, as a kubelet's containers inherit the
  runtime's; raising a hard limit would need CAP_SYS_RESOURCE.
- No capabilities, noNewPrivileges, read-only root and a tmpfs /tmp: the chart's
  securityContext (drop ALL, readOnlyRootFilesystem, an emptyDir on /tmp).
- The root filesystem is shared by every container of one image (read-only, absolute
  ``root.path``), so a second container starts without copying hundreds of MB.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

from kubeinfer_cluster.oci import ImageConfig

# Namespaces a pod's container gets, less the network one (see the module docstring).
NAMESPACES = ("pid", "ipc", "uts", "mount")
TMP_SIZE = "256m"


class ContainerError(RuntimeError):
    """runc or umoci failed; the message carries the command and its error output."""


@dataclasses.dataclass(frozen=True)
class Mount:
    """A bind mount (``source`` on the host) or a tmpfs (``source`` None)."""

    destination: str
    source: pathlib.Path | None = None
    readonly: bool = True
    size: str = TMP_SIZE

    def spec(self) -> dict[str, Any]:
        if self.source is None:
            options = ["nosuid", "nodev", "noexec", "mode=1777", f"size={self.size}"]
            return {
                "destination": self.destination,
                "type": "tmpfs",
                "source": "tmpfs",
                "options": options,
            }
        options = ["rbind", "nosuid", "nodev", "ro" if self.readonly else "rw"]
        return {
            "destination": self.destination,
            "type": "bind",
            "source": str(self.source),
            "options": options,
        }


def _run(args: Sequence[str], *, what: str, timeout: float = 600) -> str:
    try:
        proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise ContainerError(f"{what}: {args[0]} is not installed (apt-get install runc)") from exc
    if proc.returncode != 0:
        raise ContainerError(
            f"{what} failed (exit {proc.returncode}): {' '.join(args)}\n{proc.stderr.strip()}"
        )
    return proc.stdout


# --- config.json -----------------------------------------------------------------------------


def build_config(
    base: Mapping[str, Any],
    *,
    rootfs: pathlib.Path,
    args: Sequence[str],
    env: Sequence[str],
    cwd: str = "/",
    uid: int = 1000,
    gid: int = 1000,
    readonly: bool = True,
    mounts: Sequence[Mount] = (),
    hostname: str = "kubeinfer",
) -> dict[str, Any]:
    """``base`` (what `runc spec` writes) turned into a pod-like container's config.json.

    Pure: no I/O. Keeps runc's default mounts, masked and read-only paths; removes cgroup
    resources, rlimits, the network namespace and every capability (see the module docstring).
    A ``/tmp`` mount is always present: a tmpfs unless ``mounts`` names one.
    """
    if not args:
        raise ValueError("a container needs a process to run (args is empty)")
    # A deep copy: the caller's dict (runc_spec()'s cached one) is never changed.
    config: dict[str, Any] = json.loads(json.dumps(base))
    process = config["process"]
    process.update(
        terminal=False,
        user={"uid": uid, "gid": gid, "additionalGids": [gid]},
        args=list(args),
        env=list(env),
        cwd=cwd,
        noNewPrivileges=True,
        capabilities={k: [] for k in ("bounding", "effective", "permitted", "ambient")},
    )
    process.pop("rlimits", None)
    config["root"] = {"path": str(rootfs), "readonly": readonly}
    config["hostname"] = hostname
    linux = config.setdefault("linux", {})
    linux.pop("resources", None)
    linux["namespaces"] = [{"type": t} for t in NAMESPACES]
    wanted = {m.destination: m for m in mounts}
    wanted.setdefault("/tmp", Mount("/tmp"))
    kept = [m for m in config.get("mounts", []) if m["destination"] not in wanted]
    # Parents before children (runc mounts in order): /mnt/models before a file inside it.
    extra = sorted(wanted.values(), key=lambda m: m.destination.count("/"))
    config["mounts"] = kept + [m.spec() for m in extra]
    return config


def env_for(image: ImageConfig, extra: Mapping[str, str]) -> list[str]:
    """The image's environment with ``extra`` set over it (a pod's env wins over the image's)."""
    merged: dict[str, str] = {}
    for item in image.env:
        name, _, value = item.partition("=")
        merged[name] = value
    merged.update(extra)
    return [f"{name}={value}" for name, value in merged.items()]


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion of a command or argument: a defined variable is
    replaced, an undefined one stays as written, ``$$`` is a literal ``$``."""
    out: list[str] = []
    i = 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("$(", i) and (end := value.find(")", i + 2)) != -1:
            name = value[i + 2 : end]
            out.append(env[name] if name in env else value[i : end + 1])
            i = end + 1
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def process_args(
    image: ImageConfig,
    *,
    command: Sequence[str] | None = None,
    args: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """A pod container's process, by Kubernetes' rules: ``command`` replaces the image's
    ENTRYPOINT (and drops its CMD), ``args`` replaces CMD; both get ``$(VAR)`` expansion."""
    variables = dict(env or {})
    entrypoint = list(command) if command is not None else list(image.entrypoint)
    # A command without args runs alone: the image's CMD belonged to its ENTRYPOINT.
    default_rest = [] if command is not None else list(image.cmd)
    rest = list(args) if args is not None else default_rest
    return [expand(part, variables) for part in (*entrypoint, *rest)]


_base_spec: dict[str, Any] | None = None


def runc_spec() -> dict[str, Any]:
    """What `runc spec` writes with this machine's runc (read once per process)."""
    global _base_spec
    if _base_spec is None:
        with tempfile.TemporaryDirectory() as tmp:
            _run(["runc", "spec", "--bundle", tmp], what="runc spec")
            _base_spec = json.loads((pathlib.Path(tmp) / "config.json").read_text())
    spec: dict[str, Any] = json.loads(json.dumps(_base_spec))
    return spec


def bundle(
    directory: pathlib.Path,
    rootfs: pathlib.Path,
    *,
    args: Sequence[str],
    env: Sequence[str],
    mounts: Sequence[Mount] = (),
    uid: int = 1000,
    gid: int = 1000,
    readonly: bool = True,
    cwd: str = "/",
    hostname: str = "kubeinfer",
) -> pathlib.Path:
    """Write an OCI bundle (config.json, plus the /etc/hosts a kubelet would mount) in
    ``directory`` for ``rootfs``; returns ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    hosts = directory / "hosts"
    # Without it "localhost" resolves nowhere: images carry no /etc/hosts, runtimes mount one.
    hosts.write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\t{hostname}\n")
    all_mounts = [Mount("/etc/hosts", hosts), *mounts]
    config = build_config(
        runc_spec(),
        rootfs=rootfs,
        args=args,
        env=env,
        cwd=cwd,
        uid=uid,
        gid=gid,
        readonly=readonly,
        mounts=all_mounts,
        hostname=hostname,
    )
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return directory


# --- running ---------------------------------------------------------------------------------


class Container:
    """One runc container, addressed by id under ``state_root`` (runc's --root).

    ``run()`` keeps `runc run` in the foreground as a child, so the container's exit code is
    known (init containers, one-shot commands); ``create()`` + ``start()`` split the two
    phases so start-to-ready can be timed from ``start()`` alone. Output goes to ``log``.
    """

    def __init__(
        self, container_id: str, bundle_dir: pathlib.Path, state_root: pathlib.Path
    ) -> None:
        self.id = container_id
        self.bundle = bundle_dir
        self.state_root = state_root
        self.log = bundle_dir / "container.log"
        self._runc: subprocess.Popen[bytes] | None = None

    def _cmd(self, *args: str) -> list[str]:
        return ["runc", "--root", str(self.state_root), *args]

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        self.state_root.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            try:
                return subprocess.Popen(
                    self._cmd(*args),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except FileNotFoundError as exc:
                raise ContainerError("runc is not installed (apt-get install runc)") from exc

    def run(self) -> Container:
        """Create and start the container; `runc run` stays our child until it exits."""
        self._runc = self._spawn("run", "--bundle", str(self.bundle), self.id)
        return self

    def create(self) -> Container:
        """Set up the container (namespaces, mounts) without starting its process."""
        proc = self._spawn("create", "--bundle", str(self.bundle), self.id)
        code = proc.wait(timeout=120)
        if code != 0:
            raise ContainerError(f"runc create {self.id} failed (exit {code}):\n{self.output()}")
        return self

    def start(self) -> None:
        """Start the process of a created container."""
        _run(self._cmd("start", self.id), what=f"runc start {self.id}", timeout=60)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def state(self) -> dict[str, Any] | None:
        """`runc state` as a dict, or None once the container is deleted (or never was)."""
        proc = subprocess.run(self._cmd("state", self.id), capture_output=True, text=True)
        if proc.returncode != 0:
            return None
        state: dict[str, Any] = json.loads(proc.stdout)
        return state

    def status(self) -> str:
        state = self.state()
        return "deleted" if state is None else str(state["status"])

    def pid(self) -> int:
        state = self.state()
        if state is None or not state.get("pid"):
            raise ContainerError(f"container {self.id} has no process: {self.output()[-2000:]}")
        return int(state["pid"])

    def exit_code(self) -> int | None:
        """The container's exit code once `runc run` returned (``run()`` only), else None."""
        return None if self._runc is None else self._runc.poll()

    def wait(self, timeout: float) -> int:
        """Wait for a ``run()`` container to exit; its exit code."""
        if self._runc is None:
            raise ContainerError("wait() needs a container started with run()")
        try:
            return self._runc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise ContainerError(
                f"container {self.id} still running after {timeout:.0f} s:\n{self.output()[-3000:]}"
            ) from exc

    def kill(self, sig: signal.Signals = signal.SIGTERM) -> None:
        subprocess.run(self._cmd("kill", self.id, sig.name), capture_output=True)

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` s, as a kubelet does; then delete.

        The exit code for a ``run()`` container, else None."""
        if self.state() is not None:
            self.kill(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.status() not in ("stopped", "deleted") and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.status() not in ("stopped", "deleted"):
                self.kill(signal.SIGKILL)
        code = None
        if self._runc is not None:
            try:
                code = self._runc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._runc.kill()
                code = self._runc.wait()
        self.delete()
        return code

    def delete(self) -> None:
        subprocess.run(self._cmd("delete", "--force", self.id), capture_output=True)


def run(bundle_dir: pathlib.Path, container_id: str, *, state_root: pathlib.Path) -> Container:
    """Start the bundle's container in the foreground of a `runc run` child; the handle stops,
    kills and deletes it by id."""
    return Container(container_id, bundle_dir, state_root).run()


def clean_state(state_root: pathlib.Path) -> None:
    """Force-delete every container left under ``state_root`` (a crashed test's leftovers)."""
    if not state_root.exists():
        return
    for entry in state_root.iterdir():
        if entry.is_dir():
            Container(entry.name, state_root, state_root).delete()


# runc's error -> what to do about it, for the failures seen on machines of this project's kind.
_REMEDIES = (
    (
        "no cgroup mount found",
        "/sys/fs/cgroup is not mounted in this mount namespace (`ip netns exec` remounts /sys: "
        "enter a network namespace with `nsenter --net=/run/netns/NAME` instead)",
    ),
    (
        "operation not permitted",
        "runc needs root with CAP_SYS_ADMIN: run on a VM or host, not in an unprivileged "
        "container (or give that container --privileged)",
    ),
    (
        "permission denied",
        "runc needs root with CAP_SYS_ADMIN and a state directory it can write",
    ),
    (
        "cgroup",
        "runc could not create the container's cgroup: check that /sys/fs/cgroup is mounted "
        "read-write (cgroup v1, v2 or hybrid all work)",
    ),
)


def diagnose(output: str) -> str:
    """What to do about a runc failure, from its error output (pure)."""
    lowered = output.lower()
    for needle, remedy in _REMEDIES:
        if needle in lowered:
            return remedy
    return "see runc's error above; `runc --version` and `uname -r` help a bug report"


def smoke(rootfs: pathlib.Path, work: pathlib.Path, state_root: pathlib.Path) -> None:
    """Run one trivial container of ``rootfs`` (uid 1000, read-only root, as the tests do);
    ContainerError with runc's exact error and what to do when it cannot run here."""
    directory = bundle(work / "smoke", rootfs, args=["/bin/sh", "-c", "exit 0"], env=["PATH=/bin"])
    container = Container(f"ki-smoke-{os.getpid()}", directory, state_root).run()
    try:
        code = container.wait(timeout=60)
    finally:
        container.delete()
    if code != 0:
        output = container.output().strip()
        raise ContainerError(
            f"runc could not run a container here (exit {code}):\n{output}\n"
            f"what to do: {diagnose(output)}"
        )


def preflight(state_root: pathlib.Path) -> None:
    """Raise ContainerError with the exact reason when runc cannot run a container here."""
    if os.geteuid() != 0:
        raise ContainerError(
            "runc runs containers as root here (no rootless setup): run the images tier as "
            "root, or in a VM or CI job where you are root"
        )
    if shutil.which("runc") is None:
        raise ContainerError("runc is not installed: apt-get install runc (make images does)")
    if shutil.which("umoci") is None:
        raise ContainerError("umoci is not installed: apt-get install umoci (make images does)")
    state_root.mkdir(parents=True, exist_ok=True)
