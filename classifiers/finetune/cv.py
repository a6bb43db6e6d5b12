"""Cross-validated fine-tuning, from cached maps or from images: `featurestore finetune-cv`.

One `finetune` run is scored on one validation and one test split: a few hundred images, where
one image moves the accuracy by a third of a point. Whether fine-tuning pays, and with which
settings, is chosen on `bench`'s folds instead. For each fold of the train+validation images
(by image id: the folds `bench --folds N --seed S` draws):

1. a head (dense, gap or logreg) is trained on the fold's training images' block5_pool maps,
   the Keras heads stopping early on an inner split of them (`fit_data.inner_validation`, as
   `train --fit-on train+validation` draws it; logreg is fitted without those images too);
2. block5 and that head are fine-tuned on the same images' cached block4_pool maps, drawing
   among each image's stored views as `finetune --from-cache` does, or (`--from-images`) on the
   images, augmented on the fly as `finetune --from-images` does; both stop on the same inner
   split;
3. the head alone and the fine-tuned network score the held-out fold.

The report pairs them fold by fold: each one's mean with its corrected 95% interval and the
corrected resampled t-test of the difference (`classifiers.bench.stats`). Each finished fold is
written to ``OUT/fold-NN.json`` and each epoch checkpointed in ``OUT/fold-NN-checkpoint/``: a
rerun with the same arguments skips the finished folds and resumes the current one's epochs.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

import featurestore
from classifiers.bench.folds import Fold, make_folds
from classifiers.errors import FinetuneError
from classifiers.finetune.checkpoint import Checkpoint
from classifiers.finetune.config import FinetuneCVConfig, resolve_precision
from classifiers.finetune.cv_pool import PoolMaps, pool_images
from classifiers.finetune.cv_report import FinetuneCVReport
from classifiers.finetune.data import CachedView, ImageRows, MapRows, Rows, RowsAt, check_cache, label_codes
from classifiers.finetune.model import (
    augmented,
    build_networks,
    compile_for_training,
    load_weights,
    predict_proba,
    seeded,
)
from classifiers.finetune.train import Schedule, fit
from classifiers.finetune.warmstart import head_network, layer_problem
from classifiers.fit_data import inner_validation
from classifiers.metrics import full_proba, metrics_from_proba
from classifiers.model_file import jsonable
from classifiers.registry import make_classifier
from classifiers.training import fit_estimator
from classifiers.tta import views_proba
from featurestore.backbone import build_conv_base
from featurestore.errors import JobInterrupted
from featurestore.fsutil import atomic_write_text
from featurestore.signals import interrupt_on_signal
from featurestore.views import augment_batch
from featurestore.weights import resolve_weights

#: The report of a finished run, next to its folds' files.
REPORT = "report.json"


def run_finetune_cv(config: FinetuneCVConfig, log: Callable[[str], None] | None = None) -> FinetuneCVReport:
    """Score fine-tuning on `config.folds` folds.

    SIGTERM and Ctrl-C stop it with `JobInterrupted`; finished folds and epochs are kept, and
    the same call resumes after them.
    """
    try:
        with interrupt_on_signal() as received:
            return _run(config, log or (lambda line: print(line, file=sys.stderr, flush=True)))
    except KeyboardInterrupt:
        raise JobInterrupted(
            received[0], f"finished folds and epochs are kept in {config.out}; rerun to resume"
        ) from None


def _run(config: FinetuneCVConfig, log: Callable[[str], None]) -> FinetuneCVReport:
    started = time.perf_counter()
    store = featurestore.open_store(config.store)
    if problem := layer_problem(store):
        raise FinetuneError(f"{store.path}: {problem}")
    if config.from_cache:
        check_cache(store, config.augment)
    featurestore.Extractor.from_fingerprint(store.fingerprint, weights=config.weights)
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise FinetuneError(f"--out {out} is a file")
    pool = PoolMaps.read(store, block4=config.from_cache)
    counts = np.bincount(pool.y, minlength=len(store.class_names))
    if (counts[counts > 0] < config.folds).any() or (counts > 0).sum() < 2:
        raise FinetuneError(
            f"{store.path}: labelled train+validation images per class {counts.tolist()}; "
            f"--folds {config.folds} needs 2 classes with at least {config.folds} images each"
        )
    images = None if config.from_cache else pool_images(store, pool, config.workers)
    drawn = sorted(pool.drawn()) if config.augment else []
    run = {"store": store.digest, **config.params(), "cached_views": drawn}
    folds = make_folds(pool.y, pool.ids, config.folds, 1, config.seed)
    policy = resolve_precision(config.precision)
    base = build_conv_base(store.fingerprint.input_size, resolve_weights(config.weights))
    results = []
    for fold in folds:
        key = hashlib.sha256(json.dumps({**run, "fold": fold.digest}, sort_keys=True).encode()).hexdigest()
        path = out / f"fold-{fold.index:02d}.json"
        result = _finished(path, key, config.overwrite)
        if result is None:
            log(f"fold {fold.index + 1}/{len(folds)}: training on {len(fold.train)} images")
            result = _fold(config, store, pool, images, fold, base, policy, key, out, log)
            atomic_write_text(path, json.dumps(jsonable(result)))
            _checkpoint(out, fold.index, key).discard()  # the fold's result replaces its epochs
        results.append(result)
        log(_fold_line(result, len(folds)))
    report = FinetuneCVReport(
        store=str(store.path),
        settings={**config.params(), "weights": config.weights, "precision": policy},
        images=len(pool.y),
        cached_views=drawn,
        folds=results,
        seconds=time.perf_counter() - started,
    )
    atomic_write_text(out / REPORT, json.dumps(report.to_dict(), indent=1))
    return report


def _checkpoint(out: Path, index: int, key: str) -> Checkpoint:
    """The epoch checkpoint of fold `index` (it resumes only the run `key`)."""
    return Checkpoint(out / f"fold-{index:02d}-checkpoint", key)


def _finished(path: Path, key: str, overwrite: bool) -> dict[str, Any] | None:
    """The recorded result of a fold finished with these arguments, else None; refuses one
    finished with other arguments unless `overwrite`."""
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise FinetuneError(f"{path} is unreadable ({exc}); use --overwrite") from None
    if result.get("run") == key:
        return result
    if overwrite:
        return None
    raise FinetuneError(
        f"{path} is a fold of a run with other arguments or another store content; rerun with the "
        "same arguments to resume it, or add --overwrite to start over"
    )


def _fold(
    config: FinetuneCVConfig,
    store: Any,
    pool: PoolMaps,
    images: ImageRows | None,
    fold: Fold,
    base: Any,
    policy: str,
    key: str,
    out: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Train the fold's head, fine-tune from it (on cached block4 maps, or on `images` when
    given), score both on the held-out images (and, on a store with augmented views, both
    averaged over each image and its views)."""
    inner = inner_validation(pool.ids[fold.train])
    if inner.all() or not inner.any():
        inner[:] = False  # too few images to hold any out: train on all, for the set epochs
    fitted, stop, scored = fold.train[~inner], fold.train[inner], fold.test
    started = time.perf_counter()
    head = make_classifier(config.head, {**config.head_params, "random_state": config.seed})
    stop_on = (pool.X[stop], pool.y[stop]) if len(stop) else None
    fit_estimator(head, pool.X[fitted], pool.y[fitted], stop_on)  # only Keras heads stop on it
    head_seconds = time.perf_counter() - started
    head_net = head_network(head, store)
    classes = np.asarray(head.classes_).astype(np.int64)
    drawn = pool.drawn() if config.augment else {}

    def rows(at: np.ndarray, views: bool) -> Rows:
        keep, codes = label_codes(pool.y[at], classes)  # an image of a class the head never saw
        at = at[keep]  # cannot train its output
        if images is not None:
            return RowsAt(images, at, codes)
        sources = [CachedView.loaded(name, maps) for name, maps in drawn.items()] if views else []
        return MapRows(pool.block4, pool.ids[at], codes, sources, at=at)  # type: ignore[arg-type]

    size = store.fingerprint.input_size
    with seeded(config.seed):  # dropout and augmentation generators start seeded
        networks = build_networks(size, head_net, config.unfreeze, policy)
        trained = networks.top if images is None else networks.full
        if images is not None and config.augment:
            trained = augmented(networks.full, config.seed)
    load_weights(networks, base, head_net)
    model = compile_for_training(
        trained, config.learning_rate, int(networks.top.output_shape[-1]), policy == "mixed_float16"
    )
    schedule = Schedule(
        epochs=config.epochs,
        batch_size=config.batch_size,
        patience=config.patience,
        seed=config.seed,
        augment=bool(drawn),
        workers=config.workers,
    )
    checkpoint = _checkpoint(out, fold.index, key)
    checkpoint.claim(config.overwrite)
    validation = rows(stop, False) if len(stop) else None
    result = fit(
        model, networks.full, networks.trainable, rows(fitted, True), validation, schedule, checkpoint, log
    )
    n_classes = len(store.class_names)

    def tuned_proba(inputs: np.ndarray) -> np.ndarray:
        """The fine-tuned network on block4 maps (from cache) or on images (from images)."""
        network = networks.top if images is None else networks.full
        batches = (inputs[i : i + config.batch_size] for i in range(0, len(inputs), config.batch_size))
        proba = np.zeros((len(inputs), n_classes))
        proba[:, classes] = predict_proba(network, batches)
        return proba

    held_out = pool.block4[scored] if images is None else images.fetch(scored)  # type: ignore[index]
    probas = {"head": full_proba(head, pool.X[scored], n_classes)}
    probas["finetuned"] = tuned_proba(held_out)
    if pool.X_views is not None:  # test-time views, as bench --tta views
        k = pool.X_views.shape[1]
        head_views = [pool.X[scored], *(pool.X_views[scored, i] for i in range(k))]
        probas["head+tta-views"] = views_proba(head, head_views, n_classes)
        if images is None:
            tuned_views = [tuned_proba(pool.block4_views[scored, i]) for i in range(k)]  # type: ignore[index]
        else:  # the views the store holds, made again from the images by the same recipe
            ids = pool.ids[scored].tolist()
            tuned_views = [tuned_proba(augment_batch(held_out, ids, view)) for view in range(1, k + 1)]
        probas["finetuned+tta-views"] = np.mean([probas["finetuned"], *tuned_views], axis=0)
    y = pool.y[scored]
    return {
        "run": key,
        "fold": fold.index,
        "fold_digest": fold.digest,
        "images": {"fitted": len(fitted), "inner_validation": len(stop), "scored": len(scored)},
        "scores": {name: metrics_from_proba(y, p, store.class_names) for name, p in probas.items()},
        # out-of-fold probabilities, one column per class: for paired tests, ensembles, errors
        "predictions": {"ids": pool.ids[scored].tolist(), **probas},
        "head_seconds": head_seconds,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.epoch_seconds),
        "mean_epoch_seconds": float(np.mean(result.epoch_seconds)) if result.epoch_seconds else 0.0,
        "backend": keras.backend.backend(),
    }


def _fold_line(result: dict[str, Any], n_folds: int) -> str:
    head, tuned = (result["scores"][model]["accuracy"] for model in ("head", "finetuned"))
    best = f"best epoch {result['best_epoch']} of " if result["best_epoch"] else ""
    return (
        f"fold {result['fold'] + 1}/{n_folds}: head {head:.4f} -> fine-tuned {tuned:.4f} "
        f"on {result['images']['scored']} held-out images ({best}{result['epochs_run']} epochs, "
        f"{result['mean_epoch_seconds']:.1f} s each)"
    )
