"""Which Ready transitions get an Event: every change, except a new service coming up normally
(the "Created" Event and status tell that story, so a create posts one Event, not two)."""

from __future__ import annotations

from typing import Any

import pytest

from kubeinfer.reconcilers.inferenceservice import announce


def ready(status: str, reason: str) -> dict[str, Any]:
    return {"type": "Ready", "status": status, "reason": reason, "message": "m"}


ON_THE_WAY = ready("False", "ReplicasNotReady")
SERVING = ready("True", "Serving")
NO_GPU = ready("False", "WaitingForGPUCapacity")
INVALID = ready("False", "InvalidSpec")


@pytest.mark.parametrize(
    ("before", "after", "coming_up", "event"),
    [
        # A new service this process created, coming up normally: status says each step.
        (None, ON_THE_WAY, True, False),
        (None, SERVING, True, False),
        (ON_THE_WAY, SERVING, True, False),
        # A problem on the way is a Warning worth an Event, and so is the recovery after it
        # (the caller ends the coming up when it writes a problem).
        (None, NO_GPU, True, True),
        (ON_THE_WAY, NO_GPU, True, True),
        (NO_GPU, SERVING, False, True),
        # Without the memory (a restarted operator): only a first "on the way" is quiet.
        (None, ON_THE_WAY, False, False),
        (None, SERVING, False, True),
        (ON_THE_WAY, SERVING, False, True),
        # A service that served and lost its replicas (then got them back: above).
        (SERVING, ON_THE_WAY, False, True),
        # No change, no Event.
        (SERVING, SERVING, False, False),
        (INVALID, INVALID, True, False),
        (None, INVALID, True, True),
    ],
)
def test_announce(
    before: dict[str, Any] | None, after: dict[str, Any], coming_up: bool, event: bool
) -> None:
    assert announce(before, after, coming_up=coming_up) is event
