"""Install the model's config file: the generated one, merged over one shipped with the model.

Owns: where the runtime reads the per-model config (``<repository>/<model>/<file name>``) and
the atomic write of it. The operator mounts its generated config outside the repository (so it
never hides a file the model ships); after the fetch this puts it in place, merged with a
shipped config.pbtxt by ``core.triton_merge`` (the spec wins for what it decides, the shipped
file keeps the rest). A file that is not a config.pbtxt is installed as generated.
"""

from __future__ import annotations

import logging
import os
import pathlib
import tempfile

from kubeinfer.core import triton_merge
from kubeinfer.storage import errors, layout

logger = logging.getLogger(__name__)

TRITON_CONFIG = "config.pbtxt"


def install_config(generated: pathlib.Path, dest: pathlib.Path, *, model_name: str) -> pathlib.Path:
    """Write ``dest/<model_name>/<generated's name>``; return its path."""
    layout.validate_model_name(model_name)
    try:
        ours = generated.read_text()
    except OSError as err:
        raise errors.InvalidModelConfig(
            f"cannot read the generated config {generated}: {err.strerror or err}"
        ) from None
    target = dest / model_name / generated.name
    content = ours
    if generated.name == TRITON_CONFIG and target.is_file():
        try:
            content = triton_merge.merge(ours, target.read_text())
        except triton_merge.ConfigSyntaxError as err:
            raise errors.InvalidModelConfig(
                f"the {TRITON_CONFIG} shipped with model {model_name!r} is not valid text "
                f"format: {err}"
            ) from None
        except (OSError, UnicodeDecodeError) as err:
            raise errors.InvalidModelConfig(
                f"cannot read the {TRITON_CONFIG} shipped with model {model_name!r}: {err}"
            ) from None
        logger.info("merged the generated %s over the one shipped in %s", TRITON_CONFIG, target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written beside the target and renamed over it: the runtime never reads half a file.
        fd, tmp = tempfile.mkstemp(prefix=".config-", dir=target.parent)
        with os.fdopen(fd, "w") as out:
            out.write(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as err:
        raise errors.StorageError(f"writing {target} failed: {err.strerror or err}") from None
    return target
