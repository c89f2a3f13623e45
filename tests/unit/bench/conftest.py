"""The autoscaling benchmark's modules live in bench/autoscaling as scripts: import them as such."""

from __future__ import annotations

import pathlib
import sys

BENCH = pathlib.Path(__file__).resolve().parents[3] / "bench" / "autoscaling"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
