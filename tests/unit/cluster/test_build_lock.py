"""One build per cache at a time: a second builder waits for the first, and a builder that
already holds the lock can take it again (ensure_tools inside the CLI's build, for example)."""

from __future__ import annotations

import fcntl
import pathlib
import subprocess
import sys
import textwrap

from kubeinfer_cluster import build
from tests.waiting import wait_for

HOLDER = textwrap.dedent(
    """
    import pathlib, sys
    from kubeinfer_cluster import build
    with build._exclusive(pathlib.Path(sys.argv[1])):
        print("held", flush=True)
        sys.stdin.readline()
    """
)


def _free(root: pathlib.Path) -> bool:
    with (root / ".build.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(lock, fcntl.LOCK_UN)
        return True


def test_a_second_builder_waits_until_the_first_is_done(tmp_path: pathlib.Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "held"
        assert not _free(tmp_path)
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=30) == 0
        wait_for(lambda: _free(tmp_path), 10, "the lock released when its holder ends")
    finally:
        holder.kill()


def test_the_lock_is_reentrant_in_one_thread(tmp_path: pathlib.Path) -> None:
    with build._exclusive(tmp_path):
        with build._exclusive(tmp_path):
            assert not _free(tmp_path)
        assert not _free(tmp_path)  # the outer hold still stands
    assert _free(tmp_path)
