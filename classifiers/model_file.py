"""Model files: a folder that says what was trained on what, and loads without running code.

Layout of ``MODEL/``::

    metadata.json      what, on which features, how well; sha256 of every payload file
    <payload files>    named by the model's kind: estimator.skops, head.keras, model.keras
    *.png              plots (not part of the model, but written with it)

A folder rather than one archive: each payload keeps the format its own safe loader expects
(skops' trust list, Keras' safe mode), metadata stays readable with `cat`, and plots sit where
people look. This module is the one home of model folders:

- the metadata: its format and its validation (`read_metadata`);
- the payload checks: the sha256 of every payload file, skops' trusted types, and the members
  and classes a `.keras` archive may hold (`KerasAllowList`), checked before Keras parses it.
  The sha256s catch corruption and naive edits; safety against a crafted file comes from these
  checks and the loaders' safe modes, since whoever can edit a payload can edit metadata.json;
- the writer (`save_model`): the folder, plots included, is written whole under a temporary
  name and moved into place (`featurestore.fsutil.atomic_folder`), so a folder that looks
  complete is complete, and a replacement killed half-way is undone on the next start;
- the registry of model kinds (`ModelKind`): which payload files a kind has, how to write and
  load them, and how to turn a source into the model's inputs. Callers never branch on kind:
  `save_model` asks each kind whether it claims the estimator, `load_model` uses the kind that
  metadata.json names, and `SavedModel.inputs` asks the model's kind.

The built-in kinds are defined in their own modules (`BUILTIN_KINDS`), which import this one to
register; this module imports them lazily, by module name, when a folder names their kind or a
save must choose one. A top-level import would be an import cycle, and loading a logreg need not
import fine-tuning. Only those fixed module names are imported: a kind name read from a file
never becomes an import.
"""

from __future__ import annotations

import importlib
import json
import math
import re
import tempfile
import zipfile
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from classifiers.errors import ModelFileError, PayloadError
from classifiers.inputs import InputChunk
from classifiers.keras_sizes import check_layer_sizes
from classifiers.transforms import FEATURE_MODES
from featurestore.fingerprint import Fingerprint
from featurestore.fsutil import atomic_folder, file_sha256, recover_folder

FORMAT = "featurestore-classifier"
FORMAT_VERSION = 1
METADATA = "metadata.json"

# -- model kinds ---------------------------------------------------------------------------


class ModelKind:
    """How one kind of model is stored and fed. Subclass it, set `name` and `payload`,
    implement `write`, `load` and `inputs`, and decorate the class with `register_kind`."""

    name: ClassVar[str]
    payload: ClassVar[tuple[str, ...]]  # the payload files of a folder of this kind

    def claims(self, estimator: Any) -> bool:
        """Whether `save_model` stores `estimator` as this kind (`DEFAULT_KIND` takes the rest)."""
        return False

    def write(self, estimator: Any, folder: Path) -> dict[str, Any]:
        """Write the payload files into `folder`; return the metadata fields this kind owns."""
        raise NotImplementedError

    def metadata_problem(self, metadata: dict[str, Any]) -> str | None:
        """What is wrong with the metadata fields this kind owns, or None."""
        return None

    def load(self, folder: Path, metadata: dict[str, Any]) -> BaseEstimator:
        """The estimator of a folder whose payload matches its sha256s; `PayloadError` otherwise."""
        raise NotImplementedError

    def inputs(self, saved: SavedModel, source: Path, weights: str) -> Iterator[InputChunk]:
        """The model's inputs made from `source` (see `classifiers.inputs`)."""
        raise NotImplementedError


#: The kind of an estimator no registered kind claims: a scikit-learn estimator, saved with skops.
DEFAULT_KIND = "sklearn"
#: Where the built-in kinds are defined (and register themselves on import).
BUILTIN_KINDS = {
    "sklearn": "classifiers.model_kinds",
    "keras": "classifiers.model_kinds",
    "sklearn+keras": "classifiers.model_kinds",
    "finetuned": "classifiers.finetune.saved",
}
_KINDS: dict[str, ModelKind] = {}
K = TypeVar("K", bound=type[ModelKind])


