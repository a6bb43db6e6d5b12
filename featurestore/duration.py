"""Durations on the command line ('90s', '15m', '12h', '7d'): a light module, for the CLI."""

from __future__ import annotations

import re

from featurestore.errors import FeaturestoreError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class DurationError(FeaturestoreError, ValueError):
    """Text that is not a duration."""


def parse_duration(text: str) -> float:
    """Seconds of '90', '90s', '15m', '12h' or '7d'."""
    match = _DURATION.match(text)
    if match is None:
        raise DurationError(f"{text!r} is not a duration (e.g. 0, 90s, 15m, 12h, 7d)")
    return float(match[1]) * _UNIT_SECONDS[match[2]]
