"""The fine-tuning job: warm-start from a trained head, train the top block(s), save a model.

`run_finetune` checks everything cheap first (store, head, output folder, cache layers), then
builds VGG16 with the store's weights, loads the inputs of each split, trains (resuming from
``OUT/checkpoint/`` when a run with the same arguments was killed), evaluates the result and
the head it started from on the same splits, and writes the model folder.
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
from classifiers.errors import FinetuneError
from classifiers.finetune import data
from classifiers.finetune.checkpoint import Checkpoint
from classifiers.finetune.config import FinetuneConfig, resolve_precision
from classifiers.finetune.model import (
    augmented,
    build_networks,
    compile_for_training,
    copy_weights,
    load_weights,
    predict_proba,
    seeded,
)
from classifiers.finetune.report import FinetuneReport
from classifiers.finetune.saved import FinetunedClassifier
from classifiers.finetune.train import Schedule, fit
from classifiers.finetune.warmstart import load_head
from classifiers.metrics import evaluate, metrics_from_proba
from classifiers.model_file import METADATA, save_model
from classifiers.plots import plot_confusion_matrix, plot_training_curves
from featurestore.backbone import build_conv_base
from featurestore.errors import JobInterrupted
from featurestore.signals import interrupt_on_signal
from featurestore.weights import resolve_weights

SPLITS = ("train", "validation", "test")
#: The folder of OUT where epochs are checkpointed; the finished model replaces it.
CHECKPOINT = "checkpoint"


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FinetuneError(f"--out {out} is a file")
    if (out / METADATA).is_file() and not overwrite:
        raise FinetuneError(f"--out {out} already holds a model (use --overwrite)")
    strays = [p.name for p in out.iterdir() if p.name != CHECKPOINT] if out.is_dir() else []
    if strays and not (out / METADATA).is_file():
        raise FinetuneError(f"--out {out} exists and is not a model folder ({', '.join(sorted(strays)[:3])})")


def run_finetune(config: FinetuneConfig, log: Callable[[str], None] | None = None) -> FinetuneReport:
    """Fine-tune as `config` says; `log` gets one line per epoch (default: stderr).

    SIGTERM and Ctrl-C stop it with `JobInterrupted`; the finished epochs are checkpointed, and
    the same call resumes after the last of them.
    """
    try:
        with interrupt_on_signal() as received:  # on the way out it names SIGINT for a Ctrl-C
            return _run(config, log)
    except KeyboardInterrupt:
        kept = Path(config.out) / CHECKPOINT
        raise JobInterrupted(received[0], f"finished epochs are kept in {kept}; rerun to resume") from None


def _run(config: FinetuneConfig, log: Callable[[str], None] | None) -> FinetuneReport:
    started = time.perf_counter()
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    store = featurestore.open_store(config.store)
    warm = load_head(config.head, store)
    out = Path(config.out)
    _check_out(out, config.overwrite)
    if config.from_cache:
        data.check_cache(store, config.augment)
    # Refuses weights that do not reproduce the store's features, before any training.
    featurestore.Extractor.from_fingerprint(store.fingerprint, weights=config.weights)
    run = {"store": store.digest, "head": warm.metadata_sha256, **config.params()}
    views = data.cached_views(store) if config.from_cache and config.augment else None
    if views and views["augmented_views"]:  # another draw than a flips-only run's: another run
        run["cached_views"] = views
    checkpoint = Checkpoint(
        out / CHECKPOINT, hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()
    )
    checkpoint.claim(config.overwrite)

    policy = resolve_precision(config.precision)
    with seeded(config.seed):  # dropout and augmentation generators start seeded; global RNGs restored
        networks, model = _build(config, store, warm, policy)
    rows = {split: _rows(config, store, split, warm.classes) for split in SPLITS}
    if len(rows["train"]) == 0:
        raise FinetuneError(f"{store.path}: no labeled training images to fine-tune on")

    schedule = Schedule(
        epochs=config.epochs,
        batch_size=config.batch_size,
        patience=config.patience,
        seed=config.seed,
        augment=config.from_cache and config.augment,
        workers=config.workers,  # decode threads when the images do not fit in memory
    )
    result = fit(
        model, networks.full, networks.trainable, rows["train"], rows["validation"], schedule, checkpoint, log
    )

    evaluated = networks.top if config.from_cache else networks.full
    metrics, head_metrics = {}, {}
    for split in ("validation", "test"):
        if len(rows[split]):
            proba = predict_proba(evaluated, rows[split].in_order(config.batch_size).inputs())
            metrics[split] = _metrics(rows[split].labels, proba, warm.classes, store.class_names)
            head_metrics[split] = _head_metrics(store, split, warm)
    training = {
        "inputs": "cached block4_pool maps" if config.from_cache else "images",
        **({"cached_views": views} if views else {}),
        "unfreeze": config.unfreeze,
        "epochs_run": len(result.epoch_seconds),
        "best_epoch": result.best_epoch,
        "resumed_from": result.resumed_from,
        "stopped_early": result.stopped_early,
        "epoch_seconds": [round(s, 3) for s in result.epoch_seconds],
        "mean_epoch_seconds": float(np.mean(result.epoch_seconds)) if result.epoch_seconds else 0.0,
        "counts": {split: len(r) for split, r in rows.items()},
        "skipped": {split: r.skipped for split, r in rows.items() if r.skipped},
        "precision": policy,
        "backend": keras.backend.backend(),
    }
    path = _save(config, store, warm, networks, policy, metrics, head_metrics, training, result.history)
    return FinetuneReport(
        model_path=path,
        metrics=metrics,
        head_metrics=head_metrics,
        training=training,
        seconds=time.perf_counter() - started,
    )


def _build(config: FinetuneConfig, store: Any, warm: Any, policy: str) -> tuple[Any, Any]:
    """The networks with the store's conv weights and the head's, and the model to compile."""
    size = store.fingerprint.input_size
    networks = build_networks(size, warm.network, config.unfreeze, policy)
    load_weights(networks, build_conv_base(size, resolve_weights(config.weights)), warm.network)
    model = networks.top if config.from_cache else networks.full
    if config.augment and not config.from_cache:
        model = augmented(networks.full, config.seed)
    n_outputs = int(networks.full.output_shape[-1])
    return networks, compile_for_training(model, config.learning_rate, n_outputs, policy == "mixed_float16")


def _rows(config: FinetuneConfig, store: Any, split: str, classes: np.ndarray) -> data.Rows:
    if config.from_cache:  # the stored views only feed training's augmentation
        return data.map_rows(store, split, classes, augment=config.augment and split == "train")
    return data.image_rows(store, split, classes, config.workers)


def _metrics(codes: np.ndarray, proba: np.ndarray, classes: np.ndarray, class_names: Any) -> dict[str, Any]:
    """classifiers' metrics: outputs are the head's classes, metrics want one column per class."""
    full = np.zeros((len(proba), len(class_names)))
    full[:, classes] = proba
    return metrics_from_proba(classes[codes], full, class_names)


def _head_metrics(store: Any, split: str, warm: Any) -> dict[str, Any]:
    """The head alone on the store's frozen features of the same split."""
    frozen = store.load(split)
    keep = frozen.labels >= 0
    return evaluate(warm.saved.estimator, frozen.features[keep], frozen.labels[keep], store.class_names)


