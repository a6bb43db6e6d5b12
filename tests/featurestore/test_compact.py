"""Compaction: dead rows dropped, the live view unchanged, old readers served, kills survived."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from featurestore.compact import compact_store, health, maybe_compact
from featurestore.fingerprint import Fingerprint
from featurestore.format import read_manifest
from featurestore.runs import list_runs
from featurestore.splits import SPLITS
from featurestore.store import FeatureStore, open_store
from featurestore.testing import cats_dogs_writer
from featurestore.verify import verify_store
from featurestore.writer import Row, StoreWriter

FP = Fingerprint(weights_sha256="c" * 64, input_size=32)


def row(i: int, night: int = 0) -> Row:
    relpath = f"{'cats' if i % 2 else 'dogs'}/{i:05d}.jpg"
    return Row(
        relpath=relpath,
        image_id=f"{i:032x}{night:032x}",
        label=relpath.split("/")[0],
        split=SPLITS[i % 3],
        size=i,
        mtime_ns=night,
        maps={"features": np.full((2, 2, 16), i + night / 1000, np.float32)},
    )


def writer(path: Path, **kwargs) -> StoreWriter:
    return cats_dogs_writer(path, FP, **kwargs)


def churned(path: Path, nights: int = 12, n: int = 120) -> None:
    """n rows, then nights of 5% replaced, 5% deleted and 5% new, one small piece per commit."""
    rng = random.Random(3)
    with writer(path) as w:
        for at in range(0, n, 8):
            w.commit_rows([row(i) for i in range(at, min(at + 8, n))])
    live = list(range(n))
    for night in range(1, nights + 1):
        gone = rng.sample(live, n // 20)
        live = [i for i in live if i not in gone]
        changed = rng.sample(live, n // 20)
        new = list(range(n + (night - 1) * (n // 20), n + night * (n // 20)))
        live += new
        with writer(path) as w:
            w.commit_rows([row(i, night) for i in changed + new], deleted=[row(i).relpath for i in gone])


def snapshot(store: FeatureStore) -> dict[str, tuple]:
    data = store.load()
    return {
        p: (f.tobytes(), int(label), image_id, split)
        for p, f, label, image_id, split in zip(
            data.paths, data.features, data.labels, data.ids, data.splits, strict=True
        )
    }


def test_compaction_drops_dead_rows_and_keeps_the_live_view(tmp_path: Path) -> None:
    churned(tmp_path / "s")
    before = open_store(tmp_path / "s")
    expected, digest = snapshot(before), before.digest
    state = health(before)
    assert state.dead_rows > 0 and state.due

    summary = compact_store(tmp_path / "s")
    after = open_store(tmp_path / "s")
    assert snapshot(after) == expected and after.digest == digest
    assert summary.dropped_rows == state.dead_rows and summary.pieces_after == 1
    assert health(after).dead_rows == 0 and not health(after).due
    manifest = read_manifest(tmp_path / "s")
    assert {r.file for r in manifest.retired} == {p.file for p in before.manifest.pieces}
    assert verify_store(tmp_path / "s") == ([], [])
    # A reader opened before the compaction keeps reading its pieces, kept for the retention.
    assert snapshot(before) == expected


def test_retired_pieces_go_once_their_retention_has_passed(tmp_path: Path) -> None:
    churned(tmp_path / "s", nights=3)
    old = {p.file for p in read_manifest(tmp_path / "s").pieces}
    compact_store(tmp_path / "s", retain_seconds=0)
    assert not any((tmp_path / "s" / file).exists() for file in old)
    assert read_manifest(tmp_path / "s").retired == ()
    assert verify_store(tmp_path / "s") == ([], [])


def test_the_manifest_stays_small_however_many_nights_pass(tmp_path: Path) -> None:
    """Before: every deletion stayed in the manifest forever and every piece with it."""
    churned(tmp_path / "s", nights=30)
    manifest = read_manifest(tmp_path / "s")
    assert manifest.deleted == {}
    with writer(tmp_path / "s") as w:
        assert maybe_compact(w) is not None
    assert len(read_manifest(tmp_path / "s").pieces) == 1
    assert (tmp_path / "s" / "manifest.json").stat().st_size < 8000


def test_compact_command_says_what_it_did_and_refuses_bad_input(tmp_path: Path) -> None:
    churned(tmp_path / "s", nights=2)
    cli = [sys.executable, "-m", "classifiers.cli", "compact"]
    done = subprocess.run([*cli, str(tmp_path / "s"), "--retain", "0s"], capture_output=True, text=True)
    assert done.returncode == 0 and "dead rows dropped" in done.stdout
    again = subprocess.run([*cli, str(tmp_path / "s")], capture_output=True, text=True)
    assert again.returncode == 0 and "nothing to compact" in again.stdout
    # Both runs are in the store's history (featurestore runs).
    records = list_runs(tmp_path / "s", kind="compact")
    assert [r["status"] for r in records] == ["ok", "ok"] and records[0]["counts"]["dropped_rows"] > 0
    assert records[1]["counts"]["rewritten_pieces"] == 0
    nostore = subprocess.run([*cli, str(tmp_path)], capture_output=True, text=True)
    assert (
        nostore.returncode != 0
        and nostore.stderr.count("\n") == 1
        and "not a feature store" in nostore.stderr
    )
    bad = subprocess.run([*cli, str(tmp_path / "s"), "--retain", "soon"], capture_output=True, text=True)
    assert bad.returncode == 2 and "'soon' is not a duration" in bad.stderr


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Many small pieces with large maps, so a compaction takes long enough to be killed."""
    path = tmp_path_factory.mktemp("big") / "s"
    with writer(path) as w:
        for at in range(0, 1600, 16):
            w.commit_rows(
                [
                    Row(
                        relpath=f"cats/{i:05d}.jpg",
                        image_id=f"{i:064x}",
                        label="cats",
                        split=SPLITS[i % 3],
                        size=i,
                        mtime_ns=0,
                        maps={"features": np.full((8, 8, 64), i, np.float32)},
                    )
                    for i in range(at, at + 16)
                ],
                deleted=[f"cats/{at - 8:05d}.jpg"] if at else [],
            )
    return path


