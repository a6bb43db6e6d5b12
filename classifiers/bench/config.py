"""What a benchmark runs: its settings (`BenchConfig`) and the named variants it expands into.

A variant is one (classifier, parameters, feature mode) triple with a display name. Without a
grid a classifier is one variant with the registry's defaults; a grid replaces it by the
Cartesian product of the values given, named ``logreg[C=0.1]`` or ``rbf-svm[C=1,gamma=scale]``.
Every variant is scored on the same folds, so a grid row is an honest estimate of that fixed
setting; only picking the best of a grid by those same folds is optimistic, which the
leaderboard marks (see `classifiers.bench.leaderboard`).
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from classifiers.errors import BenchError
from featurestore.checks import check_choice, check_int
from featurestore.errors import ConfigError
from featurestore.extract_config import ENGINES

#: The grid key that picks the feature transform rather than a classifier parameter.
FEATURES_KEY = "features"


#: `--flips`: fit on the mirrored training views too (no, yes, or both as two rows).
FLIP_CHOICES = ("no", "yes", "both")
#: `--tta`: a comma-separated list of rows to score, each averaging an image's probabilities
#: over none of its other views, its mirror image's (flip) or its cached augmented views'
#: (views, like `train --tta views`); ``both`` is ``none,flip``.
TTA_CHOICES = ("none", "flip", "views")
TTA_ALIASES = {"both": ("none", "flip")}
#: `--views`: fit on the cached augmented views of the training images too (extract --views K).
VIEW_CHOICES = FLIP_CHOICES


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """Settings of one benchmark run; validated on creation.

    `classifiers` None means every registered classifier; `grid` maps a classifier to
    ``{param: [values...]}`` (values may be CLI strings, typed by the registry); `features`
    None lets each classifier read its default transform. `jobs` follows joblib (-1: all
    cores). `progress` None shows a bar only when stderr is a terminal.
    """

    store: Path
    out: Path
    classifiers: tuple[str, ...] | None = None
    grid: Mapping[str, Mapping[str, Sequence[Any]]] = field(default_factory=dict)
    folds: int = 5
    repeats: int = 1
    seed: int = 0
    jobs: int = 1
    features: str | None = None
    progress: bool | None = None
    stream: bool | None = None  # read pooled batches; None: when the maps would not fit
    engine: str = "local"  # "ray": the cells as Ray tasks (classifiers.bench.ray_cells)
    ray_address: str | None = None
    stores: tuple[Path, ...] = ()  # more stores of the same images, compared on the same folds
    flips: str = "no"  # fit on the mirrored training views too: no, yes or both
    tta: str = "none"  # test-time averaging: none, flip, views, or a comma-separated list
    views: str = "no"  # fit on the augmented views (extract --views K) too: no, yes or both

    def __post_init__(self) -> None:
        object.__setattr__(self, "store", Path(self.store))
        object.__setattr__(self, "stores", tuple(Path(p) for p in self.stores))
        if self.flips not in FLIP_CHOICES:
            raise ConfigError(f"--flips must be one of {', '.join(FLIP_CHOICES)}, not {self.flips!r}")
        tta_modes(self.tta)
        if self.views not in VIEW_CHOICES:
            raise ConfigError(f"--views must be one of {', '.join(VIEW_CHOICES)}, not {self.views!r}")
        object.__setattr__(self, "out", Path(self.out))
        if self.classifiers is not None:
            object.__setattr__(self, "classifiers", tuple(self.classifiers))
        # Copy the caller's grid so that later changes to it cannot change this config.
        object.__setattr__(
            self, "grid", {n: {k: list(v) for k, v in p.items()} for n, p in self.grid.items()}
        )
        check_int("folds", self.folds, 2)
        check_int("repeats", self.repeats, 1)
        check_int("seed", self.seed, 0)
        if check_int("jobs", self.jobs, -1) == 0:
            raise ConfigError("--jobs must be a positive integer or -1 (all cores), not 0")
        check_choice("engine", self.engine, ENGINES)
        if self.ray_address is not None and self.engine != "ray":
            raise ConfigError("--ray-address needs --engine ray")
        if self.classifiers is not None and not self.classifiers and not self.grid:
            raise BenchError("no classifiers to benchmark")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able settings (paths as strings)."""
        return {
            "store": str(self.store),
            "out": str(self.out),
            "classifiers": None if self.classifiers is None else list(self.classifiers),
            "grid": {
                name: {k: [_text(v) for v in vs] for k, vs in p.items()} for name, p in self.grid.items()
            },
            "folds": self.folds,
            "repeats": self.repeats,
            "seed": self.seed,
            "jobs": self.jobs,
            "features": self.features,
            "stream": self.stream,
            "stores": [str(p) for p in self.stores],
            "flips": self.flips,
            "tta": self.tta,
            "views": self.views,
        }


def tta_modes(tta: str) -> tuple[str, ...]:
    """``"none,views"`` -> ``("none", "views")``: the test-time averaging of each row to score,
    in the order given; `ConfigError` names a wrong or repeated item."""
    items = [item.strip() for item in tta.split(",")]
    modes = [mode for item in items for mode in TTA_ALIASES.get(item, (item,))]
    wrong = [mode for mode in modes if mode not in TTA_CHOICES]
    if wrong or not modes:
        choices = ", ".join((*TTA_CHOICES, *TTA_ALIASES))
        raise ConfigError(f"--tta takes a comma-separated list of {choices}, not {tta!r}")
    if len(set(modes)) != len(modes):
        raise ConfigError(f"--tta names a mode twice: {tta!r}")
    return tuple(modes)


