"""Processes a test starts die with the test run, so a killed or crashed pytest leaves nothing
behind (the local cluster's components do the same: kubeinfer_cluster.run).

Start them from the thread that runs the tests: the kernel signals a child when the thread
that forked it exits.
"""

from __future__ import annotations

import ctypes
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """A ``preexec_fn`` for ``subprocess.Popen``: SIGKILL this child when its parent dies."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
