"""`finetune-cv`: bench's folds, a head and its fine-tune per fold, scored on the held-out images;
killed with SIGKILL and rerun, it keeps its finished folds and ends as an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from classifiers.finetune.cv import REPORT
from tests.classifiers.finetune.conftest import built_once, make_store

pytestmark = pytest.mark.xdist_group("finetune")
FOLDS = 3


def _argv(store: Path, out: Path, *extra: str) -> list[str]:
    return [
        "finetune-cv",
        str(store),
        "--out",
        str(out),
        "--weights",
        "random",
        "--folds",
        str(FOLDS),
        "--batch-size",
        "4",
        "--precision",
        "float32",
        "--head-param",
        "hidden=8",
        "--json",
        *extra,
    ]


def _cli(*argv: str) -> tuple[int, str]:
    from classifiers.cli import main

    result = CliRunner().invoke(main, list(argv))
    return result.exit_code, result.output


@pytest.fixture(scope="session")
def still_run(views_store: Path) -> Path:
    """A run whose fine-tune cannot move (lr 1e-12): the fine-tuned network must score as its
    head does, image by image, if block4 maps, block5 maps and labels line up."""

    def build(out: Path) -> None:
        code, output = _cli(*_argv(views_store, out, "--epochs", "1", "--lr", "1e-12"))
        assert code == 0, output

    return built_once(views_store.parent / "cv_still", build)


def test_folds_are_benchs_and_a_still_fine_tune_scores_as_its_head_image_by_image(
    views_store: Path, still_run: Path
) -> None:
    from classifiers.bench.folds import load_data, make_folds

    report = json.loads((still_run / REPORT).read_text())
    bench = load_data(views_store, FOLDS)
    folds = make_folds(bench.y, bench.ids, FOLDS, 1, 0)
    assert [fold["fold_digest"] for fold in report["folds"]] == [fold.digest for fold in folds]
    for fold, bench_fold in zip(report["folds"], folds, strict=True):
        scored = fold["predictions"]
        assert scored["ids"] == bench.ids[bench_fold.test].tolist()  # the held-out images, in order
        for row in ("", "+tta-views"):
            head, tuned = np.array(scored["head" + row]), np.array(scored["finetuned" + row])
            assert np.ptp(head[:, 1]) > 1e-4  # the head tells images apart, so a misaligned row shows
            np.testing.assert_allclose(tuned, head, atol=1e-5, err_msg=row)
        y = bench.y[bench_fold.test]
        assert fold["scores"]["head"]["accuracy"] == pytest.approx(np.mean(head.argmax(axis=1) == y))
        assert fold["images"]["fitted"] + fold["images"]["inner_validation"] == len(bench_fold.train)
    assert sum(fold["images"]["scored"] for fold in report["folds"]) == len(bench.y)
    assert report["cached_views"] == ["flipped", "view 1", "view 2"]
    accuracy = [fold["scores"]["head"]["accuracy"] for fold in report["folds"]]
    assert report["summary"]["head"]["accuracy"]["mean"] == pytest.approx(np.mean(accuracy))
    assert set(report["differences"]) == {"finetuned - head", "finetuned+tta-views - head+tta-views"}


@pytest.fixture(scope="session")
def still_images_run(views_store: Path) -> Path:
    """`still_run` fine-tuning on the images (block4 and block5 unfrozen): VGG16 on the images,
    and on their views made again by the store's recipe, must give the stored maps."""

    def build(out: Path) -> None:
        extra = ("--epochs", "1", "--lr", "1e-12", "--from-images", "--unfreeze", "block4")
        code, output = _cli(*_argv(views_store, out, *extra))
        assert code == 0, output
        assert "then block4+block5+head from images with random augmentation" in output

    return built_once(views_store.parent / "cv_still_images", build)


def test_a_still_fine_tune_from_images_scores_as_its_head_image_by_image(
    still_run: Path, still_images_run: Path
) -> None:
    cached = json.loads((still_run / REPORT).read_text())
    report = json.loads((still_images_run / REPORT).read_text())
    assert report["settings"]["from_cache"] is False and report["settings"]["unfreeze"] == "block4"
    assert report["cached_views"] == []
    for fold, cached_fold in zip(report["folds"], cached["folds"], strict=True):
        scored = fold["predictions"]
        assert scored["ids"] == cached_fold["predictions"]["ids"]
        for row in ("", "+tta-views"):  # the same heads as the cached run's (same folds, same seed)
            head = np.array(scored["head" + row])
            np.testing.assert_allclose(head, cached_fold["predictions"]["head" + row], atol=1e-6)
            np.testing.assert_allclose(scored["finetuned" + row], head, atol=1e-5, err_msg=row)


def test_a_still_fine_tune_from_a_logreg_head_scores_as_the_logreg_image_by_image(
    views_store: Path, tmp_path: Path
) -> None:
    """The logreg pipeline scores the head, its Keras equivalent is fine-tuned: at lr 1e-12
    they must agree image by image, with and without test-time views."""
    argv = _argv(views_store, tmp_path / "cv", "--head", "logreg", "--epochs", "1", "--lr", "1e-12")
    at = argv.index("--head-param")
    del argv[at : at + 2]  # hidden=8 is a dense head's
    code, output = _cli(*argv)
    assert code == 0, output
    report = json.loads((tmp_path / "cv" / REPORT).read_text())
    assert report["settings"]["head"] == "logreg"
    for fold in report["folds"]:
        scored = fold["predictions"]
        for row in ("", "+tta-views"):
            head = np.array(scored["head" + row])
            assert np.ptp(head[:, 1]) > 1e-4
            np.testing.assert_allclose(scored["finetuned" + row], head, atol=1e-5, err_msg=row)


