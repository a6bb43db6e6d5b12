"""`run_benchmark`: plan the cells, reuse the cached ones, run the rest in parallel, report.

The store is read once, in the parent, with whole-split reads. Workers (joblib's loky
processes) get the arrays as read-only memory maps of one temporary .npy file each, so N
workers share one copy in the page cache instead of unpickling N copies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

import featurestore
from classifiers.bench.cells import (
    TEST_FOLD,
    CellTask,
    cell_key,
    cell_path,
    library_versions,
    read_cell,
    recipe,
    run_cell,
)
from classifiers.bench.config import BenchConfig, Variant, expand_variants
from classifiers.bench.folds import BenchData, Fold, common_images, ids_digest, load_data, make_folds
from classifiers.bench.leaderboard import RANK_METRIC, BenchResult, build_rows
from classifiers.bench.settings import Setting, plan_settings, store_cost
from featurestore.errors import JobInterrupted
from featurestore.signals import interrupt_on_signal

#: Arrays smaller than this go to workers by pickling; larger ones as memory maps.
MEMMAP_MIN_BYTES = 1 << 20


def _plan(
    variants: list[Variant],
    data: BenchData,
    folds: list[Fold],
    config: BenchConfig,
    cells_dir: Path,
    setting: Setting | None = None,
) -> tuple[list[CellTask], dict[str, dict[str, Any]], bool]:
    """Every (variant, fold) task, plus the final fit per variant; the full parameters of each.

    `setting` says whether the tasks fit on flipped or augmented views and score with test-time
    flips or views."""
    views = {"flips": False, "tta": False, "augmented": False, "tta_views": False}
    if setting:
        views = {
            "flips": setting.flips,
            "tta": setting.tta,
            "augmented": setting.views,
            "tta_views": setting.tta_views,
        }
    from classifiers.keras_heads import KerasHead
    from classifiers.model_file import jsonable
    from classifiers.registry import current_params, final_estimator, make_classifier

    tasks, params, any_keras = [], {}, False
    digest = data.store["digest"]
    layout = {"seed": config.seed, "folds": config.folds, "repeats": config.repeats}
    test_digest = ids_digest(data.ids_test)
    for variant in variants:
        estimator = make_classifier(variant.classifier, variant.params, variant.features)
        params[variant.name] = jsonable(current_params(estimator))
        made = recipe(estimator)
        keras = isinstance(final_estimator(estimator), KerasHead)
        any_keras |= keras
        for fold in folds:
            key = cell_key(variant, made, digest, fold.index, fold.digest, keras=keras, **layout, **views)
            path = cell_path(cells_dir, key)
            tasks.append(
                CellTask(variant, key, path, fold.index, fold.repeat, fold.train, fold.test, **views)
            )
        if len(data.y_test):
            key = cell_key(variant, made, digest, TEST_FOLD, test_digest, keras=keras, **layout, **views)
            path = cell_path(cells_dir, key)
            tasks.append(CellTask(variant, key, path, TEST_FOLD, None, None, None, **views))
    return tasks, params, any_keras


@contextlib.contextmanager
def _shared_arrays(
    arrays: tuple[np.ndarray | None, ...], parallel: bool
) -> Iterator[tuple[np.ndarray | None, ...]]:
    """The arrays as read-only memory maps of temporary .npy files when workers will read them
    (None, an array not loaded, stays None)."""
    if not parallel:
        yield arrays
        return
    with tempfile.TemporaryDirectory(prefix="featurestore-bench-") as tmp:
        shared: list[np.ndarray | None] = []
        for i, array in enumerate(arrays):
            if array is None or array.nbytes < MEMMAP_MIN_BYTES:
                shared.append(array)
                continue
            path = Path(tmp) / f"array{i}.npy"
            np.save(path, np.ascontiguousarray(array))
            shared.append(np.load(path, mmap_mode="r"))
        yield tuple(shared)


def _progress(show: bool | None, total: int) -> tuple[Any, bool]:
    """A tqdm bar on stderr when it is a terminal (or asked for); else one line per cell."""
    from tqdm.auto import tqdm

    bar = show if show is not None else sys.stderr.isatty()
    return tqdm(total=total, unit="cell", desc="bench", file=sys.stderr, disable=not bar), bar


def _execute(
    pending: list[CellTask], data: BenchData, config: BenchConfig, cells_dir: Path
) -> dict[Path, dict[str, Any]]:
    """Run the pending cells (at most `config.jobs` at once) and return them by file path."""
    from joblib import cpu_count

    if not pending:
        return {}
    cores = cpu_count()
    jobs = min(cores if config.jobs == -1 else config.jobs, len(pending))
    # Each of N workers gets cores/N threads for BLAS, OpenMP and TensorFlow; one worker keeps
    # the libraries' own defaults (the whole machine).
    threads = None if jobs == 1 else max(1, cores // jobs)
    arrays = (data.X, data.y, data.X_test, data.y_test)
    extra = (data.X_flipped, data.X_test_flipped, data.X_views, data.X_test_views)  # None: not loaded
    done: dict[Path, dict[str, Any]] = {}
    bar, show_bar = _progress(config.progress, len(pending))
    with bar, _cells(pending, arrays + extra, data.class_names, jobs, threads, config) as finished:
        for cell in finished:
            done[cell_path(cells_dir, cell["key"])] = cell
            bar.update(1)
            if not show_bar and config.progress is None:
                fold = "test split" if cell["fold"] == TEST_FOLD else f"fold {cell['fold']}"
                print(
                    f"bench: [{len(done)}/{len(pending)}] {cell['variant']} {fold}: {RANK_METRIC} "
                    f"{cell['metrics'][RANK_METRIC]:.4f}, fit {cell['fit_seconds']:.1f} s",
                    file=sys.stderr,
                )
    return done


@contextlib.contextmanager
def _cells(
    pending: list[CellTask],
    arrays: tuple[np.ndarray | None, ...],
    class_names: tuple[str, ...],
    jobs: int,
    threads: int | None,
    config: BenchConfig,
) -> Iterator[Iterator[dict[str, Any]]]:
    """The finished cells, in any order: joblib's local workers, or Ray tasks on a cluster."""
    if config.engine == "ray":
        from classifiers.bench.ray_cells import run_cells_on_ray

        with run_cells_on_ray(pending, arrays, class_names, threads, config.ray_address) as cells:
            yield cells
        return
    from joblib import Parallel, delayed

    with _shared_arrays(arrays, parallel=jobs > 1) as shared:
        X, y, X_test, y_test, *mirrors = shared  # mirrors: flipped and augmented views' maps, or None
        parallel = Parallel(n_jobs=jobs, backend="loky", return_as="generator_unordered")
        yield parallel(
            delayed(run_cell)(t, X, y, X_test, y_test, class_names, threads, *mirrors) for t in pending
        )


