"""bench over several stores of the same images, with flipped training views and test-time flips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from classifiers.bench.config import BenchConfig
from classifiers.bench.runner import run_benchmark
from classifiers.bench.settings import plan_settings
from classifiers.errors import BenchError
from tests.classifiers.bench.conftest import CHEAP, write_store


def test_settings_skip_flips_a_store_does_not_have(tmp_path: Path) -> None:
    a, b = tmp_path / "s150", tmp_path / "s224"
    settings, notes = plan_settings([a, b], "both", "flip", {a: True, b: False})
    assert [s.label for s in settings] == ["s150+tta", "s150+flips+tta", "s224"]
    assert notes == ["s224: no flipped views (extract with --flip-views); plain setting only"]
    plain, _ = plan_settings([a], "no", "none", {a: True})
    assert [s.label for s in plain] == [""]  # one plain setting: the names stay as they were
    with pytest.raises(BenchError, match="--flips must be one of"):
        plan_settings([a], "sometimes", "none", {a: True})


def test_stores_of_the_same_images_share_folds_and_report_their_cost(tmp_path: Path) -> None:
    flips = write_store(tmp_path / "small", flip_views=True)
    other = write_store(tmp_path / "large", maps_seed=7, images=range(60))  # extracted part way
    config = BenchConfig(
        store=flips,
        stores=(other,),
        out=tmp_path / "out",
        classifiers=CHEAP,
        folds=3,
        flips="both",
        tta="both",
        progress=False,
    )
    result = run_benchmark(config)
    labels = [s["label"] for s in result.settings]
    assert labels == ["small", "small+tta", "small+flips", "small+flips+tta", "large"]
    assert len(result.rows) == len(CHEAP) * len(labels)
    # One set of folds, over the images both stores hold, for every row.
    digests = {tuple(c["key"]["fold_digest"] for c in row.folds) for row in result.rows}
    assert len(digests) == 1
    n_images = {row.folds[0]["n_train"] for row in result.rows}
    assert len(n_images) == 1
    for row in result.rows:
        fitted = row.folds[0]["n_fit_rows"]
        assert fitted == (2 if "+flips" in row.variant.setting else 1) * row.folds[0]["n_train"]
        assert row.name.startswith(row.variant.setting + "/")
    small = result.settings[0]
    assert small["flip_views"] and small["bytes_per_image"] > 0 and small["images"] == 72
    assert small["extract_seconds_per_image"] is None  # no run history in a hand-made store
    table = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "KB/img" in table and "setting small+flips+tta:" in table
    # The plain cells of a store are those a single-store run computes (same keys, reused).
    again = run_benchmark(BenchConfig(store=flips, out=tmp_path / "out", classifiers=CHEAP, folds=3))
    assert again.cells_reused < again.cells_total  # other images (all 72): other folds
    assert not again.settings


def test_stores_with_other_labels_are_refused(tmp_path: Path) -> None:
    a = write_store(tmp_path / "a")
    b = write_store(tmp_path / "b", classes=("birds", "fish"))
    with pytest.raises(BenchError, match="classes"):
        run_benchmark(
            BenchConfig(store=a, stores=(b,), out=tmp_path / "out", classifiers=("logreg",), folds=3)
        )


def test_bench_fits_on_the_training_folds_views_only(tmp_path: Path) -> None:
    views = write_store(tmp_path / "aug", views=3)
    config = BenchConfig(
        store=views, out=tmp_path / "out", classifiers=("logreg",), folds=3, views="both", progress=False
    )
    result = run_benchmark(config)
    assert [s["label"] for s in result.settings] == ["aug", "aug+views"]
    assert result.settings[1]["augmented_views"] and result.settings[1]["views"] == 3
    assert result.settings[1]["bytes_per_image"] == (1 + 3) * 2 * 2 * 16 * 4  # the image and 3 views
    digests = {tuple(c["key"]["fold_digest"] for c in row.folds) for row in result.rows}
    assert len(digests) == 1  # the same folds by image id
    for row in result.rows:
        factor = 4 if row.variant.setting.endswith("+views") else 1
        for cell in row.folds:
            assert cell["n_fit_rows"] == factor * cell["n_train"]
    settings, notes = plan_settings([tmp_path / "plain"], "no", "none", {tmp_path / "plain": False}, "yes")
    assert [s.label for s in settings] == ["plain"] and "no augmented views" in notes[0]


def test_tta_views_averages_each_scored_image_over_its_cached_views(tmp_path: Path) -> None:
    from classifiers.bench.folds import load_data
    from classifiers.registry import make_classifier
    from classifiers.tta import evaluate_views

    views = write_store(tmp_path / "aug", views=3)
    config = BenchConfig(
        store=views,
        out=tmp_path / "out",
        classifiers=("logreg",),
        folds=3,
        views="yes",
        tta="none,views",
        progress=False,
    )
    result = run_benchmark(config)
    assert [s["label"] for s in result.settings] == ["aug+views", "aug+views+tta-views"]
    assert [s["tta_views"] for s in result.settings] == [False, True]
    table = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "test-time average over the image and its 3 views" in table
    # The final fit's test score, recomputed by hand: fit on the images and their views, then
    # score the test images alone (plain row) or averaged over their views (tta-views row).
    data = load_data(views, 3, views=True)
    assert data.X_test_views is not None and data.X_test_views.shape[1] == 3
    model = make_classifier("logreg").fit(
        np.concatenate([data.X, data.X_views.reshape(-1, *data.X.shape[1:])]),
        np.concatenate([data.y, np.repeat(data.y, 3)]),
    )
    names = data.class_names
    plain = evaluate_views(model, [data.X_test], data.y_test, names)["log_loss"]
    test_views = [data.X_test, *data.X_test_views.transpose(1, 0, 2, 3, 4)]
    averaged = evaluate_views(model, test_views, data.y_test, names)
    by_setting = {row.variant.setting: row.test["metrics"]["log_loss"] for row in result.rows}
    assert by_setting["aug+views"] == pytest.approx(plain, rel=1e-9)
    assert by_setting["aug+views+tta-views"] == pytest.approx(averaged["log_loss"], rel=1e-9)
    assert plain != averaged["log_loss"]


def test_tta_modes_are_a_list_and_skip_stores_without_views(tmp_path: Path) -> None:
    from classifiers.bench.config import tta_modes
    from featurestore.errors import ConfigError

    assert tta_modes("both") == ("none", "flip")
    assert tta_modes("none, views") == ("none", "views")
    for bad in ("", "flip,crops", "none,both"):
        with pytest.raises(ConfigError, match="--tta"):
            tta_modes(bad)
    a, b = tmp_path / "v4", tmp_path / "plain"
    settings, notes = plan_settings([a, b], "no", "views", {a: False, b: False}, "no", {a: True, b: False})
    assert [(s.label, s.tta_views) for s in settings] == [("v4+tta-views", True), ("plain", False)]
    assert notes == ["plain: no augmented views (extract with --views K); no test-time views"]
