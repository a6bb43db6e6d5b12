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

from classifiers import model_kinds
from classifiers.errors import ModelFileError
from classifiers.model_file import (
    METADATA,
    TRUSTED_TYPES,
    load_model,
    read_metadata,
    save_model,
)
from classifiers.model_kinds import KERAS_FILE, SKOPS_FILE
from classifiers.registry import available, make_classifier
from featurestore.fsutil import file_sha256
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
    assert needed == set(TRUSTED_TYPES)


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

    monkeypatch.setattr(model_kinds, "dump_skops", disk_full)
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
    metadata["payload"][name] = file_sha256(path / name)
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


# -- the kind registry ---------------------------------------------------------------------------


def test_the_built_in_kinds_are_registered_and_claim_their_estimators() -> None:
    from classifiers.finetune.saved import FinetunedClassifier
    from classifiers.model_file import kind_for, registered_kinds

    assert set(registered_kinds()) == {"sklearn", "keras", "sklearn+keras", "finetuned"}
    assert kind_for(fitted("logreg")[0]).name == "sklearn"
    assert kind_for(fitted("gap")[0]).name == "keras"
    assert kind_for(fitted("dense", "avg")[0]).name == "sklearn+keras"
    assert kind_for(FinetunedClassifier()).name == "finetuned"


def test_an_unknown_kind_is_refused_in_one_line(sklearn_model: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from classifiers.cli import main

    metadata = json.loads((sklearn_model / METADATA).read_text())
    metadata["kind"] = "os.system"  # a kind name is looked up, never imported
    (sklearn_model / METADATA).write_text(json.dumps(metadata))
    with pytest.raises(ModelFileError, match=r"unknown kind 'os\.system'"):
        load_model(sklearn_model)
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    result = CliRunner().invoke(
        main, ["predict", str(sklearn_model), str(image), "--out", str(tmp_path / "p")]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == [
        f"Error: {sklearn_model / METADATA} is not valid model metadata: unknown kind 'os.system'"
    ]


def test_loading_a_scikit_learn_model_imports_neither_tensorflow_nor_fine_tuning(
    sklearn_model: Path,
) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    code = (
        "import sys\n"
        "from classifiers.model_file import load_model\n"
        f"load_model({str(sklearn_model)!r})\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'classifiers.finetune.saved') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_a_fingerprint_that_is_not_one_is_refused(sklearn_model: Path) -> None:
    metadata = json.loads((sklearn_model / METADATA).read_text())
    metadata["store"]["fingerprint"]["input_size"] = "large"
    (sklearn_model / METADATA).write_text(json.dumps(metadata))
    with pytest.raises(ModelFileError, match=r"store\.fingerprint is not a fingerprint \(input_size"):
        load_model(sklearn_model)


# -- the atomic folder writer ------------------------------------------------------------------


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    import subprocess

    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_save_failing_midway_leaves_no_folder_and_no_temporary(tmp_path: Path) -> None:
    estimator, _ = fitted("logreg")

    def plots_then_full_disk(folder: Path) -> None:
        (folder / "plot.png").write_bytes(b"\x89PNG")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        save(tmp_path / "m", estimator, extras=plots_then_full_disk)
    assert list(tmp_path.iterdir()) == []


def test_plots_are_written_inside_the_folder_before_it_is_moved_into_place(tmp_path: Path) -> None:
    estimator, _ = fitted("logreg")
    seen = []

    def plots(folder: Path) -> None:
        seen.append(folder)
        assert not (tmp_path / "m").exists()  # not in place yet
        (folder / "plot.png").write_bytes(b"\x89PNG")

    save(tmp_path / "m", estimator, extras=plots)
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".m.") and not seen[0].exists()
    assert (tmp_path / "m" / "plot.png").read_bytes() == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_an_overwrite_killed_between_its_two_renames_is_undone_on_the_next_start(tmp_path: Path) -> None:
    estimator, X = fitted("logreg")
    path = save(tmp_path / "m", estimator)
    # The kill: the old folder moved aside, the new one not yet moved in.
    aside = tmp_path / f".m.{_dead_pid()}.0123abcd.old"
    path.rename(aside)
    loaded = load_model(path)  # the next start puts the old model back
    np.testing.assert_array_equal(loaded.estimator.predict_proba(X), estimator.predict_proba(X))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    path.rename(aside)
    with pytest.raises(ModelFileError, match="already exists"):  # recovered, hence protected
        save(path, estimator)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    # Killed after the new folder moved in, before the old one was deleted: the old goes.
    (tmp_path / f".m.{_dead_pid()}.4567cdef.old").mkdir()
    save(path, fitted("knn")[0], "knn", overwrite=True)
    assert read_metadata(path)["classifier"] == "knn"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_another_writers_folder_aside_is_left_alone(tmp_path: Path) -> None:
    import os

    estimator, _ = fitted("logreg")
    live = tmp_path / f".m.{os.getppid()}.89abcdef.old"  # a live process's replacement in progress
    live.mkdir()
    save(tmp_path / "m", estimator)
    assert live.is_dir()


@pytest.mark.parametrize(
    ("field", "value"),
    [("class_name", "Lambda"), ("registered_name", "evil>Thing"), ("registered_name", ["not", "hashable"])],
)
def test_a_head_archive_naming_other_objects_is_refused(keras_model: Path, field: str, value) -> None:
    import zipfile

    original = (keras_model / KERAS_FILE).read_bytes()
    tampered = keras_model.parent / "tampered.keras"
    with zipfile.ZipFile(keras_model / KERAS_FILE) as archive, zipfile.ZipFile(tampered, "w") as out:
        for name in archive.namelist():
            content = archive.read(name)
            if name == "config.json":
                config = json.loads(content)
                config["config"]["layers"][-1][field] = value  # the output layer
                content = json.dumps(config).encode()
            out.writestr(name, content)
    _rewrite_payload(keras_model, KERAS_FILE, tampered.read_bytes())
    with pytest.raises(ModelFileError, match="refusing Keras objects outside the head's layers"):
        load_model(keras_model)
    _rewrite_payload(keras_model, KERAS_FILE, original)
    load_model(keras_model)  # the untouched file loads