def register_kind(cls: K) -> K:
    """Class decorator: make a `ModelKind` known by its `name`."""
    existing = _KINDS.get(cls.name)
    if existing is not None and type(existing).__qualname__ != cls.__qualname__:
        raise ValueError(f"model kind {cls.name!r} is already registered by {type(existing).__qualname__}")
    _KINDS[cls.name] = cls()
    return cls


def kind_named(name: Any) -> ModelKind | None:
    """The registered kind called `name` (a built-in one is imported on first use), or None."""
    if not isinstance(name, str):
        return None
    if name not in _KINDS and name in BUILTIN_KINDS:
        importlib.import_module(BUILTIN_KINDS[name])
    return _KINDS.get(name)


def registered_kinds() -> dict[str, ModelKind]:
    """Every registered kind by name, the built-in ones included."""
    for module in sorted(set(BUILTIN_KINDS.values())):
        importlib.import_module(module)
    return dict(_KINDS)


def kind_for(estimator: Any) -> ModelKind:
    """The kind that claims `estimator`, else `DEFAULT_KIND`."""
    claimed = [kind for kind in registered_kinds().values() if kind.claims(estimator)]
    if len(claimed) > 1:
        raise ValueError(f"{type(estimator).__name__} is claimed by kinds {[k.name for k in claimed]}")
    return claimed[0] if claimed else _KINDS[DEFAULT_KIND]


# -- payload checks --------------------------------------------------------------------------

#: Types skops does not trust by default that registry pipelines need; all are scikit-learn
#: data containers (trees, calibrators, neighbour indexes, bunches) or our stateless transform. A test
#: dumps every registered classifier and fails if one needs a type that is not listed here.
TRUSTED_TYPES: tuple[str, ...] = (
    "classifiers.transforms.FeatureTransform",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.tree._tree.Tree",
    "sklearn.utils._bunch.Bunch",  # a dict of named members (StackingClassifier, VotingClassifier)
)

#: The members Keras writes into a `.keras` zip.
KERAS_MEMBERS = frozenset({"metadata.json", "config.json", "model.weights.h5"})


@dataclass(frozen=True)
class KerasAllowList:
    """What a `.keras` archive's config may name: every ``(module, class_name)`` and every
    ``registered_name`` (the names Keras would look up in its registry of custom objects)."""

    what: str  # for the refusal: "the head's layers"
    classes: frozenset[tuple[str | None, str]]
    registered_names: frozenset[str | None]


#: The built-in layers (and their parts) a classifiers head is made of.
HEAD_ARCHIVE = KerasAllowList(
    what="the head's layers",
    classes=frozenset(
        {
            ("keras.src.models.functional", "Functional"),
            ("keras.layers", "InputLayer"),
            ("keras.layers", "Flatten"),
            ("keras.layers", "GlobalAveragePooling2D"),
            ("keras.layers", "UnitNormalization"),
            ("keras.layers", "Rescaling"),
            ("keras.layers", "Dense"),
            ("keras.layers", "Dropout"),
            ("keras", "DTypePolicy"),
            ("keras.initializers", "GlorotUniform"),
            ("keras.initializers", "Zeros"),
            ("keras.optimizers", "RMSprop"),
            (None, "__keras_tensor__"),
        }
    ),
    registered_names=frozenset({None, "Functional"}),
)


def check_payload(folder: Path, metadata: dict[str, Any]) -> None:
    """Every payload file exists and matches its sha256 in metadata.json, else `ModelFileError`."""
    for name, expected in metadata["payload"].items():
        file = folder / name
        if not file.is_file():
            raise ModelFileError(f"{file} is missing")
        if file_sha256(file) != expected:
            raise ModelFileError(f"{file} does not match its sha256 in {METADATA} (tampered?)")


def _named(node: Any, key: str) -> set[Any]:
    """Every value of `key` in a JSON tree, with the ``module`` beside it for ``class_name``;
    a value that is not a string or null is kept as its repr (and so never allowed)."""
    found = set()
    if isinstance(node, dict):
        if key in node:
            value = _text(node[key])
            found.add((_text(node.get("module")), value) if key == "class_name" else value)
        for value in node.values():
            found |= _named(value, key)
    elif isinstance(node, list):
        for value in node:
            found |= _named(value, key)
    return found


