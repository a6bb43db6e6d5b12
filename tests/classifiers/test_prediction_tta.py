"""predict --tta flip: probabilities averaged over each image and its mirror image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import featurestore
from classifiers.metrics import full_proba
from classifiers.model_file import load_model
from classifiers.prediction import PredictError, model_tta, predict_rows
from classifiers.training import train_from_store
from tests.classifiers.conftest import CLASS_NAMES, make_flip_store
from tests.conftest import write_image


@pytest.fixture(scope="module")
def flip_extracted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Images, their --flip-views store (random weights, 32 px) and a logreg trained with --tta flip."""
    base = tmp_path_factory.mktemp("flip-extracted")
    images = base / "images"
    for class_index, name in enumerate(CLASS_NAMES):
        for i in range(6):
            write_image(images / name / f"{name}_{i}.png", seed=300 * class_index + i)
    from featurestore import ExtractConfig, run_extract

    with pytest.MonkeyPatch.context() as patch:  # never the user's cache
        patch.setenv("FEATURESTORE_HOME", str(base / "home"))
        run_extract(
            ExtractConfig(
                source=images,
                store=base / "store",
                weights="random",
                input_size=32,
                flip_views=True,
                progress=False,
            )
        )
    train_from_store(base / "store", "logreg", base / "model", tta="flip")
    return images, base / "store", base / "model"


def test_store_rows_average_the_stored_views(tmp_path: Path) -> None:
    path = make_flip_store(tmp_path / "flips")
    # Flattened maps, no flipped training rows: else the fitted model is mirror-symmetric.
    model = train_from_store(path, "logreg", tmp_path / "m", features="flatten", flips=False).model_path
    saved = load_model(model)
    assert model_tta(saved) == "none" and model_tta(saved, "flip") == "flip"
    store = featurestore.open_store(path)
    maps, mirrors = store.load(None), store.load(None, flipped=True)
    expected = (
        full_proba(saved.estimator, maps.features, 2) + full_proba(saved.estimator, mirrors.features, 2)
    ) / 2
    plain = predict_rows(saved, path)
    rows = predict_rows(saved, path, tta="flip")
    assert [row["path"] for row in rows] == [str(p) for p in maps.paths]
    assert np.allclose([row["p_dogs"] for row in rows], expected[:, 1])
    assert not np.allclose([row["p_dogs"] for row in plain], expected[:, 1])  # the views differ


def test_new_images_are_embedded_as_they_are_and_flipped(
    flip_extracted: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    images, store, model = flip_extracted
    assert load_model(model).metadata["tta"] == "flip"
    folder = tmp_path / "new"
    folder.mkdir()
    for path in sorted((images / "cats").iterdir())[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not an image")
    # The model's recorded --tta flip is followed; the maps match the store's views.
    by_name = {Path(row["path"]).name: row for row in predict_rows(model, folder, weights="random")}
    from_store = {Path(row["path"]).name: row for row in predict_rows(model, store)}
    assert by_name.pop("broken.jpg")["error"]
    assert set(by_name) == {p.name for p in sorted((images / "cats").iterdir())[:3]}
    for name, row in by_name.items():
        assert row["error"] == "" and row["p_cats"] == pytest.approx(from_store[name]["p_cats"], abs=1e-5)
    untouched = {
        Path(row["path"]).name: row for row in predict_rows(model, folder, weights="random", tta="none")
    }
    assert any(abs(untouched[n]["p_cats"] - by_name[n]["p_cats"]) > 1e-9 for n in by_name)


def test_a_store_without_flipped_views_is_refused(tiny_store: Path, tmp_path: Path) -> None:
    model = train_from_store(tiny_store, "logreg", tmp_path / "m").model_path
    with pytest.raises(PredictError, match="no flipped views for test-time flips"):
        predict_rows(model, tiny_store, tta="flip")


def test_tta_views_averages_stored_views_and_new_images_get_the_same_views(tmp_path: Path) -> None:
    from featurestore import ExtractConfig, run_extract

    images = tmp_path / "images"
    for class_index, name in enumerate(CLASS_NAMES):
        for i in range(6):
            write_image(images / name / f"{name}_{i}.png", seed=500 * class_index + i)
    config = ExtractConfig(
        source=images, store=tmp_path / "store", weights="random", input_size=32, views=2, progress=False
    )
    run_extract(config)
    model = train_from_store(tmp_path / "store", "logreg", tmp_path / "m", tta="views").model_path
    saved = load_model(model)
    assert saved.metadata["tta"] == "views" and model_tta(saved) == "views"
    store = featurestore.open_store(tmp_path / "store")
    views = [store.load(None).features, *(store.load(None, view=k).features for k in (1, 2))]
    expected = np.mean([full_proba(saved.estimator, X, 2) for X in views], axis=0)
    from_store = predict_rows(saved, tmp_path / "store")
    assert np.allclose([row["p_dogs"] for row in from_store], expected[:, 1])
    # New files with the same bytes: the same ids, hence the same views, embedded afresh.
    folder = tmp_path / "new"
    folder.mkdir()
    for path in sorted((images / "dogs").iterdir())[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    stored = {Path(row["path"]).name: row["p_dogs"] for row in from_store}
    for row in predict_rows(saved, folder, weights="random"):
        assert row["error"] == "" and row["p_dogs"] == pytest.approx(stored[Path(row["path"]).name], abs=1e-5)
    with pytest.raises(PredictError, match="no augmented views"):
        predict_rows(saved, make_flip_store(tmp_path / "flips"), tta="views")
