"""The full `featurestore` CLI: the store commands plus `train` and `predict`.

The console script points here (``featurestore = classifiers.cli:main``): `main` is
`featurestore.cli.main` with two commands added, so that `featurestore` itself never imports
`classifiers`. Each command parses, calls one library function and prints the result;
scikit-learn and TensorFlow are imported inside the commands only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from classifiers.bench.command import bench
from classifiers.finetune.command import finetune
from featurestore.cli import main, user_errors

__all__ = ["main"]


def _train_settings(
    config: Path | None, classifier: str | None, features: str | None, items: tuple[str, ...]
) -> tuple[str, str | None, dict[str, Any]]:
    """Merge a config file with the options; options win, `--param` values are typed."""
    from classifiers.params import ParamError, load_config
    from classifiers.registry import parse_params

    settings = load_config(config) if config else {"params": {}}
    classifier = classifier or settings.get("classifier")
    if not classifier:
        raise ParamError("no classifier: pass --classifier NAME (or set it in --config)")
    params = {**settings["params"], **parse_params(items, classifier)}
    return classifier, features or settings.get("features"), params


@main.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option(
    "--classifier", "-c", help="dense, gap, logreg, linear-svm, rbf-svm, random-forest, hist-gb or knn."
)
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
    "--features",
    type=click.Choice(["flatten", "avg", "max"]),
    help="Feature transform (default: the classifier's own).",
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
@click.option("--overwrite", is_flag=True, help="Replace an existing model folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object last.")
def train(
    store: Path,
    classifier: str | None,
    out: Path,
    params: tuple[str, ...],
    features: str | None,
    config: Path | None,
    flips: bool | None,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Train a classifier on STORE's train split; report validation and test metrics.

    Writes the model folder (metadata.json, the estimator, confusion matrices and, for Keras
    heads, training curves as PNG).
    """
    from classifiers.training import train_from_store

    with user_errors():
        name, chosen_features, chosen_params = _train_settings(config, classifier, features, params)
        report = train_from_store(
            store, name, out, chosen_params, chosen_features, flips=flips, overwrite=overwrite
        )
    click.echo(report.summary())
    if as_json:
        click.echo(json.dumps(report.to_dict()))


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
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object last.")
def predict(model: Path, source: Path, out: Path, weights: str, as_json: bool) -> None:
    """Predict with MODEL on SOURCE: an image, a folder (labeled or not), a CSV manifest or a
    store. Bad images get a row with the reason in the `error` column."""
    from classifiers.model_file import load_model
    from classifiers.prediction import predict_rows, write_csv

    with user_errors():
        saved = load_model(model)
        rows = predict_rows(saved, source, weights=weights)
        write_csv(rows, saved.class_names, out)
    summary = _predict_summary(rows, out)
    click.echo(
        f"{summary['rows']} rows ({summary['errors']} errors) written to {out}"
        + (
            ""
            if summary["accuracy"] is None
            else f"; accuracy on {summary['labeled']} labeled: {summary['accuracy']:.4f}"
        )
    )
    if as_json:
        click.echo(json.dumps(summary))


def _predict_summary(rows: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """Counts, and accuracy over rows whose label is one of the model's classes."""
    scored = [row for row in rows if not row["error"] and row["label"]]
    labeled = [row for row in scored if f"p_{row['label']}" in row]
    correct = sum(row["predicted"] == row["label"] for row in labeled)
    return {
        "rows": len(rows),
        "errors": sum(1 for row in rows if row["error"]),
        "labeled": len(labeled),
        "accuracy": correct / len(labeled) if labeled else None,
        "out": str(out),
    }


# Both import only click at load time; Keras and scikit-learn load when they run.
main.add_command(bench)
main.add_command(finetune)
