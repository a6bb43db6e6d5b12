"""TensorFlow's start-up lines, silenced once for the whole process.

TensorFlow logs through absl before absl is initialised, which ignores `TF_CPP_MIN_LOG_LEVEL`:
every command that imports it printed "oneDNN custom operations are on" and "Could not find
cuda drivers" (twice) on stderr. `quiet_tensorflow()` sets the log level and, on the first
import of TensorFlow, filters those known lines out of the native stderr; anything else
TensorFlow prints while importing (a real error) still reaches stderr.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from types import ModuleType

_NOISE = re.compile(
    rb"All log messages before absl::InitializeLog|oneDNN custom operations are on"
    rb"|Could not find cuda drivers|Unable to register cu(DNN|FFT|BLAS) factory"
    rb"|computation placer already registered|TF-TRT Warning|This TensorFlow binary is optimized"
    rb"|To enable the following instructions|failed call to cuInit"
)


def quiet_tensorflow() -> None:
    """Idempotent: set TensorFlow's log level (an explicit setting wins) and filter its import."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietImport) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietImport())


@contextlib.contextmanager
def filtered_native_stderr() -> Iterator[None]:
    """Capture file descriptor 2 (C++ writes bypass sys.stderr) and replay all but the noise
    (also around TensorFlow's first device probe, which logs "failed call to cuInit")."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().splitlines(keepends=True):
                if not _NOISE.search(line):
                    os.write(2, line)


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` as usual, and runs its module code under the filter (once)."""

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            with filtered_native_stderr():
                run(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec
