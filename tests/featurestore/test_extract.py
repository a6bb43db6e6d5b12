"""The extraction job on tiny generated images with seeded random weights."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from classifiers.cli import main
from featurestore import ExtractConfig, exitcodes, run_extract
from featurestore.extractor import Extractor
from featurestore.images import load_image
from featurestore.store import StoreError, open_store
from featurestore.verify import verify_store
from tests.conftest import write_image

SIZE = 32


@pytest.fixture(scope="module")
def extractor() -> Extractor:
    """One random-weights model for the module: building VGG16 costs seconds."""
    return Extractor(weights="random", input_size=SIZE, batch_size=4)


def extract(source: Path, store: Path, extractor: Extractor, **kwargs: object):
    config = ExtractConfig(
        source=source, store=store, input_size=SIZE, batch_size=4, progress=False, **kwargs
    )
    return run_extract(config, extractor)


def test_features_are_the_models_output_for_each_image(
    tiny_tree: Path, tmp_path: Path, extractor: Extractor
) -> None:
    summary = extract(tiny_tree, tmp_path / "s", extractor)
    assert (summary.discovered, summary.new, summary.computed, summary.failed) == (12, 12, 12, 0)
    data = open_store(tmp_path / "s").load()
    assert len(data) == 12 and len(set(data.ids)) == 12
    assert data.class_names == ("cats", "dogs")
    images = np.stack([load_image(tiny_tree / p, SIZE) for p in data.paths])
    expected = extractor.embed(images)["features"]
    np.testing.assert_array_equal(data.features, expected)
    for path, label in zip(data.paths, data.labels, strict=True):
        assert data.class_names[label] == path.split("/")[0]


def test_rerun_computes_only_new_and_changed_images(
    tiny_tree: Path, tmp_path: Path, extractor: Extractor
) -> None:
    store = tmp_path / "s"
    extract(tiny_tree, store, extractor)
    again = extract(tiny_tree, store, extractor)
    assert (again.unchanged, again.new, again.computed) == (12, 0, 0)

    write_image(tiny_tree / "cats" / "new.png", seed=999)  # new
    write_image(tiny_tree / "dogs" / "dogs_1.png", seed=1234)  # changed content
    (tiny_tree / "cats" / "cats_2.jpg").unlink()  # removed
    os.utime(tiny_tree / "cats" / "cats_0.jpg", ns=(1, 1))  # touched, same bytes
    shutil.copy(tiny_tree / "dogs" / "dogs_0.jpg", tiny_tree / "dogs" / "copy.jpg")  # known content
    summary = extract(tiny_tree, store, extractor)
    assert (summary.new, summary.changed, summary.removed) == (2, 2, 1)
    assert summary.computed == 2  # the copy and the touched file reuse stored features
    data = open_store(store).load()
    assert len(data) == 13 and "cats/cats_2.jpg" not in set(data.paths)
    by_path = dict(zip(data.paths, data.features, strict=True))
    np.testing.assert_array_equal(by_path["dogs/copy.jpg"], by_path["dogs/dogs_0.jpg"])
    assert extract(tiny_tree, store, extractor).computed == 0  # the touched file's new mtime was recorded


def test_copies_of_content_committed_earlier_in_the_run_reuse_its_maps(
    tmp_path: Path, extractor: Extractor
) -> None:
    original = write_image(tmp_path / "images" / "cats" / "a_original.png", seed=5)
    for i in range(40):  # sorted after the original, submitted after its piece is committed
        shutil.copy(original, tmp_path / "images" / "cats" / f"copy_{i:02d}.png")
    summary = extract(tmp_path / "images", tmp_path / "s", extractor, commit_every=4, workers=1)
    assert summary.computed < 41
    data = open_store(tmp_path / "s").load()
    assert len(data) == 41 and len(set(data.ids)) == 1
    assert all(np.array_equal(f, data.features[0]) for f in data.features)


def test_bad_images_are_recorded_retried_and_never_become_data(
    tiny_tree: Path, tmp_path: Path, extractor: Extractor
) -> None:
    (tiny_tree / "cats" / "empty.jpg").write_bytes(b"")
    (tiny_tree / "cats" / "notes.png").write_text("not an image")
    good = (tiny_tree / "dogs" / "dogs_0.jpg").read_bytes()
    (tiny_tree / "dogs" / "cut.jpg").write_bytes(good[: len(good) // 2])
    summary = extract(tiny_tree, tmp_path / "s", extractor)
    assert summary.failed == 3 and summary.computed == 12
    store = open_store(tmp_path / "s")
    assert set(store.failures) == {"cats/empty.jpg", "cats/notes.png", "dogs/cut.jpg"}
    assert "truncated" in store.failures["dogs/cut.jpg"]["reason"]
    assert not {"cats/empty.jpg", "dogs/cut.jpg"} & set(store.load().paths)

    (tiny_tree / "dogs" / "cut.jpg").write_bytes(good)  # fixed overnight
    (tiny_tree / "cats" / "notes.png").unlink()  # given up on
    summary = extract(tiny_tree, tmp_path / "s", extractor)
    assert (summary.retried, summary.computed, summary.failed) == (2, 0, 1)  # cut.jpg reuses dogs_0's maps
    store = open_store(tmp_path / "s")
    assert set(store.failures) == {"cats/empty.jpg"}
    assert "dogs/cut.jpg" in set(store.load().paths)


def test_other_settings_are_refused_then_rebuilt(
    tiny_tree: Path, tmp_path: Path, extractor: Extractor
) -> None:
    extract(tiny_tree, tmp_path / "s", extractor)
    float16 = Extractor(weights="random", input_size=SIZE, batch_size=4, dtype="float16")
    with pytest.raises(StoreError, match=r"dtype: 'float32' != 'float16'.*--rebuild"):
        extract(tiny_tree, tmp_path / "s", float16)
    summary = extract(tiny_tree, tmp_path / "s", float16, rebuild=True)
    assert summary.computed == 12
    store = open_store(tmp_path / "s")
    assert store.fingerprint.dtype == "float16" and len(store) == 12
    assert verify_store(tmp_path / "s") == ([], [])


def test_extra_layers_and_flipped_views_are_kept(tiny_tree: Path, tmp_path: Path) -> None:
    extractor = Extractor(
        weights="random", input_size=SIZE, batch_size=4, extra_layers=("block4_pool",), flip_views=True
    )
    extract(tiny_tree, tmp_path / "s", extractor)
    store = open_store(tmp_path / "s")
    assert store.load("train", layer="block4_pool").features.shape[1:] == (2, 2, 512)
    plain, flipped = store.load(), store.load(flipped=True)
    images = np.stack([load_image(tiny_tree / p, SIZE)[:, ::-1] for p in plain.paths])
    np.testing.assert_array_equal(flipped.features, extractor.embed(images)["features"])
    assert not np.array_equal(plain.features, flipped.features)


def test_cli_extract_prints_a_json_summary_last(tiny_tree: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "extract",
            str(tiny_tree),
            "--store",
            str(tmp_path / "s"),
            "--weights",
            "random",
            "--input-size",
            str(SIZE),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert {"discovered", "new", "changed", "removed", "unchanged", "failed", "seconds"} <= set(summary)
    assert summary["new"] == 12
    info = CliRunner().invoke(main, ["info", str(tmp_path / "s"), "--json"])
    assert json.loads(info.output)["rows"] == 12


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["extract", str(tmp_path / "missing"), "--store", str(tmp_path / "s")])
    assert result.exit_code == exitcodes.BAD_INPUT
    assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    result = CliRunner().invoke(main, ["info", str(tmp_path)])
    assert result.exit_code == 1 and "not a feature store" in result.output


def test_mixed_precision_is_recorded_and_close_to_float32(
    tiny_tree: Path, tmp_path: Path, extractor: Extractor
) -> None:
    mixed = Extractor(weights="random", input_size=SIZE, batch_size=4, precision="mixed_bfloat16")
    assert mixed.fingerprint.digest != extractor.fingerprint.digest
    assert mixed.fingerprint.weights_sha256 == extractor.fingerprint.weights_sha256
    images = np.stack([load_image(p, SIZE) for p in sorted(tiny_tree.rglob("*.jpg"))])
    full, half = extractor.embed(images)["features"], mixed.embed(images)["features"]
    assert half.dtype == np.float32 and not np.array_equal(full, half)
    assert np.abs(full - half).mean() < 0.05 * np.abs(full).mean()


def test_an_images_maps_do_not_depend_on_its_batch(extractor: Extractor) -> None:
    """Same maps at every position, for every batch size, with any neighbours: without the guard
    image, the last image of a batch came out a few ulps away (found by scripts/soak.py)."""
    rng = np.random.default_rng(7)
    target, others = rng.uniform(0, 255, size=(2, 8, SIZE, SIZE, 3)).astype(np.float32)
    alone = Extractor(weights="random", input_size=SIZE, batch_size=1).embed(target[:1])["features"][0]
    for batch_size in (2, 3, 4):
        model = (
            extractor
            if batch_size == 4
            else Extractor(weights="random", input_size=SIZE, batch_size=batch_size)
        )
        for position in range(batch_size):
            images = others[: batch_size + 1].copy()  # one more: the next batch is a partial one
            images[position] = target[0]
            maps = model.embed(images)["features"][position]
            np.testing.assert_array_equal(
                maps, alone, err_msg=f"batch size {batch_size}, position {position}"
            )