def _text(value: Any) -> str | None:
    return value if value is None or isinstance(value, str) else repr(value)


def check_keras_archive(path: Path, allowed: KerasAllowList) -> None:
    """Refuse a `.keras` file with other members, classes or registered names than `allowed`
    says, before Keras parses it: a Lambda layer or a custom object is refused even if a future
    Keras release loosened its own checks."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = set(archive.namelist())
            if members != KERAS_MEMBERS:
                raise PayloadError(f"unexpected .keras members: {sorted(members ^ KERAS_MEMBERS)}")
            config = json.loads(archive.read("config.json"))
            refused = sorted(_named(config, "class_name") - allowed.classes, key=str)
            unknown = _named(config, "registered_name") - allowed.registered_names
            refused += [(None, name) for name in sorted(unknown, key=str)]
            if refused:
                names = ", ".join(f"{module}.{name}" for module, name in refused)
                raise PayloadError(f"refusing Keras objects outside {allowed.what}: {cut(names, 300)}")
            check_layer_sizes(archive, config)  # Keras allocates them before it reads the weights
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise PayloadError(f"not a .keras archive ({one_line(exc)})") from exc


def load_keras(path: Path, allowed: KerasAllowList) -> Any:
    """A checked `.keras` file loaded with `safe_mode=True` and without its optimizer."""
    check_keras_archive(path, allowed)
    from classifiers import _keras_models as km

    try:
        return km.load(str(path))
    except Exception as exc:
        raise PayloadError(f"cannot be loaded by Keras ({one_line(exc)})") from exc


def load_skops(path: Path) -> Any:
    """A skops file whose every untrusted type is in `TRUSTED_TYPES`, loaded; else `PayloadError`."""
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # any failure to parse means it is not a skops file we wrote
        raise PayloadError(f"not a skops file ({one_line(exc)})") from exc
    refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if refused:
        raise PayloadError(f"refusing untrusted types: {cut(', '.join(refused), 300)}")
    try:
        return sio.load(path, trusted=list(TRUSTED_TYPES))
    except Exception as exc:
        raise PayloadError(f"cannot be loaded by skops ({one_line(exc)})") from exc


# -- a loaded model ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SavedModel:
    """A loaded model: the fitted estimator and the metadata it was saved with."""

    estimator: BaseEstimator
    metadata: dict[str, Any]

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata["class_names"])

    @property
    def fingerprint(self) -> dict[str, Any] | None:
        """The feature store's fingerprint dict, as recorded."""
        return self.metadata["store"].get("fingerprint")

    @property
    def features_fingerprint(self) -> Fingerprint | None:
        """The recorded fingerprint (validated when the folder was read): what the model's
        features mean, and how to embed new images."""
        recorded = self.fingerprint
        return None if recorded is None else Fingerprint.from_dict(recorded)

    @property
    def store_digest(self) -> str | None:
        return self.metadata["store"].get("digest")

    @property
    def kind(self) -> ModelKind:
        return _KINDS[self.metadata["kind"]]  # registered: reading the metadata found it

    def inputs(self, source: str | Path, *, weights: str = "imagenet") -> Iterator[InputChunk]:
        """This model's inputs made from `source` (an image, a folder, a CSV manifest or a
        store), in chunks; `weights` are the backbone weights for new images, if it needs any."""
        return self.kind.inputs(self, Path(source), weights)


