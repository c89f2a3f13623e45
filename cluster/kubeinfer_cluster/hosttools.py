"""Host commands the image build and the images tier need: installing them, running them.

Owns: which Debian package provides each command, installing missing ones with apt-get (or
saying exactly how when that cannot work), and running a long command with progress on the
terminal and its full output in a log file. Nothing here knows about images.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence

# Debian package of each host command `make images` and the images tier use.
HOST_TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "buildah": "buildah",
    "skopeo": "skopeo",
    "umoci": "umoci",
    "runc": "runc",
}


class HostToolError(RuntimeError):
    """A host command is missing or failed; the message says what to do."""


def say(message: str) -> None:
    print(f"[kubeinfer images] {message}", file=sys.stderr, flush=True)


def ensure_host_tools(commands: Iterable[str] = tuple(HOST_TOOLS)) -> None:
    """Install the Debian packages of any missing command with apt-get, or say how."""
    missing = sorted({HOST_TOOLS[c] for c in commands if shutil.which(c) is None})
    if not missing:
        return
    install = f"apt-get install --no-install-recommends {' '.join(missing)}"
    if shutil.which("apt-get") is None:
        raise HostToolError(
            f"missing {', '.join(missing)} and there is no apt-get here: install them with "
            "your distribution's package manager (Debian/Ubuntu: "
            f"`{install}`), then rerun `make images`"
        )
    if os.geteuid() != 0:
        raise HostToolError(f"missing {', '.join(missing)}: run `sudo {install}`, then rerun")
    say(f"installing {', '.join(missing)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    args = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if subprocess.run(args, env=env, capture_output=True).returncode != 0:
        # A fresh machine's package lists may be missing or stale: refresh once, then retry.
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        proc = subprocess.run(args, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise HostToolError(f"`{' '.join(args)}` failed:\n{proc.stderr[-3000:]}")


def stream(args: Sequence[str], *, log: pathlib.Path, step: str, show: tuple[str, ...]) -> None:
    """Run a long command: its whole output to ``log``, the lines containing one of ``show`` and a
    heartbeat every 30 s to the terminal, the log's tail in the error when it fails."""
    started = time.monotonic()
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(30):
            say(f"{step}: still running ({time.monotonic() - started:.0f} s)")

    threading.Thread(target=heartbeat, daemon=True).start()
    tail: list[str] = []
    try:
        with log.open("w") as fh:
            proc = subprocess.Popen(
                list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                fh.write(line)
                tail = [*tail[-59:], line.rstrip()]
                if any(marker in line for marker in show):
                    say(f"{step}: {line.rstrip()[:160]}")
            code = proc.wait()
    except FileNotFoundError as exc:
        raise HostToolError(f"{step}: {args[0]} is not installed") from exc
    finally:
        done.set()
    if code != 0:
        raise HostToolError(f"{step} failed (exit {code}); full log: {log}\n" + "\n".join(tail))