def _save(
    config: FinetuneConfig,
    store: Any,
    warm: Any,
    networks: Any,
    policy: str,
    metrics: dict,
    head_metrics: dict,
    training: dict,
    history: dict,
) -> Path:
    """Write the model folder: the float32 network, metrics, lineage, curves, confusion matrices."""
    network = networks.full
    if policy != "float32":  # predict runs anywhere, often on a CPU: save a float32 network
        network = build_networks(store.fingerprint.input_size, warm.network, config.unfreeze).full
        copy_weights(networks.full, network)

    def plots(folder: Path) -> None:
        plot_training_curves(
            history, folder / "training_curves.png", title="finetune", best_epoch=training["best_epoch"]
        )
        for split, split_metrics in metrics.items():
            plot_confusion_matrix(
                split_metrics["confusion_matrix"],
                store.class_names,
                folder / f"confusion_matrix_{split}.png",
                title=f"finetune: {split}",
            )

    classifier = FinetunedClassifier()
    classifier.model_, classifier.classes_ = network, warm.classes
    classifier.input_size_ = store.fingerprint.input_size
    return save_model(
        config.out,
        classifier,
        classifier="finetune",
        class_names=store.class_names,
        params={**config.params(), "weights": config.weights, "precision": policy},
        metrics=metrics,
        training={**training, "history": history},
        fingerprint=store.fingerprint.to_dict(),
        store_digest=store.digest,
        store_path=store.path,
        extra={"head_metrics": head_metrics, "head": warm.lineage()},
        extras=plots,
        overwrite=config.overwrite,
        replaces=(CHECKPOINT,),  # this run's own checkpoint goes with the finished model
    )