def _in_setting(variant: Variant, setting: Setting) -> Variant:
    """The variant as a row of `setting`: its name (and its grid's) prefixed by the label."""
    if not setting.label:
        return variant
    grid = None if variant.grid is None else setting.prefix(variant.grid)
    return dataclasses.replace(variant, name=setting.prefix(variant.name), grid=grid, setting=setting.label)


def _setting_records(
    settings: list[Setting], opened: dict[Path, Any], datas: dict[Path, BenchData]
) -> list[dict[str, Any]]:
    """What each setting is and costs, for the reports."""
    costs = {path: store_cost(store, path) for path, store in opened.items()}
    return [
        {
            "label": s.label,
            "store": str(Path(s.store).resolve()),
            "digest": datas[s.store].store["digest"],
            "flips": s.flips,
            "tta": s.tta,
            "augmented_views": s.views,
            "tta_views": s.tta_views,
            **costs[s.store],
        }
        for s in settings
    ]


def _fold_record(fold: Fold) -> dict[str, Any]:
    return {
        "index": fold.index,
        "repeat": fold.repeat,
        "n_train": len(fold.train),
        "n_test": len(fold.test),
        "test_ids_digest": fold.digest,
    }


@contextlib.contextmanager
def _out_lock(out: Path) -> Iterator[None]:
    """One benchmark per output folder; then clear temporary files a killed run left behind."""
    from featurestore.fsutil import remove_stale_temps
    from featurestore.lock import FolderLock

    with FolderLock(out, "another benchmark is writing to this folder", "wait for it"):
        remove_stale_temps(out)
        remove_stale_temps(out / "cells")
        yield


