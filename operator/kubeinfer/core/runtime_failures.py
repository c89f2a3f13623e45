"""Why a serving container exited, read from its termination message. Pure.

Owns: recognising a runtime's model-load failure in the log tail the kubelet keeps as the
termination message (``terminationMessagePolicy: FallbackToLogsOnError``), and the condition
reason for it. Triton runs with ``--exit-on-error=true``: the pod serves exactly one model, so
a model that cannot load should stop the container where the kubelet and status can see it,
rather than leave a live but never-ready server. Its error is then one line in that tail
(the default runtime turns info logging off so the tail is not taken by Triton's start-up
tables); this module finds the line so status can say ``ModelLoadFailed: <Triton's words>``
instead of only CrashLoopBackOff.
"""

from __future__ import annotations

import re

MODEL_LOAD_FAILED = "ModelLoadFailed"
_MAX_MESSAGE = 1000

# E1202 06:25:38.819075 3791 model_lifecycle.cc:642] "failed to load 'mlp' version 1: ..."
_TRITON_ERROR = re.compile(r'^E\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "(?P<message>.*)"\s*$')
# [libprotobuf ERROR .../text_format.cc:337] Error parsing text-format inference.ModelConfig: ...
_PROTO_ERROR = re.compile(r"Error parsing text-format inference\.ModelConfig: (?P<detail>.*)$")
_LOAD_ERRORS = ("failed to load", "Poll failed for model directory")
# The last line Triton prints when --exit-on-error stops it.
_FINAL = re.compile(r"^error: creating server: (?P<message>.*failed to load.*)$")


def model_load_error(termination_message: str) -> str | None:
    """The runtime's own one-line account of a model that failed to load, or None."""
    lines = [line.strip() for line in termination_message.splitlines()]
    found: list[str] = []
    for line in lines:
        match = _TRITON_ERROR.match(line)
        if match and any(marker in match["message"] for marker in _LOAD_ERRORS):
            found.append(_unescape(match["message"]))
    detail = next((m["detail"] for line in lines if (m := _PROTO_ERROR.search(line))), None)
    if detail and found:
        found[0] = f"{found[0]} ({detail})"
    if not found:
        final = next((m["message"] for line in lines if (m := _FINAL.match(line))), None)
        if final is None:
            return None
        found.append(final)
    message = "; ".join(dict.fromkeys(found))
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 3] + "..."


def _unescape(message: str) -> str:
    # Triton quotes its log messages; a quote inside one is escaped.
    return message.replace('\\"', '"')
