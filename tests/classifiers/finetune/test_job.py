"""Fine-tuning runs on the tiny store: what trains, what stays, what is written, what is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from classifiers.errors import FinetuneError
from classifiers.finetune.config import FinetuneConfig
from classifiers.finetune.job import run_finetune
from tests.classifiers.finetune.conftest import SIZE, built_once, make_store

pytestmark = pytest.mark.xdist_group("finetune")


def _network(model_dir: str | Path) -> Any:
    from classifiers.finetune.saved import MODEL_FILE, load_network

    return load_network(Path(model_dir) / MODEL_FILE)


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_frozen_layers_stay_the_unfrozen_ones_and_the_head_train(from_images: dict, dense_head: Path) -> None:
    from classifiers.finetune.model import conv_layer_names
    from classifiers.model_file import load_model
    from featurestore.backbone import build_conv_base

    tuned = _network(from_images["model_path"])
    base = build_conv_base(SIZE, None)
    frozen = [name for name in conv_layer_names() if not name.startswith("block5")]
    for name in frozen:
        assert _same(tuned.get_layer(name).get_weights(), base.get_layer(name).get_weights()), name
    for name in conv_layer_names(5):
        assert not _same(tuned.get_layer(name).get_weights(), base.get_layer(name).get_weights()), name
    head = load_model(dense_head).estimator.model_
    for name in ("hidden", "output"):
        mine, theirs = tuned.get_layer(name).get_weights(), head.get_layer(name).get_weights()
        assert not _same(mine, theirs), name
        # Warm-started and moved a little at 1e-5, not re-drawn: still close to the head's weights.
        np.testing.assert_allclose(mine[0], theirs[0], atol=0.01)


def test_cache_and_image_paths_save_the_same_architecture(from_images: dict, from_cache: dict) -> None:
    a, b = _network(from_images["model_path"]), _network(from_cache["model_path"])

    def shape(model: Any) -> list[tuple]:
        return [
            (type(layer).__name__, layer.name, [tuple(w.shape) for w in layer.weights])
            for layer in model.layers
        ]

    assert shape(a) == shape(b)
    assert a.input_shape == (None, SIZE, SIZE, 3) and a.output_shape == (None, 1)
    assert _same(a.get_layer("block4_conv3").get_weights(), b.get_layer("block4_conv3").get_weights())
    assert from_images["training"]["inputs"] == "images"
    assert from_cache["training"]["inputs"] == "cached block4_pool maps"


def test_model_folder_has_metrics_curves_and_lineage(
    from_cache: dict, tiny_store: Path, dense_head: Path
) -> None:
    import featurestore
    from classifiers.model_file import METADATA
    from featurestore.fsutil import file_sha256

    folder = Path(from_cache["model_path"])
    meta = json.loads((folder / METADATA).read_text())
    store = featurestore.open_store(tiny_store)
    assert meta["kind"] == "finetuned"
    assert meta["store"]["digest"] == store.digest
    assert meta["store"]["fingerprint"]["weights_sha256"] == store.fingerprint.weights_sha256
    assert meta["head"]["metadata_sha256"] == file_sha256(dense_head / METADATA)
    assert meta["params"]["from_cache"] is True and meta["params"]["learning_rate"] == 1e-5
    for split in ("validation", "test"):
        assert 0.0 <= meta["metrics"][split]["accuracy"] <= 1.0
        assert meta["head_metrics"][split]["n_samples"] == meta["metrics"][split]["n_samples"]
    assert len(meta["training"]["history"]["val_loss"]) == 2
    assert (folder / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert not (folder / "checkpoint").exists()  # removed once the model is complete


def test_predicts_through_the_prediction_function_and_the_cli(
    from_images: dict, tiny_store: Path, tmp_path: Path
) -> None:
    import featurestore
    from classifiers.finetune.saved import FinetunedClassifier
    from classifiers.model_file import load_model
    from classifiers.prediction import predict_rows, write_csv
    from featurestore.images import load_image

    saved = load_model(from_images["model_path"])
    assert isinstance(saved.estimator, FinetunedClassifier)
    source = featurestore.open_store(tiny_store).source_root
    rows = predict_rows(saved, source)
    assert len(rows) == 24 and all(row["error"] == "" for row in rows)
    images = np.stack([load_image(row["path"], SIZE) for row in rows])
    expected = saved.estimator.predict_proba(images)
    np.testing.assert_allclose([[row["p_cats"], row["p_dogs"]] for row in rows], expected, atol=1e-6)
    assert write_csv(rows, saved.class_names, tmp_path / "preds.csv") == 24
    from click.testing import CliRunner

    from classifiers.cli import main

    args = ["predict", from_images["model_path"], str(source), "--out", str(tmp_path / "cli.csv"), "--json"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["rows"] == 24
    assert (tmp_path / "cli.csv").read_text() == (tmp_path / "preds.csv").read_text()
    store_rows = predict_rows(saved, tiny_store)  # a store: its images, not its frozen features
    assert sorted(row["p_cats"] for row in store_rows) == pytest.approx(sorted(row["p_cats"] for row in rows))


def _config(store: Path, head: Path, out: Path, **changes: object) -> FinetuneConfig:
    return FinetuneConfig(
        store=store, head=head, out=out, weights="random", epochs=1, batch_size=4, **changes
    )


def test_refuses_heads_that_cannot_warm_start(tiny_store: Path, dense_head: Path, tmp_path: Path) -> None:
    from classifiers.training import train_from_store

    knn = train_from_store(tiny_store, "knn", tmp_path / "knn").model_path  # logreg warm-starts
    with pytest.raises(FinetuneError, match="no Keras head"):
        run_finetune(_config(tiny_store, knn, tmp_path / "out"))
    other = tmp_path / "other_head"
    shutil.copytree(dense_head, other)
    meta = json.loads((other / "metadata.json").read_text())
    meta["store"]["fingerprint"]["input_size"] = 64
    (other / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(FinetuneError, match=r"other features.*input_size"):
        run_finetune(_config(tiny_store, other, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_refuses_what_the_cache_cannot_do(tiny_store: Path, dense_head: Path, tmp_path: Path) -> None:
    plain = built_once(
        tiny_store.parent / "plain_store",
        lambda path: make_store(path.parent, extra_layers=(), flip_views=False),
    )
    with pytest.raises(FinetuneError, match=r"no block4_pool maps.*--extra-layer block4_pool"):
        run_finetune(_config(plain, dense_head, tmp_path / "out", from_cache=True))
    with pytest.raises(FinetuneError, match="block4 needs images"):
        run_finetune(_config(tiny_store, dense_head, tmp_path / "out", from_cache=True, unfreeze="block4"))


def test_refuses_to_overwrite_a_model_or_resume_other_arguments(
    from_cache: dict, tiny_store: Path, dense_head: Path, tmp_path: Path
) -> None:
    with pytest.raises(FinetuneError, match="already holds a model"):
        run_finetune(_config(tiny_store, dense_head, Path(from_cache["model_path"])))
    out = tmp_path / "out"
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "state.json").write_text(json.dumps({"run": "someone else's"}))
    with pytest.raises(FinetuneError, match="other arguments"):
        run_finetune(_config(tiny_store, dense_head, out))


@pytest.mark.parametrize(
    ("field", "value"),
    [("class_name", "Lambda"), ("registered_name", "evil>Thing")],
)
def test_a_model_file_naming_other_layers_is_refused(
    from_cache: dict, tmp_path: Path, field: str, value: str
) -> None:
    import zipfile

    from classifiers.errors import PayloadError
    from classifiers.finetune.saved import MODEL_FILE, load_network

    source = Path(from_cache["model_path"]) / MODEL_FILE
    tampered = tmp_path / MODEL_FILE
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(tampered, "w") as out:
        for name in archive.namelist():
            content = archive.read(name)
            if name == "config.json":
                config = json.loads(content)
                config["config"]["layers"][1][field] = value  # the preprocessing layer
                content = json.dumps(config).encode()
            out.writestr(name, content)
    with pytest.raises(PayloadError, match="refusing"):
        load_network(tampered)
    load_network(source)  # the untouched file loads