def run_benchmark(config: BenchConfig) -> BenchResult:
    """Benchmark the configured classifiers on the store's folds; write the reports to `config.out`.

    Raises `BenchError` or `ParamError` for bad settings or data, and `featurestore.StoreError`
    for a missing or broken store, before any fitting starts. SIGTERM and Ctrl-C stop it with
    `featurestore.JobInterrupted`: the finished cells are kept, and the same call resumes.
    """
    try:
        with interrupt_on_signal() as received:  # on the way out it names SIGINT for a Ctrl-C
            return _run(config)
    except KeyboardInterrupt:
        kept = config.out / "cells"
        raise JobInterrupted(received[0], f"finished cells are kept in {kept}; run again to resume") from None


def _run(config: BenchConfig) -> BenchResult:
    from classifiers.bench.report import write_reports

    started = time.perf_counter()
    base_variants = expand_variants(config)  # bad names and values fail before the data is read
    stores = [config.store, *config.stores]
    opened = {path: featurestore.open_store(path) for path in stores}
    has_flips = {path: bool(store.fingerprint.flip_views) for path, store in opened.items()}
    has_views = {path: store.fingerprint.views > 0 for path, store in opened.items()}
    settings, notes = plan_settings(stores, config.flips, config.tta, has_flips, config.views, has_views)
    for note in notes:
        print(f"bench: {note}", file=sys.stderr)
    needs_flips = {path: any(s.flips or s.tta for s in settings if s.store == path) for path in stores}
    needs_views = {path: any(s.views or s.tta_views for s in settings if s.store == path) for path in stores}
    loaded = [
        load_data(
            path,
            config.folds,
            stream=config.stream,
            reads=[variant.reads for variant in base_variants],
            say=lambda line: print(f"bench: {line}", file=sys.stderr),
            flipped=needs_flips[path],
            views=needs_views[path],
        )
        for path in stores
    ]
    shared, left_out = (
        common_images(loaded, [str(path) for path in stores]) if len(stores) > 1 else (loaded, 0)
    )
    if left_out:
        print(f"bench: {left_out} image(s) not in every store are left out", file=sys.stderr)
    datas = dict(zip(stores, shared, strict=True))
    data = shared[0]
    folds = make_folds(data.y, data.ids, config.folds, config.repeats, config.seed)
    cells_dir = config.out / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    with _out_lock(config.out):
        plans = []
        for setting in settings:
            variants = [_in_setting(v, setting) for v in base_variants]
            plans.append(
                (setting, variants, *_plan(variants, datas[setting.store], folds, config, cells_dir, setting))
            )
        tasks = [t for plan in plans for t in plan[2]]
        variants = [v for plan in plans for v in plan[1]]
        params = {name: p for plan in plans for name, p in plan[3].items()}
        any_keras = any(plan[4] for plan in plans)
        cached = {t.path: cell for t in tasks if (cell := read_cell(t.path, t.key)) is not None}
        test = " + the test split" if len(data.y_test) else " (no test rows)"
        print(
            f"bench: {len(base_variants)} classifier(s) x {len(settings)} setting(s) x {len(folds)} fold(s)"
            f"{test}: {len(tasks)} cells, {len(cached)} reused from {cells_dir}, "
            f"{len(tasks) - len(cached)} to run",
            file=sys.stderr,
        )
        cells = dict(cached)
        for setting, _, setting_tasks, *_ in plans:
            pending = list(
                {t.path: t for t in setting_tasks if t.path not in cells}.values()
            )  # one run per file
            cells |= _execute(pending, datas[setting.store], config, cells_dir)
        fold_cells = {
            v.name: [cells[t.path] for t in tasks if t.variant is v and t.fold != TEST_FOLD] for v in variants
        }
        test_cells = {t.variant.name: cells[t.path] for t in tasks if t.fold == TEST_FOLD}
        result = BenchResult(
            config=config,
            rows=build_rows(variants, params, fold_cells, test_cells),
            store=data.store,
            folds=[_fold_record(f) for f in folds],
            cells_total=len(tasks),
            cells_reused=sum(t.path in cached for t in tasks),
            seconds=time.perf_counter() - started,
            versions=library_versions(any_keras),
            duplicates_dropped=data.duplicates_dropped,
            settings=_setting_records(settings, opened, datas) if settings[0].label else [],
        )
        files = write_reports(result, config.out)
    return dataclasses.replace(result, files=files)
