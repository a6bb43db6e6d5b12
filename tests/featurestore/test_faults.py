"""Faults with real processes: a full disk (a file size limit: EFBIG, like ENOSPC) during
extract and export, and damaged pieces repaired by `extract --repair`."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from featurestore import ExtractConfig, run_extract
from featurestore.extractor import Extractor
from featurestore.format import read_manifest
from featurestore.store import StoreError, open_store
from featurestore.verify import verify_store
from tests.conftest import extract_argv, write_image

SIZE = 32
CLI = [sys.executable, "-m", "classifiers.cli"]


def small_files_only(limit: int = 6000):
    """Run the child with a file size limit: every larger write fails with EFBIG (Python
    ignores SIGXFSZ), as on a full disk."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def extract_args(source: Path, store: Path) -> list[str]:
    return extract_argv(source, store, "--commit-every", "4", size=SIZE)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults") / "images"
    for i in range(8):
        write_image(root / ("cats" if i % 2 else "dogs") / f"{i:02d}.png", seed=i)
    return root


def test_a_full_disk_during_extract_is_one_line_and_keeps_the_last_commit(tree: Path, tmp_path: Path) -> None:
    """Before: seven h5py tracebacks, a second attempt at the write in `finally`, a segfault."""
    store = tmp_path / "s"
    first = subprocess.run(extract_args(tree, store), capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    committed = open_store(store).load()
    for i in range(8, 14):
        write_image(tree.parent / "more" / f"{i:02d}.png", seed=i)
    (tree / "cats" / "new").symlink_to(tree.parent / "more")
    try:
        full = subprocess.run(
            extract_args(tree, store), capture_output=True, text=True, preexec_fn=small_files_only()
        )
    finally:
        (tree / "cats" / "new").unlink()
    assert full.returncode == 1, full.stderr
    # One error line (besides the progress lines a log gets), no traceback.
    lines = [line for line in full.stderr.splitlines() if not line.startswith("extract: ")]
    lines = [line for line in lines if "cuInit" not in line]  # TensorFlow's device probe under the limit
    assert len(lines) == 1 and "Traceback" not in full.stderr, full.stderr
    assert lines[0].startswith(f"Error: {store}") and "cannot write piece (File too large)" in lines[0]
    assert list((store / ".tmp").iterdir()) == []
    again = open_store(store).load()
    assert list(again.paths) == list(committed.paths)
    np.testing.assert_array_equal(again.features, committed.features)
    assert verify_store(store) == ([], [])


def test_a_full_disk_during_export_is_one_line_and_leaves_nothing(tree: Path, tmp_path: Path) -> None:
    store, out = tmp_path / "s", tmp_path / "out" / "all.h5"
    out.parent.mkdir()
    assert subprocess.run(extract_args(tree, store), capture_output=True).returncode == 0
    full = subprocess.run(
        [*CLI, "export", str(store), str(out)], capture_output=True, text=True, preexec_fn=small_files_only()
    )
    assert full.returncode == 1
    assert full.stderr.strip() == f"Error: {out}: cannot write export (File too large)", full.stderr
    assert list(out.parent.iterdir()) == []


def flip_maps_byte(piece: Path) -> None:
    with h5py.File(piece, "r") as f:
        offset = f["features"].id.get_chunk_info(0).byte_offset
    with open(piece, "r+b") as f:
        f.seek(offset + 5)
        byte = f.read(1)
        f.seek(offset + 5)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_extract_repair_recomputes_the_rows_of_a_damaged_piece(tree: Path, tmp_path: Path) -> None:
    extractor = Extractor(weights="random", input_size=SIZE, batch_size=4)
    config = ExtractConfig(
        source=tree, store=tmp_path / "s", input_size=SIZE, batch_size=4, commit_every=4, progress=False
    )
    run_extract(config, extractor)
    reference = open_store(tmp_path / "s").load()
    piece = read_manifest(tmp_path / "s").pieces[0]
    flip_maps_byte(tmp_path / "s" / piece.file)
    with pytest.raises(StoreError, match=rf"{Path(piece.file).name}: features cannot be read"):
        open_store(tmp_path / "s").load()
    plain = run_extract(config, extractor)  # a no-change run trusts the stat: nothing to do
    assert plain.computed == 0
    repaired = run_extract(ExtractConfig(**{**config.__dict__, "repair": True}), extractor)
    assert repaired.computed == piece.rows
    data = open_store(tmp_path / "s").load()
    order = np.argsort(data.paths)
    expected = np.argsort(reference.paths)
    assert list(data.paths[order]) == list(reference.paths[expected])
    np.testing.assert_array_equal(data.features[order], reference.features[expected])
    assert verify_store(tmp_path / "s")[0] == []
