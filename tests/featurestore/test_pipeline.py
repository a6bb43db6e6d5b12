"""The pipeline's stages: decode processes give the store that threads give, bit for bit."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from featurestore import ExtractConfig, run_extract
from featurestore.extractor import Extractor
from featurestore.store import open_store
from tests.conftest import write_image

SIZE = 32


@pytest.fixture(scope="module")
def extractor() -> Extractor:
    return Extractor(weights="random", input_size=SIZE, batch_size=4)


def test_decode_processes_and_threads_make_the_same_store(
    tiny_tree: Path, tmp_path: Path, extractor: Extractor
) -> None:
    write_image(tiny_tree / "cats" / "bad.jpg", seed=1).write_bytes(b"not an image")
    shutil.copy(tiny_tree / "dogs" / "dogs_0.jpg", tiny_tree / "dogs" / "copy.jpg")
    stores = {}
    for mode, workers in (("threads", 3), ("processes", 2)):
        config = ExtractConfig(
            source=tiny_tree,
            store=tmp_path / mode,
            input_size=SIZE,
            batch_size=4,
            workers=workers,
            decode_in=mode,
            commit_every=3,  # several pieces through the writer thread
            progress=False,
        )
        summary = run_extract(config, extractor)
        # The copy and its original are decoded before either is embedded: both are computed.
        assert (summary.discovered, summary.failed, summary.computed) == (14, 1, 13)
        stores[mode] = open_store(tmp_path / mode)
    threads, processes = stores["threads"].load(), stores["processes"].load()
    assert list(threads.paths) == list(processes.paths) and len(threads) == 13
    assert list(threads.ids) == list(processes.ids)
    np.testing.assert_array_equal(threads.features, processes.features)
    assert stores["threads"].failures.keys() == stores["processes"].failures.keys() == {"cats/bad.jpg"}
    assert stores["threads"].digest == stores["processes"].digest
