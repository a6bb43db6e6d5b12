"""The featurestore cache directory (``$FEATURESTORE_HOME`` or ``~/.cache/featurestore``)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "FEATURESTORE_HOME"


def cache_dir() -> Path:
    """Return the cache directory, creating it on demand.

    Read from the environment on every call (not at import) so that tests and users can move
    it at any time, as ``KERAS_HOME`` moves Keras' cache.
    """
    root = os.environ.get(ENV_VAR)
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "featurestore"
    path.mkdir(parents=True, exist_ok=True)
    return path
