"""The no-change extract's fast paths: stats taken while listing, the columnar plan, the new ids
of a run, the weights file hashed once. Each checked against the plain answer it replaces."""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from featurestore.fingerprint import Fingerprint
from featurestore.plan import plan_extraction
from featurestore.sources import discover
from featurestore.splits import SplitFractions
from featurestore.store import open_store
from featurestore.weights import weights_file_sha256
from featurestore.writer import Row, StoreWriter

FP = Fingerprint(weights_sha256="c" * 64, input_size=32)


def tree(root: Path) -> list[Path]:
    """Files of different sizes, written in an order unlike the sorted one."""
    made = []
    for i, rel in enumerate(["dogs/z/9.jpg", "cats/b.png", "dogs/a.jpg", "cats/a/deep/1.jpg", "cats/c.JPG"]):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * (i + 1) * 7)
        os.utime(path, ns=(1_000_000_000 * (i + 1), 1_000_000_000 * (i + 1) + i))
        made.append(path)
    return made


def test_stats_taken_while_listing_are_each_images_own(tmp_path: Path) -> None:
    tree(tmp_path / "src")
    for labels in ("inferred", None):
        source = discover(tmp_path / "src", labels=labels, stat=True)
        assert source.sizes is not None and source.mtime_ns is not None
        assert len(source.sizes) == len(source.mtime_ns) == len(source.images) == 5
        for image, size, mtime_ns in zip(source.images, source.sizes, source.mtime_ns, strict=True):
            st = os.stat(image.location)
            assert (size, mtime_ns) == (st.st_size, st.st_mtime_ns), image.relpath
    plain = discover(tmp_path / "src")
    assert plain.sizes is None and plain.mtime_ns is None
    assert plain.images == discover(tmp_path / "src", stat=True).images


def row(path: Path, root: Path, label: str, n: int) -> Row:
    st = path.stat()
    return Row(
        relpath=path.relative_to(root).as_posix(),
        image_id=f"{n:064x}",
        label=label,
        split="train",
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        maps={"features": np.full((1, 1, 2), n, np.float32)},
    )


def test_the_plan_is_the_same_from_listed_stats_and_from_a_manifests_stat_calls(tmp_path: Path) -> None:
    root = tmp_path / "src"
    files = tree(root)
    with StoreWriter(
        tmp_path / "store",
        fingerprint=FP,
        split_fractions=SplitFractions(),
        source_root=str(root),
        class_names=("cats", "dogs"),
    ) as writer:
        rows = [row(p, root, p.relative_to(root).parts[0], i) for i, p in enumerate(files[:4])]
        rows.append(dataclasses.replace(row(files[0], root, "dogs", 9), relpath="dogs/gone.jpg"))
        writer.commit_rows(rows)
    files[1].write_bytes(b"changed")  # cats/b.png: other size
    os.utime(files[2], ns=(5, 5))  # dogs/a.jpg: other mtime
    store = open_store(tmp_path / "store")
    listed = plan_extraction(discover(root, stat=True), store, rehash=False)
    manifest = tmp_path / "src" / "list.csv"
    with open(manifest, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["path", "label"])
        out.writerows([[p.relative_to(root).as_posix(), p.relative_to(root).parts[0]] for p in files])
    stat_calls = plan_extraction(discover(manifest), store, rehash=False)
    for plan in (listed, stat_calls):
        assert sorted((t.image.relpath, t.kind) for t in plan.tasks) == [
            ("cats/b.png", "changed"),
            ("cats/c.JPG", "new"),
            ("dogs/a.jpg", "changed"),
        ]
        assert plan.unchanged == ["cats/a/deep/1.jpg", "dogs/z/9.jpg"]
        assert plan.deleted == ["dogs/gone.jpg"]
    rehashed = plan_extraction(discover(root, stat=True), store, rehash=True)
    assert rehashed.unchanged == [] and rehashed.count("changed") == 4


def test_the_ids_a_run_adds_are_those_not_live_before(tmp_path: Path) -> None:
    root = tmp_path / "src"
    files = tree(root)
    kwargs = dict(
        fingerprint=FP, split_fractions=SplitFractions(), source_root=str(root), class_names=("cats", "dogs")
    )
    with StoreWriter(tmp_path / "store", **kwargs) as writer:
        writer.commit_rows([row(p, root, "cats", i) for i, p in enumerate(files[:3])])
    before = open_store(tmp_path / "store")
    assert open_store(tmp_path / "store").live_ids_added_since(before) == set()  # no commit since
    with StoreWriter(tmp_path / "store", **kwargs) as writer:
        touched = row(files[0], root, "cats", 0)  # same id rewritten: not new
        writer.commit_rows(
            [touched, row(files[3], root, "cats", 7)], deleted=[files[1].relative_to(root).as_posix()]
        )
    after = open_store(tmp_path / "store")
    assert after.live_ids_added_since(before) == {f"{7:064x}"}
    assert after.live_ids_added_since(before) == after.live_ids() - before.live_ids()


