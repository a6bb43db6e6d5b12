"""The HTML report: built from real run records, rendered in a real headless browser."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featurestore.drift import compare
from featurestore.report import ReportError, build_report, nights, read_leaderboard
from featurestore.runs import list_runs, record_run
from featurestore.testing import make_store

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CHARTS = ("images", "throughput", "failures", "classes", "drift")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def drift_result(shift: float, seed: int) -> dict:
    """A real drift comparison of synthetic pooled rows, tonight shifted by `shift`."""
    rng = np.random.default_rng(seed)
    earlier, tonight = rng.random((300, 16)), rng.random((60, 16)) + shift
    labels = np.arange(360) % 2
    return compare(earlier, labels[:300], tonight, labels[300:], ("cats", "dogs"), seed=seed).to_dict()


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with five nights of extract runs (one failed) and a train run (read-only)."""
    rng = np.random.default_rng(0)
    store = tmp_path_factory.mktemp("history") / "pets"
    make_store(store, rng.random((30, 1, 1, 8), np.float32), rng.integers(0, 2, 30), ["cats", "dogs"])
    day = 86400.0
    start = 1_740_000_000.0
    for night in range(5):
        clock = Clock(start + night * day)
        recorder = record_run(store, "extract", clock=clock)
        try:
            with recorder as run:
                run.update(
                    counts={"new": 100 + 10 * night, "changed": night, "removed": 1, "failed": night % 3},
                    failed_by_reason={"corrupt image data": night % 3} if night % 3 else {},
                    stages={
                        "model": {"seconds": 10.0, "images": 100 + 10 * night, "images_per_s": 10.0 + night},
                        "total": {"seconds": 20.0, "images": 100 + 10 * night, "images_per_s": 5.0 + night},
                    },
                    store={
                        "rows": 1000 + 100 * night,
                        "classes": {"cats": 500 + 80 * night, "dogs": 500 + 20 * night},
                    },
                    drift=drift_result(0.3 * (night == 4), night),
                    generation=night + 1,
                )
                clock.now += 20
                if night == 3:
                    raise RuntimeError("disk full")
        except RuntimeError:
            pass
    with record_run(store, "train", clock=Clock(start + 4 * day + 100)):
        pass
    return store


@pytest.fixture
def bench_out(tmp_path: Path) -> Path:
    """A bench output folder as classifiers' bench writes it: results.json and leaderboard.csv."""
    out = tmp_path / "bench"
    out.mkdir()
    board = [
        {
            "rank": rank,
            "name": name,
            "summary": {
                "accuracy": {"mean": acc, "std": 0.01, "ci95_low": acc - 0.02, "ci95_high": acc + 0.02}
            },
            "test": {"accuracy": acc - 0.005},
            "verdict": verdict,
        }
        for rank, (name, acc, verdict) in enumerate(
            [("logreg", 0.961, "best"), ("dense", 0.955, "tied with best"), ("knn", 0.90, "worse than best")],
            1,
        )
    ]
    (out / "results.json").write_text(json.dumps({"format": "featurestore.bench/1", "leaderboard": board}))
    (out / "leaderboard.csv").write_text("rank,name,accuracy\n1,logreg,0.961\n2,dense,0.955\n")
    return out


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    model = tmp_path / "models" / "logreg"
    model.mkdir(parents=True)
    metrics = {
        split: {"accuracy": acc, "balanced_accuracy": acc, "f1": acc, "roc_auc": 0.99, "log_loss": 0.1}
        for split, acc in (("validation", 0.957), ("test", 0.962))
    }
    (model / "metadata.json").write_text(json.dumps({"classifier": "logreg", "metrics": metrics}))
    return model


