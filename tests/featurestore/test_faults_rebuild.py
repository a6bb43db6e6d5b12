"""Issue 14, item 1: `extract --rebuild` builds beside the old content and switches in one
atomic commit; a SIGKILL at any point leaves a store that every command opens, and readers
read the old state until the switch."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from featurestore.store import FeatureSet, open_store
from tests.faults import Paused, extract_args, image_tree, run_cli

REBUILT = 48  # the rebuild's other input size


def maps_of(data: FeatureSet) -> dict[str, np.ndarray]:
    return dict(zip(data.paths, data.features, strict=True))


def maps_by_path(store: Path) -> dict[str, np.ndarray]:
    return maps_of(open_store(store).load())


def same_maps(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> bool:
    return got.keys() == expected.keys() and all(np.array_equal(got[k], expected[k]) for k in got)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A store at the default test size, and one uninterrupted rebuild of it at REBUILT."""
    root = tmp_path_factory.mktemp("rebuild")
    source = image_tree(root / "images")
    store = root / "store"
    assert run_cli(*extract_args(source, store)).returncode == 0
    rebuilt = root / "rebuilt"
    shutil.copytree(store, rebuilt)
    result = run_cli(*extract_args(source, rebuilt, "--rebuild", size=REBUILT))
    assert result.returncode == 0, result.stderr
    return store, rebuilt


@pytest.fixture
def store(built: tuple[Path, Path], tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(built[0], copy)
    return copy


def rebuild_args(store: Path) -> list[str | Path]:
    source = open_store(store).source_root
    return extract_args(source, store, "--rebuild", "--batch-size", "2", "--commit-every", "2", size=REBUILT)


def test_a_sigkill_in_a_rebuild_before_its_first_commit_leaves_the_old_store_to_every_command(
    built: tuple[Path, Path], store: Path, tmp_path: Path
) -> None:
    old = maps_by_path(built[0])
    paused = Paused(rebuild_args(store), "before-rename:rebuild.json", tmp_path / "paused")
    assert same_maps(maps_by_path(store), old)  # a reader meanwhile: the old state
    paused.kill()
    assert same_maps(maps_by_path(store), old)
    for args in (["verify", store], ["info", store], ["train", store, "-c", "logreg", "-o", tmp_path / "m"]):
        result = run_cli(*args)
        assert result.returncode == 0, (args, result.stderr)
    again = run_cli(*extract_args(open_store(store).source_root, store))  # the old settings
    assert again.returncode == 0, again.stderr
    assert " 0 through the model" in again.stdout  # nothing recomputed: the old rows are all there
    assert same_maps(maps_by_path(store), old)


def test_readers_read_the_old_state_until_the_rebuild_switches_in_one_commit(
    built: tuple[Path, Path], store: Path, tmp_path: Path
) -> None:
    old, new = maps_by_path(built[0]), maps_by_path(built[1])
    early = open_store(store)  # a reader that opened the store before the rebuild
    paused = Paused(rebuild_args(store), "before-rename:manifest.json", tmp_path / "paused")
    # Every commit of the rebuild so far (6 of them) went beside the old content.
    assert same_maps(maps_by_path(store), old)
    assert same_maps(maps_of(early.load()), old)
    assert run_cli("verify", store).returncode == 0
    result = paused.resume()
    assert result.returncode == 0, result.stderr
    assert same_maps(maps_by_path(store), new)  # the whole rebuild, bit-identical
    # The old pieces are retired, not deleted: a reader opened before still reads the old state.
    assert same_maps(maps_of(early.load()), old)
    assert not (store / "rebuild.json").exists()
    assert run_cli("verify", store).stdout.count("note:") == 0


def test_a_killed_rebuild_resumes_with_the_same_command(
    built: tuple[Path, Path], store: Path, tmp_path: Path
) -> None:
    old, new = maps_by_path(built[0]), maps_by_path(built[1])
    args = rebuild_args(store)
    # Killed at the switch, after all of its commits.
    Paused(args, "before-rename:manifest.json", tmp_path / "paused").kill()
    assert same_maps(maps_by_path(store), old)
    checked = run_cli("verify", store)
    assert checked.returncode == 0 and "part of an unfinished rebuild" in checked.stdout, checked.stdout
    refused = run_cli(*extract_args(open_store(store).source_root, store, size=REBUILT))
    assert refused.returncode != 0 and "--rebuild" in refused.stderr  # other settings still need it
    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert " 0 through the model" in resumed.stdout  # every row was committed before the kill
    assert same_maps(maps_by_path(store), new)


def test_a_rebuild_with_unchanged_settings_recomputes_every_row(store: Path) -> None:
    """Documented choice (docs/faults.md): --rebuild means recompute, whatever the settings."""
    source = open_store(store).source_root
    result = run_cli(*extract_args(source, store, "--rebuild"))
    assert result.returncode == 0, result.stderr
    assert f" {len(open_store(store))} through the model" in result.stdout
