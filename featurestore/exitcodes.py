"""Exit codes a scheduler can act on (docs/exit-codes.md).

Each outcome that calls for a different action has its own code: retry later (refused, interrupted),
look at the data (failed images, drift), fix the job (bad input), keep the old model (gate).
2 is click's usage error and 126-128 and 128+N belong to the shell, so ours sit in 3-9; the
interrupted codes are the shell's own 128 + signal number, as a killed process would report.
"""

from __future__ import annotations

import signal

#: The job did what it was asked and nothing needs attention.
OK = 0
#: An unexpected error (a bug, a full disk): read the log.
ERROR = 1
#: click's code for a command line it cannot parse (unknown option, missing argument).
USAGE = 2
#: The job finished and committed its work, but some images could not be read (only with --strict).
FAILED_IMAGES = 3
#: The job finished, but tonight's images differ from the earlier ones beyond --fail-on-drift.
DRIFT = 4
#: Nothing was done: another writer holds the store, or the store was built with other settings.
REFUSED = 5
#: Nothing was done: a source, store, model or option that cannot be used as given.
BAD_INPUT = 6
#: A retrained model was not promoted: below --min-accuracy, or not better than the baseline.
GATE_FAILED = 7
#: Stopped by Ctrl-C (SIGINT) after keeping the finished work.
INTERRUPTED_SIGINT = 128 + signal.SIGINT
#: Stopped by SIGTERM (a scheduler's stop, a timeout) after keeping the finished work.
INTERRUPTED_SIGTERM = 128 + signal.SIGTERM

#: name -> code, for docs and tests.
CODES: dict[str, int] = {
    "OK": OK,
    "ERROR": ERROR,
    "USAGE": USAGE,
    "FAILED_IMAGES": FAILED_IMAGES,
    "DRIFT": DRIFT,
    "REFUSED": REFUSED,
    "BAD_INPUT": BAD_INPUT,
    "GATE_FAILED": GATE_FAILED,
    "INTERRUPTED_SIGINT": INTERRUPTED_SIGINT,
    "INTERRUPTED_SIGTERM": INTERRUPTED_SIGTERM,
}


def exit_code_for(error: BaseException) -> int:
    """The exit code for an exception that ends a job.

    An error class may name its own code (an `exit_code` attribute other than the base's 1);
    otherwise the store lock's `LockedError` is REFUSED, an unreadable source BAD_INPUT, Ctrl-C
    130, and anything else ERROR.
    """
    from featurestore.errors import ConfigError, FeaturestoreError
    from featurestore.lock import LockedError
    from featurestore.sources import SourceError

    own = getattr(error, "exit_code", ERROR)
    if isinstance(error, FeaturestoreError) and isinstance(own, int) and own != ERROR:
        return own
    if isinstance(error, LockedError):
        return REFUSED
    if isinstance(error, SourceError | ConfigError):
        return BAD_INPUT
    if isinstance(error, KeyboardInterrupt):
        return INTERRUPTED_SIGINT
    return ERROR


def exit_code_for_result(*, failed_images: int = 0, strict: bool = False, drifted: bool = False) -> int:
    """The exit code of a job that finished: drift first (it asks a person to look), then
    failed images under --strict, else OK."""
    if drifted:
        return DRIFT
    if failed_images and strict:
        return FAILED_IMAGES
    return OK