def jsonable(value: Any) -> Any:
    """Plain JSON types for metadata: numpy scalars and arrays unwrapped, NaN/inf -> None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)  # e.g. a RandomState: recorded for people, not for rebuilding


# -- writing ------------------------------------------------------------------------------------


def save_model(
    path: str | Path,
    estimator: BaseEstimator,
    *,
    classifier: str,
    class_names: list[str] | tuple[str, ...],
    params: Mapping[str, Any] | None = None,
    features: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    fingerprint: Mapping[str, Any] | None = None,
    store_digest: str | None = None,
    store_path: str | Path | None = None,
    extra: Mapping[str, Any] | None = None,
    extras: Callable[[Path], Any] | None = None,
    overwrite: bool = False,
    replaces: Collection[str] = (),
) -> Path:
    """Write a fitted `estimator` and what it was trained on to the folder `path`, whole.

    `fingerprint` (the store's `Fingerprint.to_dict()`) and `store_digest` say which features
    trained it and let `predict` embed new images the same way; `training` records how (for
    example whether flipped views were added); `extra` adds top-level metadata fields.
    `extras(folder)` writes more files (plots) into the folder before it is moved into place.
    The registered kind that claims the estimator writes its payload (`kind_for`).
    An existing model folder is replaced only with `overwrite`; a folder holding only entries
    named in `replaces` (a job's own resumable state) is replaced; anything else never is.
    """
    path = Path(path)
    check_is_fitted(estimator)
    model_kind = kind_for(estimator)
    check_destination(path, overwrite, replaces)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(path, replace=path.exists()) as tmp:
        owned = model_kind.write(estimator, tmp)
        if extras is not None:
            extras(tmp)  # inside the temporary folder: a complete-looking folder has its plots
        store = {"fingerprint": jsonable(fingerprint), "digest": store_digest}
        if store_path is not None:
            store["path"] = str(store_path)
        metadata = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": model_kind.name,
            "classifier": classifier,
            "params": jsonable(dict(params or {})),
            "features": features,
            "class_names": [str(name) for name in class_names],
            "classes": jsonable(estimator.classes_),
            "metrics": jsonable(dict(metrics or {})),
            "training": jsonable(dict(training or {})),
            "store": store,
        }
        added = [*owned, *(extra or {})]
        clashes = sorted(name for name in set(added) if name in metadata or added.count(name) > 1)
        if clashes:
            raise ValueError(f"metadata fields {clashes} are set twice")
        metadata |= jsonable({**owned, **(extra or {})})
        metadata["payload"] = {name: file_sha256(tmp / name) for name in model_kind.payload}
        metadata["versions"] = _versions()
        metadata["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        (tmp / METADATA).write_text(json.dumps(metadata, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def check_destination(path: str | Path, overwrite: bool, replaces: Collection[str] = ()) -> None:
    """Raise `ModelFileError` unless a model may be written at `path`.

    A missing path is fine; an existing model folder only with `overwrite`; a folder holding
    only entries named in `replaces` too; anything else (a file, a folder of photos) never,
    since replacing it would destroy it. A replacement a kill interrupted is finished first.
    """
    path = Path(path)
    recover_folder(path)
    if not path.exists():
        return
    if (path / METADATA).is_file():
        if overwrite:
            return
        raise ModelFileError(f"{path} already exists (pass overwrite to replace it)")
    if replaces and path.is_dir() and all(entry.name in replaces for entry in path.iterdir()):
        return
    raise ModelFileError(f"{path} already exists (and is not a model folder)")


def payload_size(estimator: BaseEstimator) -> int:
    """Bytes of the payload files `save_model` writes for `estimator` (what a user ships)."""
    kind = kind_for(estimator)
    with tempfile.TemporaryDirectory() as tmp:
        kind.write(estimator, Path(tmp))
        return sum((Path(tmp) / name).stat().st_size for name in kind.payload)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {}
    for dist in ("featurestore", "scikit-learn", "skops", "keras", "numpy"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = "unknown"
    return versions


# -- reading ------------------------------------------------------------------------------------


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The validated metadata of model folder `path`, without loading the payload."""
    path = Path(path)
    recover_folder(path)  # a replacement killed between its two renames: the old model is back
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is a file"
        raise ModelFileError(f"{path} {what}; a model is a folder with {METADATA}")
    try:
        metadata = json.loads((path / METADATA).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"{path} is not a model folder: {METADATA} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path / METADATA} is unreadable or not JSON ({exc})") from exc
    problem = _metadata_problem(metadata)
    if problem:
        raise ModelFileError(f"{path / METADATA} is not valid model metadata: {problem}")
    return metadata


def _metadata_problem(metadata: Any) -> str | None:
    """What is wrong with a metadata.json, field by field, or None. Nothing in it is trusted:
    every field that drives loading or allocation is checked for its type and range here
    (issue 14, item 7), the kind's own fields by the kind."""
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        return f"format is not {FORMAT!r}"
    if metadata.get("format_version") != FORMAT_VERSION:
        return f"unsupported format_version {short_repr(metadata.get('format_version'))}"
    kind = kind_named(metadata.get("kind"))
    if kind is None:
        return f"unknown kind {short_repr(metadata.get('kind'))}"
    payload = metadata.get("payload")
    if not isinstance(payload, dict) or set(payload) != set(kind.payload):
        return f"payload must list exactly {list(kind.payload)}"
    if not all(isinstance(digest, str) and _SHA256.match(digest) for digest in payload.values()):
        return "payload values must be sha256 hex digests"
    names = metadata.get("class_names")
    if (
        not isinstance(names, list)
        or len(names) < 2
        or not all(isinstance(n, str) and n for n in names)
        or len(set(names)) != len(names)
    ):
        return "class_names must be a list of at least 2 different non-empty strings"
    problem = class_indices_problem("classes", metadata.get("classes"), len(names))
    if problem:
        return problem
    if not isinstance(metadata.get("classifier"), str) or not metadata["classifier"]:
        return "classifier must be a non-empty string"
    if metadata.get("features") not in (None, *FEATURE_MODES):
        return f"features must be null or one of {', '.join(FEATURE_MODES)}"
    for field in ("params", "metrics", "training", "versions"):
        if not isinstance(metadata.get(field, {}), dict):
            return f"{field} must be an object"
    if not isinstance(metadata.get("created", ""), str):
        return "created must be a string"
    store = metadata.get("store")
    if not isinstance(store, dict):
        return "store must be an object"
    if store.get("fingerprint") is not None:
        try:
            Fingerprint.from_dict(store["fingerprint"])
        except (TypeError, ValueError, AttributeError) as exc:
            return f"store.fingerprint is not a fingerprint ({exc})"
    digest = store.get("digest")
    if digest is not None and not (isinstance(digest, str) and _SHA256.match(digest)):
        return "store.digest must be null or a sha256 hex digest"
    if not isinstance(store.get("path", ""), str):
        return "store.path must be a string"
    return kind.metadata_problem(metadata)


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def class_indices_problem(field: str, value: Any, n_names: int) -> str | None:
    """What is wrong with a list of class indices (a model's `classes_`), or None: each an
    index of `class_names`, each once."""
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n_names for i in value)
        or len(set(value)) != len(value)
    ):
        return f"{field} must be a list of different class indices below {n_names}"
    return None


