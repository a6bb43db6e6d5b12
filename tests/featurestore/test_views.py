"""extract --views K: deterministic augmented views, kept in the store, resumable bit for bit."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from classifiers.cli import main
from featurestore import ExtractConfig, run_extract
from featurestore.extractor import Extractor
from featurestore.fingerprint import Fingerprint
from featurestore.format import map_datasets
from featurestore.images import load_image
from featurestore.store import StoreError, open_store
from featurestore.views import augment, view_box
from tests.conftest import extract_argv, wait_for_commit, write_image

SIZE = 32
K = 3


def extract(source: Path, store: Path, extractor: Extractor) -> object:
    config = ExtractConfig(
        source=source, store=store, input_size=SIZE, batch_size=4, views=extractor.views, progress=False
    )
    return run_extract(config, extractor)


def all_maps(store_path: Path) -> dict[str, dict[str, np.ndarray]]:
    """{relpath: {dataset: maps}} of every live row."""
    store = open_store(store_path)
    reads = {"features": store.load()} | {f"view{k}": store.load(view=k) for k in range(1, store.views + 1)}
    return {
        path: {name: data.features[i] for name, data in reads.items()}
        for i, path in enumerate(reads["features"].paths)
    }


def test_a_view_is_a_function_of_the_image_id_and_the_view_number() -> None:
    image = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3)).astype(np.float32)
    first = augment(image, "a" * 64, 1)
    np.testing.assert_array_equal(first, augment(image.copy(), "a" * 64, 1))
    assert not np.array_equal(first, augment(image, "b" * 64, 1))  # another image's crop
    assert not np.array_equal(first, augment(image, "a" * 64, 2))
    boxes = [view_box("c" * 64, k, 150) for k in range(1, 9)]
    for (left, top, right, bottom), _ in boxes:
        assert 0 <= left < right <= 150 and 0 <= top < bottom <= 150
        assert 150 / 1.31 <= max(right - left, bottom - top) <= 150  # a small zoom, never out
    assert [m for _, m in boxes] == [True, False] * 4  # odd views mirrored
    with pytest.raises(ValueError, match="numbered from 1"):
        view_box("c" * 64, 0, 150)


def test_views_are_stored_per_image_and_recorded_in_the_fingerprint(tiny_tree: Path, tmp_path: Path) -> None:
    extractor = Extractor(weights="random", input_size=SIZE, batch_size=4, views=K)
    extract(tiny_tree, tmp_path / "s", extractor)
    store = open_store(tmp_path / "s")
    assert store.views == K and store.fingerprint.views == K
    assert map_datasets(store.fingerprint) == ["features", *(f"views/{k}/features" for k in range(1, K + 1))]
    plain = store.load()
    for k in range(1, K + 1):
        view = store.load(view=k)
        assert list(view.paths) == list(plain.paths)  # row for row
        # exactly the maps of the augmented image, computed on their own
        images = np.stack(
            [
                augment(load_image(tiny_tree / p, SIZE), i, k)
                for p, i in zip(view.paths, view.ids, strict=True)
            ]
        )
        np.testing.assert_array_equal(view.features, extractor.embed(images, list(view.ids))["features"])
        assert not np.array_equal(view.features, plain.features)
    with pytest.raises(StoreError, match="no augmented view 4"):
        store.load(view=K + 1)
    # a store's views count is part of its identity; zero views keeps older stores' digests
    assert Fingerprint(weights_sha256="0" * 64, views=2).digest != Fingerprint(weights_sha256="0" * 64).digest
    plain_fp = Fingerprint(weights_sha256="0" * 64)
    before_views = {
        k: v for k, v in plain_fp.to_dict().items() if k not in ("views", "decoder", "library_versions")
    }
    assert plain_fp.digest == hashlib.sha256(json.dumps(before_views, sort_keys=True).encode()).hexdigest()
    info = CliRunner().invoke(main, ["info", str(tmp_path / "s")])
    assert f"{K} augmented views" in info.output
    assert (
        json.loads(CliRunner().invoke(main, ["info", str(tmp_path / "s"), "--json"]).output)["fingerprint"][
            "views"
        ]
        == K
    )


def test_other_views_need_a_rebuild(tiny_tree: Path, tmp_path: Path) -> None:
    extract(tiny_tree, tmp_path / "s", Extractor(weights="random", input_size=SIZE, batch_size=4, views=1))
    result = CliRunner().invoke(main, extract_argv(tiny_tree, tmp_path / "s", "--views", "2", size=SIZE)[3:])
    assert result.exit_code != 0 and "views" in result.output and "Traceback" not in result.output


def test_a_second_run_killed_then_resumed_stores_the_same_views(tmp_path: Path) -> None:
    tree = tmp_path / "images"
    for i in range(24):
        write_image(tree / ("cats" if i % 2 else "dogs") / f"{i:03d}.png", seed=i, size=(48, 40))
    argv = [*extract_argv(tree, tmp_path / "a", "--views", str(K), size=SIZE), "--commit-every", "4"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    reference = all_maps(tmp_path / "a")

    # killed after its first commit, then resumed
    store_c = tmp_path / "c"
    argv_c = [*extract_argv(tree, store_c, "--views", str(K), size=SIZE), "--commit-every", "4"]
    process = subprocess.Popen(argv_c, stderr=subprocess.PIPE, text=True)
    wait_for_commit(store_c, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(open_store(store_c)) < 24  # it was interrupted
    assert subprocess.run(argv_c, capture_output=True, text=True, timeout=300).returncode == 0
    for other in (all_maps(store_c),):  # a second run, killed once, equals the first
        assert sorted(other) == sorted(reference)
        for path, maps in reference.items():
            assert set(other[path]) == set(maps) == {"features", *(f"view{k}" for k in range(1, K + 1))}
            for name, values in maps.items():
                np.testing.assert_array_equal(other[path][name], values)  # bit-identical
