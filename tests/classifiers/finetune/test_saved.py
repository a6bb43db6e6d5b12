"""The `finetuned` model kind: a round trip through the one model-file writer, and its inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.classifiers.finetune.conftest import SIZE

pytestmark = pytest.mark.xdist_group("finetune")


def test_a_finetuned_model_round_trips_through_save_model(from_cache: dict, tmp_path: Path) -> None:
    from classifiers.finetune.saved import FinetunedClassifier
    from classifiers.model_file import load_model, save_model

    saved = load_model(from_cache["model_path"])
    meta = saved.metadata
    out = tmp_path / "copy"
    (out / "checkpoint").mkdir(parents=True)  # a job's own state is replaced with the model
    save_model(
        out,
        saved.estimator,
        classifier=meta["classifier"],
        class_names=meta["class_names"],
        params=meta["params"],
        metrics=meta["metrics"],
        fingerprint=meta["store"]["fingerprint"],
        store_digest=meta["store"]["digest"],
        extra={"head": meta["head"]},
        replaces=("checkpoint",),
    )
    again = load_model(out)
    assert again.metadata["kind"] == "finetuned" and isinstance(again.estimator, FinetunedClassifier)
    assert again.metadata["head"] == meta["head"] and again.metadata["classes"] == meta["classes"]
    assert sorted(path.name for path in out.iterdir()) == ["metadata.json", "model.keras"]
    images = np.random.default_rng(0).uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        again.estimator.predict_proba(images), saved.estimator.predict_proba(images)
    )


def test_its_inputs_are_the_decoded_images_of_any_source(from_cache: dict, tiny_store: Path) -> None:
    import featurestore
    from classifiers.model_file import load_model

    saved = load_model(from_cache["model_path"])
    chunks = list(saved.inputs(tiny_store))  # a store: the images its rows point to
    paths = [path for chunk in chunks for path in chunk.paths]
    assert sorted(paths) == sorted(str(path) for path in featurestore.open_store(tiny_store).image_paths())
    assert all(chunk.inputs.shape[1:] == (SIZE, SIZE, 3) for chunk in chunks)
    assert json.loads(json.dumps([chunk.errors for chunk in chunks])) == [[None] * len(paths)]
