"""Files rewritten in place by another process while `extract` reads them (issue 14, item 2):
every row's maps are those of the content its id names."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from featurestore import ExtractConfig, run_extract
from featurestore.extractor import Extractor
from featurestore.images import decode_image, load_image
from featurestore.store import open_store
from tests.conftest import write_image

SIZE = 32
FILES = 8
ROUNDS = 30

# Flips each file between its two contents (BMPs of one size, so a file is never short) in
# place, same inode, as fast as it can until the stop file appears.
REWRITER = """
import json, os, sys, pathlib
plan, stop = map(pathlib.Path, sys.argv[1:3])
pairs = [(os.open(target, os.O_WRONLY), pathlib.Path(content).read_bytes())
         for target, content in json.loads(plan.read_text())]
stop.with_suffix(".ready").touch()
while not stop.exists():
    for _ in range(100):
        for fd, data in pairs:
            os.pwrite(fd, data, 0)
"""


def torn_maps(image_id: str, versions: list[bytes], extractor: Extractor) -> np.ndarray:
    """The maps of the bytes a read that crossed rewrites saw. The kernel copies a page in
    order, so a torn read is one content with a run of the other's bytes: a seam (the rest is
    the other content) or, rarely, two (the rewriter wrote twice during one copy, seen under
    load). Its id must be the sha256 of such bytes, and its maps theirs."""
    for data in _torn(*versions):
        if hashlib.sha256(data).hexdigest() == image_id:
            pixels = decode_image(data, SIZE).astype(np.float32)
            return extractor.embed(pixels[None])["features"][0]
    raise AssertionError(f"id {image_id} of no content the file ever had, whole or torn")


def _torn(first: bytes, second: bytes) -> Iterator[bytes]:
    """Every way one read can tear between two contents: one seam first, then two."""
    for a, b in ((first, second), (second, first)):
        for seam in range(1, len(a)):
            yield a[:seam] + b[seam:]
    # only seams where the contents differ make new bytes
    differ = [i for i in range(len(first)) if first[i] != second[i]]
    for a, b in ((first, second), (second, first)):
        for k, start in enumerate(differ):
            head = a[:start]
            for end in differ[k + 1 :]:
                yield head + b[start:end] + a[end:]


@pytest.fixture(scope="module")
def extractor() -> Extractor:
    return Extractor(weights="random", input_size=SIZE, batch_size=4)


def test_rows_of_files_rewritten_during_extract_hold_the_maps_of_their_id(
    tmp_path: Path, extractor: Extractor
) -> None:
    tree, contents = tmp_path / "images", tmp_path / "contents"
    contents.mkdir()
    expected: dict[str, dict[str, np.ndarray]] = {}  # relpath -> id -> maps
    versions_of: dict[str, list[bytes]] = {}
    plan = []  # (file, content) pairs the rewriter flips between
    for i in range(FILES):
        relpath = f"{'cats' if i % 2 else 'dogs'}/img{i:02d}.bmp"
        paths = [
            write_image(contents / f"{i:02d}_{v}.bmp", seed=1000 * v + i, size=(24, 24)) for v in range(2)
        ]
        versions = [path.read_bytes() for path in paths]
        versions_of[relpath] = versions
        plan.extend((str(tree / relpath), str(path)) for path in paths)
        (tree / relpath).parent.mkdir(parents=True, exist_ok=True)
        (tree / relpath).write_bytes(versions[0])
        pixels = np.stack([load_image(path, SIZE) for path in paths])
        maps = extractor.embed(pixels)["features"]
        expected[relpath] = {hashlib.sha256(d).hexdigest(): m for d, m in zip(versions, maps, strict=True)}

    (tmp_path / "plan.json").write_text(json.dumps(plan))
    stop = tmp_path / "stop"
    rewriter = subprocess.Popen([sys.executable, "-c", REWRITER, str(tmp_path / "plan.json"), str(stop)])
    try:
        deadline = time.monotonic() + 30
        while not stop.with_suffix(".ready").exists():
            assert rewriter.poll() is None and time.monotonic() < deadline, "rewriter did not start"
            time.sleep(0.01)
        rows = 0
        for run in range(ROUNDS):  # a new store each time: every file is decoded
            store = tmp_path / f"s{run}"
            config = ExtractConfig(
                source=tree, store=store, input_size=SIZE, batch_size=4, workers=4, progress=False
            )
            run_extract(config, extractor)
            data = open_store(store).load()
            for relpath, image_id, features in zip(data.paths, data.ids, data.features, strict=True):
                if image_id not in expected[relpath]:  # a read that crossed a rewrite
                    expected[relpath][image_id] = torn_maps(image_id, versions_of[relpath], extractor)
                np.testing.assert_array_equal(features, expected[relpath][image_id], err_msg=relpath)
            rows += len(data)
    finally:
        stop.touch()
        rewriter.wait(timeout=30)
    assert rows >= ROUNDS * FILES // 2  # the reads that failed are recorded failures
