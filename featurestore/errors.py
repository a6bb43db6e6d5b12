"""The project's one error tree.

Every error that featurestore or classifiers raise on purpose (bad input, a damaged store, a
refused run) derives from `FeaturestoreError`, and its message is one line naming the file or
option and the reason. The CLI turns exactly these into one line on stderr and an exit code;
anything else is a bug and keeps its traceback (as click does with `ClickException`).
"""

from __future__ import annotations

import signal


class FeaturestoreError(Exception):
    """Base of every deliberate error; `str(error)` is one line for the user."""

    exit_code = 1


class ConfigError(FeaturestoreError, ValueError):
    """A setting that cannot work (an option out of range, a bad combination); names the option."""


class JobInterrupted(FeaturestoreError):
    """A long job stopped by SIGTERM or SIGINT after keeping its finished work."""

    def __init__(self, signum: int, detail: str = "finished work is kept") -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}; {detail}")
        self.signum = signum

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return 128 + self.signum  # what the shell reports for a process killed by the signal