def cut(text: str, limit: int) -> str:
    """`text` on one line, at most `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_repr(value: Any, limit: int = 80) -> str:
    """`repr(value)`, cut: a crafted file's values go into one short line."""
    return cut(repr(value), limit)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one short line, its type first: library messages (Keras prints whole
    configs) span many lines, and an error must stay one line."""
    return cut(f"{type(exc).__name__}: {exc}", limit)


def load_model(path: str | Path) -> SavedModel:
    """Load a model folder, or raise `ModelFileError` with one line saying what is wrong.

    Checks, in order: metadata.json is ours, well-formed and names a registered kind; each
    payload file matches its sha256; the kind's loader refuses what its allow-lists do not name
    (skops' trusted types, the `.keras` classes) and loads in safe mode. Nothing from the folder
    is unpickled or executed.
    """
    path = Path(path)
    metadata = read_metadata(path)
    kind = _KINDS[metadata["kind"]]  # registered: read_metadata found it
    check_payload(path, metadata)
    try:
        estimator = kind.load(path, metadata)
    except PayloadError as exc:
        raise ModelFileError(f"{path}: {exc}") from exc
    if not (isinstance(estimator, BaseEstimator) and hasattr(estimator, "predict_proba")):
        raise ModelFileError(f"{path}: the payload is not a classifier with predict_proba")
    if len(getattr(estimator, "classes_", ())) > len(metadata["class_names"]):
        raise ModelFileError(f"{path}: the estimator has more classes than class_names")
    return SavedModel(estimator=estimator, metadata=metadata)
