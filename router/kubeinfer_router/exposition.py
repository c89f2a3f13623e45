"""Read one gauge out of a pod's Prometheus text exposition. Pure: no I/O.

Owns the one parse the router does four times a second per pod: the sum, over every label
set (models and versions), of one metric such as Triton's
`nv_inference_pending_request_count`. A line scan rather than prometheus_client's parser:
the router needs one family, and the full parser costs ~50x more on a Triton page.
"""

from __future__ import annotations

import math


def sum_samples(text: str, name: str) -> float | None:
    """The sum of every sample of `name`; None when the page has none (or only garbage)."""
    total = 0.0
    found = False
    start = 0
    length = len(name)
    while True:
        at = text.find(name, start)
        if at < 0:
            break
        start = at + length
        # A sample line starts with the name and continues with labels or a space; anything
        # else is a longer name (`..._count_total`), a comment or text inside a label value.
        if at and text[at - 1] != "\n":
            continue
        end = text.find("\n", start)
        line = text[start:] if end < 0 else text[start:end]
        if line.startswith("{"):
            close = line.rfind("}")
            if close < 0:
                continue
            line = line[close + 1 :]
        elif not line.startswith((" ", "\t")):
            continue
        fields = line.split()
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        if math.isnan(value):
            continue
        total += value
        found = True
    return total if found else None
