"""scripts/store_as_float16.py writes what `extract --dtype float16` writes, bit for bit."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import featurestore
from tests.conftest import write_image

SCRIPT = Path(__file__).parents[3] / "scripts" / "store_as_float16.py"


def test_the_copy_equals_a_float16_extraction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("store_as_float16", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for i in range(6):
        write_image(tmp_path / "images" / ("cats" if i % 2 else "dogs") / f"{i}.png", seed=i)
    monkeypatch.setenv("FEATURESTORE_HOME", str(tmp_path / "home"))
    stores = {}
    for dtype in ("float32", "float16"):
        stores[dtype] = tmp_path / dtype
        featurestore.run_extract(
            featurestore.ExtractConfig(
                source=tmp_path / "images",
                store=stores[dtype],
                weights="random",
                input_size=32,
                dtype=dtype,
                flip_views=True,
                progress=False,
            )
        )
    assert module.copy_as_float16(stores["float32"], tmp_path / "copy") == 6
    made, copied = featurestore.open_store(stores["float16"]), featurestore.open_store(tmp_path / "copy")
    assert copied.fingerprint.digest == made.fingerprint.digest
    for flipped in (False, True):  # (read back as float32; the store keeps float16)
        a, b = made.load(None, flipped=flipped), copied.load(None, flipped=flipped)
        order_a, order_b = np.argsort(a.ids), np.argsort(b.ids)
        assert np.array_equal(a.features[order_a], b.features[order_b])
        assert (a.labels[order_a] == b.labels[order_b]).all() and (
            a.splits[order_a] == b.splits[order_b]
        ).all()
