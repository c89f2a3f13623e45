"""A pod's status as the real kubelet writes it, from what the local kubelet knows. Pure.

Owns: the container state records (waiting / running / terminated, lastState, restartCount,
ready), the pod conditions that follow from them (Initialized, ContainersReady, Ready) and the
phase. The kubelet writes the result with a strategic merge patch, so PodScheduled (the
scheduler's) stays as it is.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

# What the real kubelet keeps of a FallbackToLogsOnError log tail: 80 lines, 2048 bytes.
TAIL_LINES, TAIL_BYTES = 80, 2048


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def termination_message(log: str) -> str:
    """The tail of a container's log, as the kubelet takes it for FallbackToLogsOnError."""
    tail = "\n".join(log.rstrip("\n").splitlines()[-TAIL_LINES:])
    data = tail.encode()[-TAIL_BYTES:]
    return data.decode(errors="replace")


@dataclasses.dataclass
class Container:
    """One container's state, mutated by its worker; ``record`` renders it."""

    name: str
    image: str
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    message: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    last_terminated: dict[str, Any] | None = None
    restart_count: int = 0
    ready: bool = False
    started: bool = False

    def waiting(self, reason: str, message: str = "") -> None:
        self.state, self.reason, self.message, self.ready = "waiting", reason, message, False

    def running(self) -> None:
        self.state, self.reason, self.message = "running", "", ""
        self.started_at, self.started, self.ready = now_iso(), False, False

    def terminated(self, exit_code: int, message: str) -> None:
        self.state, self.exit_code, self.message = "terminated", exit_code, message
        self.reason = "Completed" if exit_code == 0 else "Error"
        self.finished_at, self.started = now_iso(), False
        self.ready = False

    def restarting(self, backoff_s: float) -> None:
        """Terminated -> lastState; waiting in CrashLoopBackOff until the restart."""
        self.last_terminated = self._terminated()
        self.restart_count += 1
        self.waiting(
            "CrashLoopBackOff",
            f"back-off {backoff_s:g}s restarting failed container={self.name}",
        )

    def _terminated(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "exitCode": self.exit_code if self.exit_code is not None else 0,
            "reason": self.reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
        }
        if self.message:
            out["message"] = self.message
        return out

    def record(self) -> dict[str, Any]:
        if self.state == "running":
            state: dict[str, Any] = {"running": {"startedAt": self.started_at}}
        elif self.state == "terminated":
            state = {"terminated": self._terminated()}
        else:
            state = {"waiting": {"reason": self.reason}}
            if self.message:
                state["waiting"]["message"] = self.message
        out: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": state,
            "lastState": {"terminated": self.last_terminated} if self.last_terminated else {},
        }
        return out


def _condition(kind: str, ok: bool, reason: str = "") -> dict[str, Any]:
    # None deletes the key under the strategic merge patch: a condition that turns True must
    # not keep the reason it had while False.
    return {"type": kind, "status": "True" if ok else "False", "reason": None if ok else reason}


def build(
    *,
    ip: str | None,
    host_ip: str,
    init: list[Container],
    main: list[Container],
    started_at: str,
) -> dict[str, Any]:
    """The ``status`` of the pod. lastTransitionTime is stamped by ``stamp`` against the
    previous status, so a condition keeps its time while its status holds."""
    initialized = all(c.state == "terminated" and c.exit_code == 0 for c in init)
    ready = initialized and bool(main) and all(c.ready for c in main)
    running = initialized and any(c.state == "running" for c in main)
    status: dict[str, Any] = {
        "phase": "Running" if running or (initialized and main) else "Pending",
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": started_at,
        "conditions": [
            _condition("PodReadyToStartContainers", ip is not None),
            _condition("Initialized", initialized, "ContainersNotInitialized"),
            _condition("ContainersReady", ready, "ContainersNotReady"),
            _condition("Ready", ready, "ContainersNotReady"),
        ],
        "initContainerStatuses": [
            {**c.record(), "ready": c.state == "terminated" and c.exit_code == 0} for c in init
        ],
        "containerStatuses": [c.record() for c in main],
    }
    if ip is not None:
        status["podIP"], status["podIPs"] = ip, [{"ip": ip}]
    return status


def stamp(status: dict[str, Any], previous: dict[str, Any], now: str) -> dict[str, Any]:
    """lastTransitionTime on each condition: kept while its status holds, else ``now``."""
    before = {c.get("type"): c for c in previous.get("conditions") or []}
    conditions = []
    for cond in status["conditions"]:
        old = before.get(cond["type"])
        same = old is not None and old.get("status") == cond["status"]
        when = old.get("lastTransitionTime") if same and old else None
        conditions.append({**cond, "lastTransitionTime": when or now})
    return {**status, "conditions": conditions}
