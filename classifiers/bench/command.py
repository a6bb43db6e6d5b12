"""The `bench` click command: parse, build a `BenchConfig`, call `run_benchmark`, print the table.

Registered by the CLI group (``main.add_command(bench)``). Only click is imported at module
level, so registering it keeps ``featurestore --help`` light; scikit-learn is imported when
the command runs, and TensorFlow only inside a worker that fits a Keras head.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("bench")
@click.argument("store", type=click.Path(path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder for the leaderboard files and the cell cache (resumable).",
)
@click.option(
    "--classifiers",
    default=None,
    metavar="A,B,...",
    help="Registry names to compare (default: all registered).",
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
@click.option("--folds", default=5, show_default=True, help="Stratified folds over train+validation.")
@click.option("--repeats", default=1, show_default=True, help="Repeat the folds with new shuffles.")
@click.option("--seed", default=0, show_default=True, help="Seed of the fold shuffles.")
@click.option("--jobs", default=1, show_default=True, help="Cells run at once (-1: all cores).")
@click.option(
    "--features",
    type=click.Choice(["flatten", "avg", "max"]),
    default=None,
    help="Feature transform for every classifier that takes one (default: each its own).",
)
def bench(
    store: Path,
    out: Path,
    classifiers: str | None,
    grid: tuple[str, ...],
    grid_file: Path | None,
    folds: int,
    repeats: int,
    seed: int,
    jobs: int,
    features: str | None,
) -> None:
    """Compare classifiers on identical folds of STORE; leaderboard in OUT (csv, md, json, png)."""
    from featurestore.cli import user_errors

    with user_errors():
        from classifiers.bench.config import BenchConfig, load_grid_file, merge_grids, parse_grid
        from classifiers.bench.report import format_table
        from classifiers.bench.runner import run_benchmark

        names = None if classifiers is None else tuple(n.strip() for n in classifiers.split(",") if n.strip())
        config = BenchConfig(
            store=store,
            out=out,
            classifiers=names,
            grid=merge_grids(load_grid_file(grid_file) if grid_file else {}, parse_grid(grid)),
            folds=folds,
            repeats=repeats,
            seed=seed,
            jobs=jobs,
            features=features,
        )
        result = run_benchmark(config)  # SIGTERM, Ctrl-C: one line, exit 128 + signal
    click.echo(format_table(result))
    click.echo("wrote " + ", ".join(result.files.values()))
