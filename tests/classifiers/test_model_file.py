"""Model folders: round trips, and refusing tampered or foreign files without running them."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.preprocessing import FunctionTransformer

from classifiers import _payload
from classifiers.model_file import (
    KERAS_FILE,
    METADATA,
    SKOPS_FILE,
    ModelFileError,
    load_model,
    read_metadata,
    save_model,
    sha256_file,
)
from classifiers.registry import available, make_classifier
from tests.classifiers.conftest import CLASS_NAMES, fast_params, make_maps

FINGERPRINT = {"backbone": "vgg16", "input_size": 150, "weights_sha256": "ab" * 32}


def fitted(name: str, features: str | None = None):
    X, y = make_maps(40)
    return make_classifier(name, fast_params(name), features).fit(X, y), X


def save(path: Path, estimator, name: str = "logreg", **kwargs) -> Path:
    return save_model(
        path,
        estimator,
        classifier=name,
        class_names=CLASS_NAMES,
        fingerprint=FINGERPRINT,
        store_digest="d" * 64,
        **kwargs,
    )


@pytest.mark.parametrize(("name", "features"), [(name, None) for name in available()] + [("dense", "avg")])
def test_round_trip_gives_identical_predictions(tmp_path: Path, name: str, features) -> None:
    estimator, X = fitted(name, features)
    path = save(tmp_path / "model", estimator, name, features=features, metrics={"accuracy": 1.0})
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.estimator.predict_proba(X), estimator.predict_proba(X))
    np.testing.assert_array_equal(loaded.estimator.predict(X), estimator.predict(X))
    assert loaded.class_names == list(CLASS_NAMES)
    assert loaded.fingerprint == FINGERPRINT
    assert loaded.store_digest == "d" * 64
    assert loaded.metadata["classifier"] == name
    assert loaded.metadata["metrics"] == {"accuracy": 1.0}
    expected_kind = {"dense": "sklearn+keras" if features else "keras", "gap": "keras"}
    assert loaded.metadata["kind"] == expected_kind.get(name, "sklearn")


def test_a_loaded_head_keeps_its_fitted_state(tmp_path: Path) -> None:
    head, _ = fitted("gap")
    loaded = load_model(save(tmp_path / "m", head, "gap")).estimator
    assert loaded.get_params() == head.get_params()
    assert loaded.history_ == head.history_
    assert loaded.input_shape_ == head.input_shape_
    np.testing.assert_array_equal(loaded.classes_, head.classes_)


def test_every_registry_type_is_trusted_and_every_trusted_type_is_used() -> None:
    X, y = make_maps(40, shape=(2, 2, 20))
    # The transform's mode does not change which types are stored, the neighbour index does.
    variants = [(name, {}, None) for name in available()[2:]]
    variants += [("knn", {"algorithm": a, "p": p}, None) for a in ("ball_tree", "kd_tree") for p in (1, 2, 3)]
    needed: set[str] = set()
    for name, params, features in variants:
        estimator = make_classifier(name, {**fast_params(name), **params}, features).fit(X, y)
        needed |= set(sio.get_untrusted_types(data=sio.dumps(estimator)))
    assert needed == set(_payload.TRUSTED_TYPES)


def test_existing_paths_are_not_overwritten_unless_asked(tmp_path: Path) -> None:
    estimator, _ = fitted("logreg")
    path = save(tmp_path / "m", estimator)
    with pytest.raises(ModelFileError, match="already exists"):
        save(path, estimator)
    other, _ = fitted("knn")
    save(path, other, "knn", overwrite=True)
    assert read_metadata(path)["classifier"] == "knn"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folders left behind
    precious = tmp_path / "photos"
    precious.mkdir()
    with pytest.raises(ModelFileError, match="is not a model folder"):
        save(precious, estimator, overwrite=True)


def test_a_failed_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    estimator, _ = fitted("logreg")
    path = save(tmp_path / "m", estimator)
    before = sorted(p.name for p in path.iterdir())

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_payload, "dump_sklearn", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save(path, estimator, overwrite=True)
    with pytest.raises(OSError, match="No space left"):
        save(tmp_path / "new", estimator)
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no half-written folder
    assert sorted(p.name for p in path.iterdir()) == before  # the old model is intact
    load_model(path)


# -- refusing bad files ----------------------------------------------------------------------


def _rewrite_payload(path: Path, name: str, data: bytes) -> None:
    """Replace a payload file and make metadata.json agree, as a careful attacker would."""
    (path / name).write_bytes(data)
    metadata = json.loads((path / METADATA).read_text())
    metadata["payload"][name] = sha256_file(path / name)
    (path / METADATA).write_text(json.dumps(metadata))


class _Exploit:
    """Unpickling this would create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def sklearn_model(tmp_path: Path) -> Path:
    estimator, _ = fitted("logreg")
    return save(tmp_path / "model", estimator)