def test_nights_add_up_the_extract_runs_of_each_date(history: Path) -> None:
    per_night = nights(list_runs(history))
    assert [n.date for n in per_night] == [
        "2025-02-19",
        "2025-02-20",
        "2025-02-21",
        "2025-02-22",
        "2025-02-23",
    ]
    assert [n.counts["new"] for n in per_night] == [100, 110, 120, 130, 140]
    assert per_night[2].failed_by_reason == {"corrupt image data": 2}
    assert per_night[1].images_per_s("model") == pytest.approx(11.0)
    assert per_night[4].drift["drifted"] and not per_night[0].drift["drifted"]


def test_the_page_holds_every_chart_table_and_nothing_external(
    history: Path, bench_out: Path, model_dir: Path
) -> None:
    page = build_report(history, history.parent / "report", leaderboard=bench_out, models=[model_dir])
    text = page.read_text()
    assert "<script" not in text and not re.search(r'(src|href)="(https?:|//)', text)
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == len(CHARTS)
    for name, data in zip(CHARTS, images, strict=True):
        png = (page.parent / f"{name}.png").read_bytes()
        assert base64.b64decode(data) == png  # the same chart inline and beside the page
        assert Image.open(io.BytesIO(png)).size == (800, 320)
    for expected in ("logreg", "tied with best", "0.9620", "disk full", "Failures by reason", "cats"):
        assert expected in text
    assert text.count("<tr>") >= 3 + 2 + 6  # leaderboard, models, runs


def test_an_empty_history_and_a_broken_store_still_give_a_page(tmp_path: Path) -> None:
    store = tmp_path / "broken"
    store.mkdir()
    (store / "manifest.json").write_text("{")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "drift.png").write_bytes(b"stale")
    page = build_report(store, tmp_path / "report")
    text = page.read_text()
    assert "store not readable" in text and "not JSON" in text
    assert "no extract runs recorded yet" in text and "<img" not in text
    assert not (tmp_path / "report" / "drift.png").exists()  # no stale chart beside the page


def test_a_leaderboard_or_model_that_cannot_be_read_is_one_clear_error(
    history: Path, bench_out: Path
) -> None:
    assert read_leaderboard(bench_out / "leaderboard.csv")[0] == ["rank", "name", "accuracy"]
    (bench_out / "results.json").write_text("{}")
    with pytest.raises(ReportError, match=r"results\.json: cannot read the leaderboard"):
        build_report(history, history.parent / "r", leaderboard=bench_out)
    with pytest.raises(ReportError, match="not a model folder"):
        build_report(history, history.parent / "r", models=[history])


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright; a missing browser fails the test in CI."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed (pip install -e '.[test]')"
    if missing is None and not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        missing = f"{CHROMIUM} not found (apt-get install -y chromium)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def test_the_report_renders_in_a_real_browser_without_errors(
    browser, history: Path, bench_out: Path, model_dir: Path, tmp_path: Path
) -> None:
    page_path = build_report(
        history, tmp_path / "report", leaderboard=bench_out / "results.json", models=[model_dir]
    )
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    problems: list[str] = []
    page.on("console", lambda message: message.type in ("error", "warning") and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("requestfailed", lambda request: problems.append(f"failed request {request.url}"))
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(page_path.as_uri(), wait_until="load")
    assert problems == []
    assert all(url.startswith(("file:", "data:")) for url in requests)
    assert page.title() == "featurestore report: pets"
    widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    assert widths == [800] * len(CHARTS)
    headings = page.locator("h2").all_inner_texts()
    for heading in (
        "Images per night",
        "Throughput per night",
        "Failures by reason",
        "Class balance over time",
        "Drift AUC over time",
        "Leaderboard",
        "Models",
    ):
        assert heading in headings
    # Every chart is laid out where a reader sees it: on the page, with a size.
    boxes = [page.locator("img").nth(i).bounding_box() for i in range(len(CHARTS))]
    assert all(box and box["width"] > 400 and box["height"] > 100 for box in boxes)
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    image = Image.open(shot).convert("L")
    assert image.size[0] == 1200 and image.size[1] > 5 * 320  # the whole page, charts included
    assert np.asarray(image).std() > 20  # something drawn, not a blank page
    page.close()