def test_a_weights_file_is_hashed_again_once_it_changes(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "w.h5"
    path.write_bytes(b"first")
    assert weights_file_sha256(path) == hashlib.sha256(b"first").hexdigest()
    path.write_bytes(b"second, longer")
    assert weights_file_sha256(path) == hashlib.sha256(b"second, longer").hexdigest()


def test_no_gpu_device_node_means_no_backend_probe(tmp_path: Path) -> None:
    from featurestore.hardware import gpu_possible

    nodes = (str(tmp_path / "nvidia[0-9]*"), str(tmp_path / "kfd"))
    assert gpu_possible(nodes) is False
    (tmp_path / "nvidia0").touch()
    assert gpu_possible(nodes) is True


def test_the_live_id_lookup_answers_as_the_dicts_it_replaces(tmp_path: Path) -> None:
    root = tmp_path / "src"
    files = tree(root)
    kwargs = dict(
        fingerprint=FP, split_fractions=SplitFractions(), source_root=str(root), class_names=("cats", "dogs")
    )
    with StoreWriter(tmp_path / "store", **kwargs) as writer:
        writer.commit_rows([row(p, root, "cats", i) for i, p in enumerate(files)])
        writer.commit_rows([row(files[0], root, "cats", 11)], deleted=[files[1].relative_to(root).as_posix()])
    store = open_store(tmp_path / "store")
    lookup = store.live_id_lookup()
    by_path = store.live_ids_by_path()
    for path in files:
        relpath = path.relative_to(root).as_posix()
        assert lookup.get(relpath) == by_path.get(relpath)
    assert lookup.get("not/there.jpg") is None
    assert all(image_id in lookup for image_id in store.live_ids())
    dead = f"{1:064x}"  # files[1]'s row, deleted: its maps are still there, it is not live
    assert dead not in lookup and store.maps_of_id(dead) is not None
    assert "not hex" not in lookup and store.maps_of_id("not hex") is None
    lookup.add(f"{99:064x}")
    assert f"{99:064x}" in lookup
    assert float(store.maps_of_id(f"{11:064x}")["features"].ravel()[0]) == 11.0


def test_a_split_with_dead_rows_between_reads_its_live_rows_through_small_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import featurestore.store as store_module

    kwargs = dict(fingerprint=FP, split_fractions=SplitFractions(), source_root="/src", class_names=("cats",))

    def numbered(i: int) -> Row:
        return Row(
            relpath=f"x/{i:03d}.jpg",
            image_id=f"{i:064x}",
            label="cats",
            split="train",
            size=1,
            mtime_ns=i,
            maps={"features": np.full((1, 1, 2), i, np.float32)},
        )

    with StoreWriter(tmp_path / "store", **kwargs) as writer:
        writer.commit_rows([numbered(i) for i in range(100)])
        writer.commit_rows([], deleted=[f"x/{i:03d}.jpg" for i in range(100) if i % 3 == 0 or 40 <= i < 60])
    # 7 rows a block: blocks across the holes, one block (42..48) wholly dead
    monkeypatch.setattr(store_module, "MASKED_READ_BYTES", 7 * 8)
    data = open_store(tmp_path / "store").load("train")
    live = [i for i in range(100) if i % 3 and not 40 <= i < 60]
    assert data.features[:, 0, 0, 0].tolist() == [float(i) for i in live]
    assert data.paths.tolist() == [f"x/{i:03d}.jpg" for i in live]


def odd_folder(folder: Path) -> None:
    """Every kind of entry a folder can hold, with fixed sizes and mtimes."""
    folder.mkdir(parents=True)
    for i, name in enumerate(
        ["b.jpg", "A.PNG", "c.jpeg.gif", "d.Webp", "e.bmp", "x.txt", ".hidden.jpg", "f"]
    ):
        (folder / name).write_bytes(b"y" * (i + 3))
        os.utime(folder / name, ns=(7, 1_000_000_000 * i + 11))
    (folder / "sub.jpg").mkdir()  # a folder with an image's name is walked, not read
    (folder / "sub.jpg" / "in.jpg").write_bytes(b"z")
    os.utime(folder / "sub.jpg" / "in.jpg", ns=(7, 8))
    (folder / "fifo.jpg").mkdir()
    os.rmdir(folder / "fifo.jpg")
    os.mkfifo(folder / "fifo.jpg")
    (folder / "gone.png").symlink_to(folder / "nowhere.png")
    (folder / "link.jpg").symlink_to(folder / "b.jpg")
    (folder / "back").symlink_to(folder)  # a loop


def test_a_folder_listed_entry_by_entry_gives_what_the_bulk_listing_gives(tmp_path: Path) -> None:
    """A link to itself makes `is_dir` raise (ELOOP): that folder is gone through entry by entry,
    its twin without the link in bulk; both give the same images, stats and skip reasons."""
    root = tmp_path / "src"
    odd_folder(root / "bulk")
    odd_folder(root / "each")
    (root / "each" / "self.jpg").symlink_to(root / "each" / "self.jpg")
    with pytest.raises(OSError):
        next(e for e in os.scandir(root / "each") if e.name == "self.jpg").is_dir()
    source = discover(root, stat=True)
    assert source.sizes is not None and source.mtime_ns is not None
    listed: dict[str, dict[str, tuple]] = {"bulk": {}, "each": {}}
    for image, size, mtime_ns in zip(source.images, source.sizes, source.mtime_ns, strict=True):
        st = os.stat(image.location)
        assert (size, mtime_ns) == (st.st_size, st.st_mtime_ns)
        label, rest = image.relpath.split("/", 1)
        assert image.label == label and image.location == str(root / image.relpath)
        listed[label][rest] = (size, mtime_ns)
    assert listed["bulk"] == listed["each"]
    assert sorted(listed["bulk"]) == [
        "A.PNG",
        "b.jpg",
        "c.jpeg.gif",
        "d.Webp",
        "e.bmp",
        "link.jpg",
        "sub.jpg/in.jpg",
    ]
    reasons = {relpath: reason for relpath, reason in source.skipped}
    assert reasons.pop("each/self.jpg") == "broken symbolic link"
    for label in ("bulk", "each"):
        assert reasons.pop(f"{label}/gone.png") == "broken symbolic link"
        assert reasons.pop(f"{label}/fifo.jpg") == "not a regular file"
        assert reasons.pop(f"{label}/back") == "symbolic link loop"
    assert reasons == {}
    assert [image.relpath for image in source.images] == sorted(image.relpath for image in source.images)