def test_sigkill_at_random_points_of_a_compaction_leaves_a_valid_store(big: Path, tmp_path: Path) -> None:
    expected = snapshot(open_store(big))
    rng = random.Random(11)
    command = [sys.executable, "-m", "classifiers.cli", "compact"]
    # The killed compaction keeps replaced pieces for an hour (the reader opened before it is
    # served whether or not it finished in time); the one after it frees them at once.
    retained, freed = ["--retain", "1h"], ["--retain", "0s"]
    # Kill within the time a whole compaction takes on this machine (start-up included), so
    # that the kills land in it however fast or loaded the machine is.
    timed = tmp_path / "timed"
    shutil.copytree(big, timed)
    started = time.monotonic()
    subprocess.run([*command, *retained, str(timed)], check=True, capture_output=True)
    whole = time.monotonic() - started
    killed = 0
    for attempt in range(8):
        store = tmp_path / f"s{attempt}"
        shutil.copytree(big, store)
        reader = open_store(store)
        process = subprocess.Popen(
            [*command, *retained, str(store)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        time.sleep(rng.uniform(0.3, 0.95) * whole)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed += 1
        process.wait()
        assert snapshot(open_store(store)) == expected
        assert verify_store(store)[0] == []
        assert snapshot(reader) == expected  # opened before: still served
        finished = subprocess.run([*command, *freed, str(store)], capture_output=True, text=True)
        assert finished.returncode == 0, finished.stderr
        assert snapshot(open_store(store)) == expected and verify_store(store) == ([], [])
        assert len(read_manifest(store).pieces) <= 2
    assert killed >= 2
