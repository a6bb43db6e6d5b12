"""`featurestore finetune`: a thin click command over `classifiers.finetune.run_finetune`.

Imports only click at module level (Keras loads inside the command), so registering it keeps
`featurestore --help` fast. Also runnable as ``python -m classifiers.finetune.command``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

# TensorFlow's C++ start-up chatter is noise on a job's stderr; an explicit setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@click.command("finetune", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("store", type=click.Path(path_type=Path))
@click.option(
    "--head", required=True, type=click.Path(path_type=Path), help="A trained dense or gap head model."
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Model folder to write.")
@click.option(
    "--unfreeze",
    type=click.Choice(["block5", "block4"]),
    default="block5",
    show_default=True,
    help="Train this VGG16 block and those above it, with the head.",
)
@click.option("--epochs", default=30, show_default=True, help="At most this many epochs.")
@click.option("--lr", "learning_rate", default=1e-5, show_default=True, help="RMSprop learning rate.")
@click.option("--batch-size", default=20, show_default=True)
@click.option(
    "--patience", default=5, show_default=True, help="Stop after this many epochs without progress."
)
@click.option(
    "--augment/--no-augment",
    default=True,
    show_default=True,
    help="Random flips, rotations, zooms, shifts (from cache: stored flipped views).",
)
@click.option(
    "--from-cache/--from-images",
    default=False,
    show_default=True,
    help="Train block5 on the store's cached block4_pool maps instead of images.",
)
@click.option(
    "--weights", default="imagenet", show_default=True, help="Backbone weights the store was made with."
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "float32", "mixed_bfloat16", "mixed_float16"]),
    default="auto",
    show_default=True,
    help="auto: mixed_bfloat16 on a GPU, else float32.",
)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--overwrite", is_flag=True, help="Replace an existing model or a checkpoint of other arguments."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object last.")
def finetune(store: Path, as_json: bool, **options: object) -> None:
    """Fine-tune the top of VGG16 with a trained head on STORE's images; resume if killed.

    The head's weights are the starting point; layers below --unfreeze stay frozen. Each epoch
    is checkpointed in OUT/checkpoint/: rerun the same command after a crash to continue.
    """
    from classifiers.finetune.config import FinetuneConfig
    from classifiers.finetune.job import run_finetune
    from featurestore.cli import user_errors

    with user_errors():  # SIGTERM or Ctrl-C: one line, exit 128 + signal (`JobInterrupted`)
        report = run_finetune(FinetuneConfig(store=store, **options))  # type: ignore[arg-type]
    click.echo(report.summary())
    if as_json:
        click.echo(json.dumps(report.to_dict()))


if __name__ == "__main__":
    finetune()
