"""A tiny store of synthetic images (input size 32: block4_pool 2x2x512, block5_pool 1x1x512),
a dense head trained on it, and models fine-tuned from images and from the cached maps.

Built once per run even under `pytest -n 2`: the first worker to need one builds it in a folder
both workers share, under a file lock; the other waits and reuses it. (The modules also carry
xdist_group("finetune"), but with pytest 9 and xdist 3.8 that grouping does not take effect.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import built_once, write_image

SIZE = 32
N_IMAGES = 24
VIEWS = 2  # augmented views of the views store


def make_store(
    root: Path,
    *,
    extra_layers: tuple[str, ...] = ("block4_pool",),
    flip_views: bool = True,
    views: int = 0,
    name: str | None = None,
) -> Path:
    from featurestore import ExtractConfig, run_extract
    from featurestore.splits import SplitFractions

    images = root / "images"
    if not images.exists():
        for i in range(N_IMAGES):
            write_image(images / ("cats" if i % 2 else "dogs") / f"{i:02d}.png", seed=i, size=(40, 36))
    store = root / (name or ("store" if extra_layers else "plain_store"))
    fractions = SplitFractions(train=0.5, validation=0.25, test=0.25)
    config = ExtractConfig(
        source=images,
        store=store,
        weights="random",
        input_size=SIZE,
        extra_layers=extra_layers,
        flip_views=flip_views,
        views=views,
        split_fractions=fractions,
        progress=False,
    )
    run_extract(config)
    return store


@pytest.fixture(scope="session")
def shared(shared_tmp: Path) -> Path:
    return shared_tmp / "finetune"


@pytest.fixture(scope="session")
def tiny_store(shared: Path) -> Path:
    return built_once(shared / "store", lambda path: make_store(path.parent))


@pytest.fixture(scope="session")
def views_store(shared: Path) -> Path:
    """A store with block4_pool maps, flipped views and VIEWS augmented views. In a folder of
    its own: make_store writes the images of its root, maybe while another worker writes the
    tiny store's."""
    return built_once(
        shared / "views" / "views_store", lambda path: make_store(path.parent, views=VIEWS, name=path.name)
    )


@pytest.fixture(scope="session")
def views_head(views_store: Path) -> Path:
    from classifiers.training import train_from_store

    params = {"epochs": 2, "hidden": 8, "batch_size": 4}
    return built_once(
        views_store.parent / "dense_head", lambda out: train_from_store(views_store, "dense", out, params)
    )


@pytest.fixture(scope="session")
def dense_head(tiny_store: Path) -> Path:
    from classifiers.training import train_from_store

    params = {"epochs": 2, "hidden": 8, "batch_size": 4}
    return built_once(
        tiny_store.parent / "dense_head", lambda out: train_from_store(tiny_store, "dense", out, params)
    )


def finetune_cli(store: Path, head: Path, out: Path, *extra: str) -> dict:
    """Run the `finetune` command in-process; return its JSON report."""
    from classifiers.cli import main

    args = [
        str(store),
        "--head",
        str(head),
        "--out",
        str(out),
        "--weights",
        "random",
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--json",
        *extra,
    ]
    result = CliRunner().invoke(main, ["finetune", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def _finetuned(store: Path, head: Path, name: str, *extra: str) -> dict:
    report = store.parent / f"{name}.json"

    def build(path: Path) -> None:
        path.write_text(json.dumps(finetune_cli(store, head, store.parent / name, *extra)))

    return json.loads(built_once(report, build).read_text())


@pytest.fixture(scope="session")
def from_images(tiny_store: Path, dense_head: Path) -> dict:
    return _finetuned(tiny_store, dense_head, "ft_images", "--from-images")


@pytest.fixture(scope="session")
def from_cache(tiny_store: Path, dense_head: Path) -> dict:
    return _finetuned(tiny_store, dense_head, "ft_cache", "--from-cache")