@pytest.fixture
def keras_model(tmp_path: Path) -> Path:
    head, _ = fitted("dense")
    return save(tmp_path / "head_model", head, "dense")


def test_a_modified_payload_is_caught_by_its_sha256(sklearn_model: Path) -> None:
    with open(sklearn_model / SKOPS_FILE, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelFileError, match=r"does not match its sha256 in metadata\.json"):
        load_model(sklearn_model)


def test_a_pickle_posing_as_skops_is_refused_without_running_it(sklearn_model: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _rewrite_payload(sklearn_model, SKOPS_FILE, pickle.dumps(_Exploit(marker)))
    with pytest.raises(ModelFileError, match="not a skops file"):
        load_model(sklearn_model)
    assert not marker.exists()


def test_a_skops_file_with_an_untrusted_type_is_refused(sklearn_model: Path) -> None:
    _rewrite_payload(sklearn_model, SKOPS_FILE, sio.dumps(FunctionTransformer(func=os.getcwd)))
    with pytest.raises(ModelFileError, match=r"refusing untrusted types: posix\.getcwd"):
        load_model(sklearn_model)


def test_a_keras_file_with_a_lambda_layer_is_refused(keras_model: Path, tmp_path: Path) -> None:
    import keras

    inputs = keras.Input((2, 2, 8))
    outputs = keras.layers.Lambda(lambda x: x * 2)(keras.layers.Flatten()(inputs))
    evil = tmp_path / "evil.keras"
    keras.Model(inputs, outputs).save(evil)
    _rewrite_payload(keras_model, KERAS_FILE, evil.read_bytes())
    with pytest.raises(ModelFileError, match=r"refusing Keras objects .*keras\.layers\.Lambda"):
        load_model(keras_model)
    # and Keras' own safe mode, our second line, refuses it too
    from classifiers import _keras_models

    with pytest.raises(ValueError, match="safe_mode"):
        _keras_models.load(str(evil))


def test_a_pickle_posing_as_keras_is_refused(keras_model: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _rewrite_payload(keras_model, KERAS_FILE, pickle.dumps(_Exploit(marker)))
    with pytest.raises(ModelFileError, match=r"not a \.keras archive"):
        load_model(keras_model)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.pop("format"), "format is not 'featurestore-classifier'"),
        (lambda m: m.update(format_version=99), "unsupported format_version 99"),
        (lambda m: m.update(kind="pickle"), "unknown kind 'pickle'"),
        (lambda m: m.update(payload={"../../etc/passwd": "0"}), "payload must list exactly"),
        (lambda m: m.update(class_names="cats"), "class_names must be a list"),
    ],
)
def test_invalid_metadata_is_refused(sklearn_model: Path, edit, message: str) -> None:
    metadata = json.loads((sklearn_model / METADATA).read_text())
    edit(metadata)
    (sklearn_model / METADATA).write_text(json.dumps(metadata))
    with pytest.raises(ModelFileError, match=message):
        load_model(sklearn_model)


def test_missing_or_garbled_metadata_and_foreign_paths(sklearn_model: Path, tmp_path: Path) -> None:
    (sklearn_model / METADATA).write_text("{not json")
    with pytest.raises(ModelFileError, match="unreadable or not JSON"):
        load_model(sklearn_model)
    (sklearn_model / METADATA).unlink()
    with pytest.raises(ModelFileError, match=r"metadata\.json is missing"):
        load_model(sklearn_model)
    pickled = tmp_path / "model.pkl"
    pickled.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelFileError, match="is a file; a model is a folder"):
        load_model(pickled)
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "nothing")


def test_a_missing_payload_file_is_named(keras_model: Path) -> None:
    (keras_model / KERAS_FILE).unlink()
    with pytest.raises(ModelFileError, match=r"head\.keras is missing"):
        load_model(keras_model)
