"""The manifest is parsed once per content and validated in bulk (issue 9): a run that reads it
several times parses it once, a reader never gets another content than the file's, and a bad
entry deep in a long list is still refused in one line naming it."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from featurestore.fingerprint import Fingerprint
from featurestore.format import MANIFEST, Manifest, PieceInfo, RetiredPiece, StoreError, read_manifest
from featurestore.splits import SplitFractions
from featurestore.writer import Row, StoreWriter

FP = Fingerprint(weights_sha256="c" * 64, input_size=32)


def commit(store: Path, names: list[str], deleted: tuple[str, ...] = ()) -> None:
    rows = [
        Row(
            relpath=name,
            image_id=f"{i:064x}",
            label="cats",
            split="train",
            size=i,
            mtime_ns=i,
            maps={"features": np.full((1, 1, 4), i, np.float32)},
        )
        for i, name in enumerate(names)
    ]
    fractions = SplitFractions()
    with StoreWriter(
        store, fingerprint=FP, split_fractions=fractions, source_root="/src", class_names=("cats",)
    ) as writer:
        writer.commit_rows(rows, deleted=deleted)


def test_a_manifest_replaced_in_place_with_the_same_size_and_mtime_is_read_anew(tmp_path: Path) -> None:
    store = tmp_path / "s"
    commit(store, ["a.jpg", "b.jpg"])
    path = store / MANIFEST
    first = read_manifest(store)
    stat = path.stat()
    # The same length and inode and a restored mtime: what a cache keyed by stat would miss.
    edited = path.read_bytes().replace(b'"/src"', b'"/dst"')
    assert len(edited) == stat.st_size
    with open(path, "r+b") as f:
        f.write(edited)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_ino, path.stat().st_mtime_ns, path.stat().st_size) == (
        stat.st_ino,
        stat.st_mtime_ns,
        stat.st_size,
    )
    assert first.source_root == "/src" and read_manifest(store).source_root == "/dst"


def test_each_commit_is_seen_by_the_next_read(tmp_path: Path) -> None:
    store = tmp_path / "s"
    seen = []
    for night in range(4):
        commit(store, [f"n{night}.jpg"], deleted=(f"n{night - 1}.jpg",) if night else ())
        manifest = read_manifest(store)
        assert manifest == Manifest.from_json((store / MANIFEST).read_bytes(), store / MANIFEST)
        seen.append(manifest.generation)
    assert seen == sorted(set(seen)) and len(seen) == 4


def test_a_caller_that_changes_its_manifest_changes_no_other_callers(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_bytes(manifest_with(2, 2).to_json())
    first = read_manifest(tmp_path)
    first.deleted["x.jpg"] = 1
    first.failures["y.jpg"] = {"reason": "bad"}
    second = read_manifest(tmp_path)
    assert "x.jpg" not in second.deleted and "y.jpg" not in second.failures
    assert second == manifest_with(2, 2)


def manifest_with(pieces: int, retired: int) -> Manifest:
    return Manifest(
        generation=7,
        fingerprint=FP,
        class_names=("cats",),
        source_root="/src",
        split_fractions=SplitFractions(),
        pieces=tuple(
            PieceInfo(file=f"pieces/p{i:016x}.h5", rows=1 + i, sha256=f"{i:064x}", generation=1 + i % 7)
            for i in range(pieces)
        ),
        deleted={f"gone/{i}.jpg": i % 8 for i in range(500)},
        failures={"bad.jpg": {"reason": "not an image", "size": 3, "mtime_ns": 4}},
        retired=tuple(
            RetiredPiece(file=f"pieces/r{i:016x}.h5", until="2026-12-14T09:00:00+00:00")
            for i in range(retired)
        ),
    )


def test_long_lists_read_back_as_written(tmp_path: Path) -> None:
    for pieces, retired in [(0, 0), (1, 1), (300, 1200)]:
        manifest = manifest_with(pieces, retired)
        assert Manifest.from_json(manifest.to_json(), tmp_path / MANIFEST) == manifest


def edit_entry(key: str, index: int, field: str | None, value: Any):
    def edit(data: dict[str, Any]) -> None:
        if field is None:
            data[key][index] = value
        else:
            data[key][index][field] = value

    return edit


BAD_ENTRIES = {
    "retired-outside": (edit_entry("retired", 917, "file", "../x.h5"), "retired[917].file '../x.h5'"),
    "retired-number": (edit_entry("retired", 3, "until", 5), "retired[3].until must be a string"),
    "retired-list": (edit_entry("retired", 1100, None, []), "retired[1100] must be an object"),
    "piece-sha": (edit_entry("pieces", 250, "sha256", "F" * 64), "pieces[250].sha256 is not a sha256"),
    "piece-future": (edit_entry("pieces", 42, "generation", 8), "pieces[42].generation must be between 1"),
    "piece-bool": (edit_entry("pieces", 7, "rows", True), "pieces[7].rows must be an integer"),
    "piece-newline": (edit_entry("pieces", 9, "file", "pieces/a.h5\npieces/b.h5"), "pieces[9].file"),
    "piece-extra": (
        lambda data: data["pieces"][299].update(note="x"),
        "pieces[299] must have exactly file, rows, sha256, generation",
    ),
    "deleted-future": (
        lambda data: data["deleted"].update({"late.jpg": 8}),
        "deleted['late.jpg'] must be between 0 and 7",
    ),
    "deleted-bool": (
        lambda data: data["deleted"].update({"b.jpg": False}),
        "deleted['b.jpg'] must be an integer",
    ),
    "failure-reason": (
        lambda data: data["failures"].update({"c.jpg": {"reason": 3}}),
        "failures['c.jpg'].reason must be a string",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_ENTRIES))
def test_a_bad_entry_deep_in_a_long_list_is_named(name: str, tmp_path: Path) -> None:
    edit, message = BAD_ENTRIES[name]
    data = json.loads(manifest_with(300, 1200).to_json())
    edit(data)
    (tmp_path / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(StoreError) as caught:
        read_manifest(tmp_path)
    assert message in str(caught.value) and str(tmp_path / MANIFEST) in str(caught.value)


def test_a_valid_manifest_is_the_same_object_content_for_every_reader(tmp_path: Path) -> None:
    manifest = manifest_with(20, 40)
    (tmp_path / MANIFEST).write_bytes(manifest.to_json())
    reads = [read_manifest(tmp_path) for _ in range(3)]
    assert all(dataclasses.asdict(read) == dataclasses.asdict(manifest) for read in reads)
