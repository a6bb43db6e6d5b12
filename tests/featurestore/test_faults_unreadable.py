"""Issue 14: a class folder the process cannot read is not an empty folder. Its stored rows are
kept (not deleted as removed), so is its class; one line names it and the reason; it is a
recorded failure (exit 3 with --strict); a rebuild that would drop its rows refuses to start.

Root reads any folder whatever its mode (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), and the tests
run as root in CI: there the extract runs with those two capabilities dropped from its bounding
set, so that it is refused `chmod 000` folders like any other user (checked first).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from featurestore.store import open_store
from featurestore.unreadable import is_below
from tests.faults import command, extract_args, image_tree, run_cli

# Run in a fresh interpreter (no threads, unlike pytest's process after TensorFlow started):
# drop the two capabilities from the bounding set, then exec the command, whose capabilities
# are computed from that set. <linux/prctl.h>: PR_CAPBSET_DROP = 24; <linux/capability.h>:
# CAP_DAC_OVERRIDE = 1, CAP_DAC_READ_SEARCH = 2.
WITHOUT_OVERRIDES = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for capability in (1, 2):
    if os.geteuid() == 0 and libc.prctl(24, capability, 0, 0, 0) != 0:
        sys.exit(f"prctl(PR_CAPBSET_DROP, {capability}): {os.strerror(ctypes.get_errno())}")
os.execv(sys.argv[1], sys.argv[1:])
"""


def as_a_plain_user(argv: list[str]) -> list[str]:
    """`argv` run without what lets root read any file (as it is for any other user)."""
    return [sys.executable, "-c", WITHOUT_OVERRIDES, *argv]


def run_unprivileged(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(as_a_plain_user(command(*args)), capture_output=True, text=True, timeout=300)


def rows_of(store: Path) -> dict[str, tuple[str, str]]:
    opened = open_store(store)
    return {row.relpath: (row.image_id, row.label) for row in opened.images()}


def test_an_unreadable_class_folder_keeps_its_rows_and_class_and_is_one_line(tmp_path: Path) -> None:
    source = image_tree(tmp_path / "images", count=12)
    store = tmp_path / "store"
    assert run_cli(*extract_args(source, store)).returncode == 0
    before = rows_of(store)
    assert sum(1 for relpath in before if relpath.startswith("dogs/")) == 6
    image_tree(tmp_path / "birds_tree", count=2)  # a class folder that was never stored
    (tmp_path / "birds_tree" / "cats").rename(source / "birds")
    for folder in (source / "dogs", source / "birds"):
        folder.chmod(0)
    try:
        listing = [sys.executable, "-c", f"import os; os.listdir({str(source / 'dogs')!r})"]
        probe = subprocess.run(as_a_plain_user(listing), capture_output=True, text=True)
        assert "PermissionError" in probe.stderr, f"a chmod 000 folder is readable: {probe.stderr}"

        result = run_unprivileged(*extract_args(source, store, "--strict"))
        assert result.returncode == 3, result.stderr  # FAILED_IMAGES: recorded, not ignored
        assert "Traceback" not in result.stderr
        lines = [line for line in result.stderr.splitlines() if line.startswith("skipped")]
        assert lines == [
            f"skipped {source / 'birds'}: cannot read folder (Permission denied)",
            f"skipped {source / 'dogs'}: cannot read folder (Permission denied); its 6 stored rows are kept",
        ]
        assert rows_of(store) == before  # nothing removed, nothing recomputed
        opened = open_store(store)
        assert opened.class_names == ("cats", "dogs")  # the unread, never stored birds are no class
        assert opened.failures["dogs"]["reason"] == "cannot read folder (Permission denied)"

        generation = opened.generation
        rebuild = run_unprivileged(*extract_args(source, store, "--rebuild"))
        assert rebuild.returncode == 6, rebuild.stderr  # BAD_INPUT, before any work
        assert rebuild.stderr.strip().splitlines()[-1] == (
            f"Error: {source / 'dogs'}: cannot read folder (Permission denied); a rebuild would drop "
            "its 6 stored rows: make it readable first (a plain extract keeps them)"
        )
        assert open_store(store).generation == generation and rows_of(store) == before
    finally:
        (source / "dogs").chmod(0o755)
        (source / "birds").chmod(0o755)

    readable = run_cli(*extract_args(source, store))  # readable again: the failure is resolved
    assert readable.returncode == 0, readable.stderr
    opened = open_store(store)
    assert opened.class_names == ("birds", "cats", "dogs") and not opened.failures
    assert {k: v for k, v in rows_of(store).items() if not k.startswith("birds/")} == before


def test_rows_below_a_folder_are_those_under_its_path() -> None:
    assert is_below("dogs/1.png", ["dogs"]) and is_below("a/b/c.png", ["a/b"]) and is_below("x.png", [""])
    assert not is_below("dogsled/1.png", ["dogs"]) and not is_below("dogs", ["dogs"])
