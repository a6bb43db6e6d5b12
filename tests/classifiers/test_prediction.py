"""predict_rows on a store, a folder with a bad image, and a single image."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from classifiers.model_file import save_model
from classifiers.prediction import PredictError, columns, predict_rows, write_csv
from classifiers.registry import make_classifier
from classifiers.training import train_from_store
from tests.classifiers.conftest import CLASS_NAMES, make_flip_store, make_maps
from tests.conftest import write_image


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A labeled image tree, its store (random VGG16 weights, 32 px) and a logreg model on it."""
    base = tmp_path_factory.mktemp("extracted")
    images = base / "images"
    for class_index, name in enumerate(CLASS_NAMES):
        for i in range(6):
            write_image(images / name / f"{name}_{i}.png", seed=100 * class_index + i)
    from featurestore import ExtractConfig, run_extract

    with pytest.MonkeyPatch.context() as patch:  # never the user's cache
        patch.setenv("FEATURESTORE_HOME", str(base / "home"))
        store = base / "store"
        run_extract(
            ExtractConfig(source=images, store=store, weights="random", input_size=32, progress=False)
        )
    train_from_store(store, "logreg", base / "model")
    return images, base / "model"


def test_store_rows_have_every_column(tiny_store: Path, tmp_path: Path) -> None:
    model = train_from_store(tiny_store, "logreg", tmp_path / "m").model_path
    rows = predict_rows(model, tiny_store)
    assert len(rows) == 60
    assert list(rows[0]) == columns(CLASS_NAMES)
    for row in rows:
        assert row["error"] == "" and row["predicted"] in CLASS_NAMES
        assert row["p_cats"] + row["p_dogs"] == pytest.approx(1.0)
        assert row["probability"] == max(row["p_cats"], row["p_dogs"])
    assert sum(row["predicted"] == row["label"] for row in rows) >= 54


def test_a_store_with_other_features_is_refused(tiny_store: Path, tmp_path: Path) -> None:
    from featurestore.fingerprint import Fingerprint
    from featurestore.testing import make_store

    model = train_from_store(tiny_store, "logreg", tmp_path / "m").model_path
    X, y = make_maps(10, seed=1)
    make_store(
        tmp_path / "other", X, y, CLASS_NAMES, fingerprint=Fingerprint(weights_sha256="1" * 64, input_size=64)
    )
    with pytest.raises(PredictError, match=r"store features differ from the model's .*weights_sha256"):
        predict_rows(model, tmp_path / "other")


def test_flipped_views_do_not_change_the_features_a_model_reads(tiny_store: Path, tmp_path: Path) -> None:
    model = train_from_store(tiny_store, "logreg", tmp_path / "m").model_path
    rows = predict_rows(model, make_flip_store(tmp_path / "flips"))
    assert len(rows) == 40 and all(row["error"] == "" for row in rows)


def test_a_model_without_fingerprint_cannot_embed_images(tmp_path: Path) -> None:
    X, y = make_maps(20)
    estimator = make_classifier("knn", {"n_neighbors": 3}).fit(X, y)
    save_model(tmp_path / "m", estimator, classifier="knn", class_names=CLASS_NAMES)
    image = write_image(tmp_path / "x.png", seed=1)
    with pytest.raises(PredictError, match="no store fingerprint"):
        predict_rows(tmp_path / "m", image)


def test_folder_with_a_bad_image_gets_an_error_row(extracted: tuple[Path, Path], tmp_path: Path) -> None:
    images, model = extracted
    folder = tmp_path / "new"
    for name in CLASS_NAMES:
        for path in (images / name).iterdir():
            (folder / name).mkdir(parents=True, exist_ok=True)
            (folder / name / path.name).write_bytes(path.read_bytes())
    (folder / "dogs" / "broken.jpg").write_bytes(b"this is not a jpeg")
    rows = {Path(row["path"]).name: row for row in predict_rows(model, folder, weights="random")}
    assert len(rows) == 13
    bad = rows.pop("broken.jpg")
    assert bad["error"] and bad["predicted"] == "" and bad["p_cats"] == ""
    assert all(row["error"] == "" and row["predicted"] in CLASS_NAMES for row in rows.values())
    assert rows["cats_0.png"]["label"] == "cats"
    # the same image alone gets the same probabilities as inside the folder
    alone = predict_rows(model, folder / "cats" / "cats_0.png", weights="random")
    assert len(alone) == 1 and alone[0]["label"] == ""
    assert alone[0]["p_cats"] == pytest.approx(rows["cats_0.png"]["p_cats"], abs=1e-6)

    out = tmp_path / "preds.csv"
    assert write_csv(alone, CLASS_NAMES, out) == 1
    with open(out, newline="") as handle:
        read = list(csv.DictReader(handle))
    assert list(read[0]) == ["path", "label", "predicted", "probability", "p_cats", "p_dogs", "error"]
    assert float(read[0]["probability"]) == pytest.approx(alone[0]["probability"])


def test_missing_source_is_a_clear_error(extracted: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(PredictError, match="does not exist"):
        predict_rows(extracted[1], tmp_path / "nothing")


def test_storage_dtype_and_compute_precision_do_not_change_the_features_a_model_reads(
    tiny_store: Path, tmp_path: Path
) -> None:
    """The one definition of compatible features (`Fingerprint.feature_differences`): a store
    kept in float16, or computed in bfloat16, holds the same maps as far as a head can tell."""
    from featurestore.fingerprint import Fingerprint
    from featurestore.testing import make_store

    model = train_from_store(tiny_store, "logreg", tmp_path / "m").model_path
    X, y = make_maps(10, seed=1)
    fingerprint = Fingerprint(
        weights_sha256="0" * 64, input_size=64, dtype="float16", precision="mixed_bfloat16"
    )
    make_store(tmp_path / "half", X, y, CLASS_NAMES, fingerprint=fingerprint)
    rows = predict_rows(model, tmp_path / "half")
    assert len(rows) == 10 and all(row["error"] == "" for row in rows)
