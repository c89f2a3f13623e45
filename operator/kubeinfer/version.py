"""The package's version, read from its installed metadata (the repository's VERSION file)."""

from __future__ import annotations

import importlib.metadata

VERSION = importlib.metadata.version("kubeinfer")
