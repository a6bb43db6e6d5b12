"""Issue 14, item 5: a manifest edited by hand (wrong types, a list for an object, a piece
outside the store) is refused by every command in one line naming the field; never trusted."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.faults import extract_args, image_tree, run_cli

Edit = Callable[[Any], Any]


def setting(key: str, value: Any) -> Edit:
    def edit(manifest: dict[str, Any]) -> dict[str, Any]:
        manifest[key] = value
        return manifest

    return edit


def first_piece(key: str, value: Any) -> Edit:
    def edit(manifest: dict[str, Any]) -> dict[str, Any]:
        manifest["pieces"][0][key] = value
        return manifest

    return edit


EDITS: dict[str, tuple[Edit, str]] = {
    "rows-text": (first_piece("rows", "abc"), "pieces[0].rows must be an integer"),
    "generation-text": (setting("generation", "3"), "generation must be an integer"),
    "deleted-text": (setting("deleted", {"a.png": "abc"}), "deleted['a.png'] must be an integer"),
    "failure-text": (setting("failures", {"a.png": "bad"}), "failures['a.png'] must be an object"),
    "manifest-list": (lambda manifest: [manifest], "the manifest must be an object"),
    "pieces-object": (setting("pieces", {}), "pieces must be a list"),
    "deleted-list": (setting("deleted", []), "deleted must be an object"),
    "fingerprint-list": (setting("fingerprint", []), "fingerprint must be an object"),
    "file-outside": (first_piece("file", "../../../../etc/passwd"), "pieces[0].file '../../../"),
    "file-absolute": (first_piece("file", "/etc/passwd"), "pieces[0].file '/etc/passwd'"),
    "rows-negative": (first_piece("rows", -1), "pieces[0].rows must be at least 1"),
}


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("manifest")
    store = root / "store"
    result = run_cli(*extract_args(image_tree(root / "images", count=8), store))
    assert result.returncode == 0, result.stderr
    return store


@pytest.fixture(params=sorted(EDITS))
def edited(request: pytest.FixtureRequest, extracted: Path, tmp_path: Path) -> tuple[Path, str]:
    edit, message = EDITS[request.param]
    store = tmp_path / "store"
    shutil.copytree(extracted, store)
    manifest = store / "manifest.json"
    manifest.write_text(json.dumps(edit(json.loads(manifest.read_text()))))
    return store, message


def test_every_command_refuses_an_edited_manifest_in_one_line_naming_the_field(
    edited: tuple[Path, str], tmp_path: Path
) -> None:
    store, message = edited
    for args in [
        ["verify", store],
        ["info", store],
        ["export", store, tmp_path / "out.h5"],
        ["train", store, "-c", "logreg", "-o", tmp_path / "model"],
    ]:
        result = run_cli(*args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and f"{store / 'manifest.json'}" in lines[0], (args, result.stderr)
        assert message in lines[0], (args, lines[0])
    assert not (tmp_path / "out.h5").exists() and not (tmp_path / "model").exists()


@pytest.mark.parametrize("name", ["rows-text", "file-outside", "manifest-list"])
def test_extract_refuses_an_edited_manifest_and_leaves_it_as_it_was(
    name: str, extracted: Path, tmp_path: Path
) -> None:
    edit, message = EDITS[name]
    store = tmp_path / "store"
    shutil.copytree(extracted, store)
    manifest = store / "manifest.json"
    manifest.write_text(json.dumps(edit(json.loads(manifest.read_text()))))
    before = manifest.read_bytes()
    source = extracted.parent / "images"
    result = run_cli(*extract_args(source, store))
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert manifest.read_bytes() == before and len(list((store / "pieces").iterdir())) == 1