@dataclass(frozen=True)
class Variant:
    """One leaderboard row to be: a classifier with fixed parameters and a feature mode."""

    name: str  # display name, unique in a benchmark
    classifier: str  # registry name
    params: dict[str, Any]  # the non-default parameters asked for (typed)
    features: str | None  # the transform `make_classifier` gets; None: the classifier's default
    reads: str  # what the classifier reads, for people: flatten, avg, max or maps
    grid: str | None = None  # the registry name whose grid produced it, None for a plain row
    grid_size: int = 1
    setting: str = ""  # the feature setting's label (`classifiers.bench.settings`); "" when one


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def parse_grid(specs: Iterable[str]) -> dict[str, dict[str, list[str]]]:
    """``["logreg:C=0.01,0.1", "logreg:max_iter=200"]`` -> ``{"logreg": {"C": [...], ...}}``.

    Repeating a classifier adds parameters to its grid (their product is run); repeating a
    parameter replaces its values. Values stay strings here; the registry types them.
    """
    grid: dict[str, dict[str, list[str]]] = {}
    for spec in specs:
        name, colon, assignment = spec.partition(":")
        key, equals, values = assignment.partition("=")
        texts = [v.strip() for v in values.split(",")]
        if not colon or not equals or not name.strip() or not key.strip() or "" in texts:
            raise BenchError(f"--grid {spec!r} is not of the form classifier:param=v1,v2,...")
        grid.setdefault(name.strip(), {})[key.strip()] = texts
    return grid


def load_grid_file(path: str | Path) -> dict[str, dict[str, list[Any]]]:
    """Read ``{"logreg": {"C": [0.01, 0.1, 1]}, ...}`` from a .json or .toml file.

    A scalar is one value; a list is the values to try.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".toml":
            if sys.version_info < (3, 11):
                raise BenchError(f"grid file {path}: TOML needs Python 3.11; use a .json file")
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except OSError as exc:
        raise BenchError(f"cannot read grid file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # JSONDecodeError and TOMLDecodeError
        raise BenchError(f"grid file {path} does not parse: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(p, dict) for p in data.values()):
        raise BenchError(f"grid file {path} must map classifier names to {{param: [values]}} tables")
    grid = {}
    for name, params in data.items():
        grid[name] = {k: list(v) if isinstance(v, list) else [v] for k, v in params.items()}
        if any(not values for values in grid[name].values()):
            raise BenchError(f"grid file {path}: {name} has a parameter with no values")
    return grid


def merge_grids(*grids: Mapping[str, Mapping[str, Sequence[Any]]]) -> dict[str, dict[str, list[Any]]]:
    """Later grids add parameters to, or replace the values of, earlier ones."""
    merged: dict[str, dict[str, list[Any]]] = {}
    for grid in grids:
        for name, params in grid.items():
            merged.setdefault(name, {}).update({k: list(v) for k, v in params.items()})
    return merged


def expand_variants(config: BenchConfig) -> list[Variant]:
    """The rows to run: the chosen (or all) classifiers plus those with a grid, grids expanded.

    Raises `ParamError`/`BenchError` for an unknown classifier, parameter, value or feature
    mode, before any data is read.
    """
    from classifiers.ensembles import ENSEMBLES
    from classifiers.registry import available, make_classifier, parse_params
    from classifiers.transforms import FEATURE_MODES

    if config.features is not None and config.features not in FEATURE_MODES:
        raise BenchError(f"unknown --features {config.features!r}; choose from {', '.join(FEATURE_MODES)}")
    # The ensembles refit their members per inner fold: only when named.
    default = [name for name in available() if name not in ENSEMBLES]
    names = list(config.classifiers) if config.classifiers is not None else default
    names += [name for name in config.grid if name not in names]
    variants: list[Variant] = []
    for name in names:
        params_grid = config.grid.get(name)
        if not params_grid:
            features = _features_for(name, config.features)
            make_classifier(name, None, features)  # checks the name
            variants.append(Variant(name, name, {}, features, _reads(name, features)))
            continue
        keys = list(params_grid)
        combos = list(itertools.product(*(params_grid[k] for k in keys)))
        for combo in combos:
            raw = dict(zip(keys, combo, strict=True))
            # A grid's own `features` is applied as asked (gap refuses it); the global one spares gap.
            features = raw.pop(FEATURES_KEY) if FEATURES_KEY in raw else _features_for(name, config.features)
            if features is not None and features not in FEATURE_MODES:
                raise BenchError(f"--grid {name}: unknown features {features!r}; choose from {FEATURE_MODES}")
            strings = [f"{k}={v}" for k, v in raw.items() if isinstance(v, str)]
            typed = {
                **{k: v for k, v in raw.items() if not isinstance(v, str)},
                **parse_params(strings, name),
            }
            params = {k: typed[k] for k in raw}  # keep the user's order
            make_classifier(name, params, features)  # checks every value's type
            label = ",".join(f"{k}={_text(v)}" for k, v in zip(keys, combo, strict=True))
            reads = _reads(name, features)
            variants.append(Variant(f"{name}[{label}]", name, params, features, reads, name, len(combos)))
    seen: set[str] = set()
    for variant in variants:
        if variant.name in seen:
            raise BenchError(f"classifier {variant.name} is listed twice")
        seen.add(variant.name)
    return variants


def _features_for(name: str, features: str | None) -> str | None:
    """The transform to build `name` with: `features`, unless the classifier pools by itself.

    A global `--features` cannot apply to `gap` (it pools the maps itself); rather than refuse
    the whole default set, such a head keeps its own pooling and the table says so.
    """
    from classifiers.errors import ParamError
    from classifiers.registry import default_features, make_classifier

    if features is None or default_features(name) is not None:
        return features
    try:
        make_classifier(name, None, features)
    except ParamError:
        return None
    return features


def _reads(name: str, features: str | None) -> str:
    from classifiers.registry import default_features

    return features or default_features(name) or "maps"