def test_from_images_refuses_a_changed_image_in_one_line_and_writes_no_fold(tmp_path: Path) -> None:
    store = make_store(tmp_path, views=0, name="store")
    import featurestore

    changed = featurestore.open_store(store).images(["train", "validation"])[0].path  # in the pool
    changed.write_bytes(changed.read_bytes() + b"\0")  # other bytes than those extracted
    out = tmp_path / "cv"
    code, output = _cli(*_argv(store, out, "--from-images"))
    assert code != 0
    lines = output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in output, output
    assert str(changed) in lines[0] and "changed since extraction" in lines[0]
    assert not list(out.glob("fold-*"))

    code, output = _cli(*_argv(store, out, "--unfreeze", "block4"))  # block4 needs the images
    assert code != 0 and "--unfreeze block4 needs images (--from-images)" in output
    assert len(output.strip().splitlines()) == 1


def test_test_time_views_average_the_head_over_each_image_and_its_stored_views(
    views_store: Path, still_run: Path
) -> None:
    """Recomputed from the predictions of the plain row and the store's views: the head is
    refitted exactly as the fold fitted it (same rows, same seed) and scored on each view."""
    from classifiers.bench.folds import load_data, make_folds
    from classifiers.fit_data import inner_validation
    from classifiers.metrics import full_proba
    from classifiers.registry import make_classifier

    report = json.loads((still_run / REPORT).read_text())
    bench = load_data(views_store, FOLDS, views=True)
    fold, bench_fold = report["folds"][0], make_folds(bench.y, bench.ids, FOLDS, 1, 0)[0]
    inner = inner_validation(bench.ids[bench_fold.train])
    assert fold["images"]["inner_validation"] == 0 and not inner.any()  # too few images to hold out
    head = make_classifier("dense", {"hidden": 8, "random_state": 0})
    head.fit(bench.X[bench_fold.train], bench.y[bench_fold.train])
    test = bench_fold.test
    np.testing.assert_allclose(fold["predictions"]["head"], full_proba(head, bench.X[test], 2), atol=1e-5)
    views = [full_proba(head, bench.X_views[test, k], 2) for k in range(bench.X_views.shape[1])]
    averaged = np.mean([full_proba(head, bench.X[test], 2), *views], axis=0)
    np.testing.assert_allclose(fold["predictions"]["head+tta-views"], averaged, atol=1e-5)
    assert not np.allclose(averaged, fold["predictions"]["head"], atol=1e-4)


def test_other_arguments_in_the_same_folder_are_refused_in_one_line_until_overwrite(
    views_store: Path, still_run: Path, tmp_path: Path
) -> None:
    import shutil

    out = tmp_path / "cv"
    shutil.copytree(still_run, out)
    code, output = _cli(*_argv(views_store, out, "--epochs", "2", "--lr", "1e-12"))
    assert code != 0
    lines = output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in output, output
    assert "fold-00.json is a fold of a run with other arguments" in lines[0] and "--overwrite" in lines[0]

    code, output = _cli(*_argv(views_store, out, "--epochs", "2", "--lr", "1e-12", "--overwrite"))
    assert code == 0, output
    report = json.loads((out / REPORT).read_text())
    assert {fold["epochs_run"] for fold in report["folds"]} == {2}
    printed = json.loads(output.strip().splitlines()[-1])  # --json: the report less the probabilities
    assert printed["summary"] == report["summary"] and "predictions" in report["folds"][0]
    assert not any("predictions" in fold for fold in printed["folds"])


def test_a_store_without_block4_maps_is_refused_in_one_line(views_store: Path, tmp_path: Path) -> None:
    plain = built_once(
        views_store.parent / "plain_cv_store",
        lambda path: make_store(path.parent, extra_layers=(), name=path.name),
    )
    code, output = _cli(*_argv(plain, tmp_path / "cv"))
    assert code != 0
    lines = output.strip().splitlines()
    assert len(lines) == 1 and "holds no block4_pool maps" in lines[0], output
    assert not (tmp_path / "cv").exists()


def _wait(path: Path, process: subprocess.Popen[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def test_a_run_killed_in_its_second_fold_keeps_the_first_and_ends_as_an_uninterrupted_run(
    views_store: Path, tmp_path: Path
) -> None:
    def command(out: Path) -> list[str]:  # processes of their own, as a nightly job runs
        extra = ("--epochs", "4", "--patience", "100", "--lr", "1e-3")
        return [sys.executable, "-m", "classifiers.cli", *_argv(views_store, out, *extra)]

    done = subprocess.run(command(tmp_path / "straight"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    straight = json.loads((tmp_path / "straight" / REPORT).read_text())

    out = tmp_path / "killed"
    process = subprocess.Popen(command(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait(out / "fold-01-checkpoint" / "state.json", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (out / "fold-00.json").is_file() and not (out / "fold-01.json").exists()
    first = (out / "fold-00.json").read_bytes()

    rerun = subprocess.run(command(out), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "fold 1/3: training" not in rerun.stderr and "fold 2/3: training" in rerun.stderr
    assert "resuming after epoch" in rerun.stderr
    assert (out / "fold-00.json").read_bytes() == first  # a finished fold is never redone
    assert not any(path.name.endswith("-checkpoint") for path in out.iterdir())
    resumed = json.loads((out / REPORT).read_text())
    for ours, theirs in zip(resumed["folds"], straight["folds"], strict=True):
        assert ours["epochs_run"] == theirs["epochs_run"] == 4
        for model in ("head", "finetuned", "finetuned+tta-views"):
            np.testing.assert_allclose(
                ours["predictions"][model], theirs["predictions"][model], atol=1e-5, err_msg=model
            )
