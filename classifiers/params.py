"""Parse `--param name=value` strings and config files into typed parameter dicts."""

from __future__ import annotations

import json
import math
import numbers
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from classifiers.errors import ParamError

__all__ = ["ParamError", "coerce", "load_config", "parse_literal", "split_items", "typed_params"]

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NONE = {"none", "null"}


def split_items(items: Iterable[str]) -> dict[str, str]:
    """``["C=0.1", "hidden=128"]`` -> ``{"C": "0.1", "hidden": "128"}`` (last one wins)."""
    raw: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ParamError(f"parameter {item!r} is not of the form name=value")
        raw[name] = value.strip()
    return raw


def parse_literal(text: str) -> Any:
    """Best-effort typing of a value with no default to go by: bool, None, int, float, JSON, str."""
    lowered = text.lower()
    if lowered in _NONE:
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    return text


def coerce(name: str, value: Any, default: Any) -> Any:
    """Type `value` like `default`; strings are parsed, other values are checked.

    Raises `ParamError` naming the parameter when the value cannot be of the default's type.
    A parameter whose default is None or a string takes any literal ("none", numbers, text),
    because scikit-learn's such parameters often take numbers too (``max_features="sqrt"``
    or ``0.5``); scikit-learn's own checks in `fit` have the last word on those.
    """
    is_text = isinstance(value, str)
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if is_text and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ParamError(f"parameter {name}={value!r}: expected true or false")
    if isinstance(default, numbers.Integral):
        number = _to_number(name, value, "an integer")
        if isinstance(number, float) and not (math.isfinite(number) and number.is_integer()):
            raise ParamError(f"parameter {name}={value!r}: expected an integer")
        return int(number)
    if isinstance(default, numbers.Real):
        return float(_to_number(name, value, "a number"))
    if is_text and (default is None or isinstance(default, str)):
        return parse_literal(value)
    if is_text and isinstance(default, list | tuple):
        parsed = parse_literal(value)
        if not isinstance(parsed, list):
            raise ParamError(f"parameter {name}={value!r}: expected a JSON list such as [1, 2]")
        return type(default)(parsed)
    return value


def _to_number(name: str, value: Any, what: str) -> int | float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        for convert in (int, float):
            try:
                return convert(value)
            except ValueError:
                pass
    raise ParamError(f"parameter {name}={value!r}: expected {what}")


def typed_params(raw: Mapping[str, Any], defaults: Mapping[str, Any], owner: str) -> dict:
    """Check every name against `defaults` and coerce every value; returns a new dict."""
    typed: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in defaults:
            known = ", ".join(sorted(defaults))
            raise ParamError(f"unknown parameter {name!r} for {owner}; known: {known}")
        typed[name] = coerce(name, value, defaults[name])
    return typed


def load_config(path: str | Path) -> dict[str, Any]:
    """Read ``{"classifier": ..., "features": ..., "params": {...}}`` from a .toml or .json file.

    Every key is optional; unknown top-level keys are refused so that a typo is not ignored.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ParamError(f"cannot read config {path}: {exc.strerror or exc}") from exc
    try:
        if path.suffix.lower() == ".toml":
            if sys.version_info < (3, 11):
                raise ParamError(f"config {path}: TOML needs Python 3.11; use a .json file")
            import tomllib

            config = tomllib.loads(text)
        else:
            config = json.loads(text)
    except ValueError as exc:  # both JSONDecodeError and TOMLDecodeError are ValueErrors
        if isinstance(exc, ParamError):
            raise
        raise ParamError(f"config {path} is not valid {path.suffix[1:] or 'JSON'}: {exc}") from exc
    if not isinstance(config, dict):
        raise ParamError(f"config {path} must hold a table/object")
    unknown = set(config) - {"classifier", "features", "params"}
    if unknown:
        raise ParamError(f"config {path}: unknown keys {sorted(unknown)}")
    if not isinstance(config.get("params", {}), dict):
        raise ParamError(f"config {path}: 'params' must be a table/object")
    return {"params": {}, **config}
