"""How every config validates itself: one-line `ConfigError`s that name the option.

Config dataclasses (`ExtractConfig`, `BenchConfig`, `FinetuneConfig`) call these in
`__post_init__`, so the Python API refuses what the CLI refuses, with the same words.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

from featurestore.errors import ConfigError


def check_int(option: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """`value` as an int in [low, high]; `ConfigError` naming `--option` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"--{option} must be an integer, not {value!r}")
    _check_range(option, value, low, high)
    return value


def check_number(
    option: str, value: Any, low: float | None = None, high: float | None = None, *, positive: bool = False
) -> float:
    """`value` as a finite number in [low, high] (> 0 with `positive`)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"--{option} must be a finite number, not {value!r}")
    if positive and not value > 0:
        raise ConfigError(f"--{option} must be positive, not {value}")
    _check_range(option, value, low, high)
    return float(value)


def check_choice(option: str, value: Any, choices: Collection[Any]) -> Any:
    if value not in choices:
        raise ConfigError(f"--{option} must be one of {', '.join(map(str, choices))}, not {value!r}")
    return value


def _check_range(option: str, value: float, low: float | None, high: float | None) -> None:
    if low is not None and high is not None and not low <= value <= high:
        raise ConfigError(f"--{option} must be between {low} and {high}, not {value}")
    if low is not None and value < low:
        raise ConfigError(f"--{option} must be at least {low}, not {value}")
    if high is not None and value > high:
        raise ConfigError(f"--{option} must be at most {high}, not {value}")
