"""Named classifiers shared by the CLI and the benchmark.

>>> make_classifier("logreg", {"C": 0.1})              # an unfitted Pipeline
>>> make_classifier("dense", parse_params(["hidden=128"], "dense"))

Parameters are those of the classifier itself (the last pipeline step), by their short
scikit-learn names: ``C`` for `linear-svm` reaches the LinearSVC inside the calibration.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from classifiers.ensembles import ENSEMBLES
from classifiers.errors import ParamError
from classifiers.keras_heads import DenseHead, GapHead
from classifiers.params import load_config, parse_literal, split_items, typed_params
from classifiers.pipelines import FINAL_STEP, SKLEARN_CLASSIFIERS
from classifiers.transforms import FEATURE_MODES, FeatureTransform

#: Keras heads take the maps themselves; `features` may put a FeatureTransform in front of
#: `dense` (a dense head on pooled vectors), never in front of `gap`, which pools by itself.
_HEADS: dict[str, type] = {"dense": DenseHead, "gap": GapHead}
#: scikit-learn models: the single pipelines, then the ensembles of the best of them.
_SKLEARN: dict[str, tuple[Any, str | None]] = {**SKLEARN_CLASSIFIERS, **ENSEMBLES}

__all__ = [
    "ParamError",
    "available",
    "current_params",
    "default_features",
    "final_estimator",
    "make_classifier",
    "parameters",
    "parse_params",
]


def available() -> list[str]:
    """Registered classifier names, Keras heads first."""
    return [*_HEADS, *_SKLEARN]


def _check_name(name: str) -> None:
    if name not in _HEADS and name not in _SKLEARN:
        raise ParamError(f"unknown classifier {name!r}; available: {', '.join(available())}")


def default_features(name: str) -> str | None:
    """The feature mode a classifier reads by default (None: the raw maps)."""
    _check_name(name)
    return None if name in _HEADS else _SKLEARN[name][1]


def _build(name: str, features: str | None) -> BaseEstimator:
    if features is not None and features not in FEATURE_MODES:
        raise ParamError(f"unknown features {features!r}; choose from {', '.join(FEATURE_MODES)}")
    if name in _HEADS:
        head = _HEADS[name](random_state=0)
        if features is None:
            return head
        if name == "gap":
            raise ParamError("gap pools the feature maps itself; --features does not apply to it")
        return Pipeline([("features", FeatureTransform(mode=features)), (FINAL_STEP, head)])
    builder, default = _SKLEARN[name]
    return builder(features or default)


def final_estimator(estimator: BaseEstimator) -> BaseEstimator:
    """The classifier itself: the last step of a pipeline, or the estimator."""
    return estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator


def _param_paths(estimator: BaseEstimator) -> dict[str, str]:
    """Public parameter name -> `set_params` key on `estimator`.

    Nested parameters (``estimator__C``) get their short name when no other parameter has
    it; parameters holding estimators are left out (they are the classifier's structure).
    """
    final = final_estimator(estimator)
    prefix = f"{FINAL_STEP}__" if final is not estimator else ""
    deep = final.get_params(deep=True)
    top = set(final.get_params(deep=False))
    shorts = [key.rsplit("__", 1)[-1] for key in deep]
    paths = {}
    for key, short in zip(deep, shorts, strict=True):
        if isinstance(deep[key], BaseEstimator):
            continue
        public = short if "__" in key and short not in top and shorts.count(short) == 1 else key
        paths[public] = prefix + key
    return paths


def parameters(name: str) -> dict[str, Any]:
    """The settable parameters of a classifier and their defaults."""
    _check_name(name)
    estimator = _build(name, None)
    paths = _param_paths(estimator)
    values = estimator.get_params(deep=True)
    return {public: values[key] for public, key in paths.items()}


def current_params(estimator: BaseEstimator) -> dict[str, Any]:
    """The public parameters of a registry estimator and their current values."""
    values = estimator.get_params(deep=True)
    return {public: values[key] for public, key in _param_paths(estimator).items()}


def make_classifier(
    name: str, params: Mapping[str, Any] | None = None, features: str | None = None
) -> BaseEstimator:
    """A new unfitted estimator `name`, with `params` set on the classifier.

    `features` picks the FeatureTransform (flatten, avg, max; None: the classifier's
    default). Values may be strings (from a CLI or a config file); they are typed by the
    defaults. Raises `ParamError` (a ValueError) naming a bad classifier, feature mode or
    parameter. The `params` mapping is read, never modified.
    """
    _check_name(name)
    estimator = _build(name, features)
    paths = _param_paths(estimator)
    values = estimator.get_params(deep=True)
    defaults = {public: values[key] for public, key in paths.items()}
    typed = typed_params(dict(params or {}), defaults, owner=name)
    estimator.set_params(**{paths[public]: value for public, value in typed.items()})
    return estimator


def parse_params(items: Iterable[str], classifier: str | None = None) -> dict[str, Any]:
    """``["C=0.1", "hidden=128"]`` -> ``{"C": 0.1, "hidden": 128}``.

    With `classifier`, names are checked and values typed by that classifier's defaults
    (`ParamError` names the first bad one); without, values are typed as literals.
    """
    raw = split_items(items)
    if classifier is None:
        return {name: parse_literal(value) for name, value in raw.items()}
    return typed_params(raw, parameters(classifier), owner=classifier)


def training_settings(
    config: str | Path | None, classifier: str | None, features: str | None, items: Iterable[str]
) -> tuple[str, str | None, dict[str, Any]]:
    """Merge a config file with command-line choices (which win); `--param` values are typed by
    the classifier's defaults. Returns (classifier, features, params)."""
    settings = load_config(config) if config else {"params": {}}
    classifier = classifier or settings.get("classifier")
    if not classifier:
        raise ParamError("no classifier: pass --classifier NAME (or set it in --config)")
    params = {**settings["params"], **parse_params(items, classifier)}
    return classifier, features or settings.get("features"), params
