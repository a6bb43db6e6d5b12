"""Folders of a source that could not be read: what they hold is unknown, not gone (issue 14).

A folder that cannot be listed (no permission, an I/O error) gives no image, like an empty
folder; unlike an empty one, its files may all still be there. So an extraction keeps the
stored rows below it instead of deleting them as removed, keeps their class, says so in one line
per folder, and records the folder as a failure (exit 3 with `--strict`). A rebuild, which
would have to drop those rows, refuses to start.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

from featurestore.sources import Source, SourceError

__all__ = ["is_below", "kept_class_names", "refuse_a_lossy_rebuild", "report_unreadable"]


def is_below(relpath: str, folders: Iterable[str]) -> bool:
    """Whether the store key ``relpath`` lies in one of ``folders`` (relpaths; "" is the root)."""
    return any(not folder or relpath.startswith(folder + "/") for folder in folders)


def kept_class_names(source: Source, committed: Sequence[str]) -> tuple[str, ...]:
    """The source's class names, plus the committed classes whose class folder could not be
    read (their rows are kept, so their class is too; a new unreadable folder is no class)."""
    unread = {folder.split("/", 1)[0] for folder in source.unreadable_folders()}
    extra = (unread & set(committed)) - set(source.class_names)
    return tuple(sorted({*source.class_names, *extra})) if extra else source.class_names


def refuse_a_lossy_rebuild(source: Source, live_paths: Iterable[str]) -> None:
    """Raise `SourceError` when a rebuild would drop stored rows of a folder it cannot read."""
    reasons = dict(source.skipped)
    paths = list(live_paths)
    for folder in source.unreadable_folders():
        count = sum(1 for relpath in paths if is_below(relpath, [folder]))
        if count:
            raise SourceError(
                f"{source.root / folder}: {reasons[folder]}; a rebuild would drop its {count} stored "
                "rows: make it readable first (a plain extract keeps them)"
            )


def report_unreadable(source: Source, kept: Sequence[str]) -> None:
    """One line on stderr per folder that could not be read: its path, the reason, the rows kept."""
    reasons = dict(source.skipped)
    for folder in source.unreadable_folders():
        count = sum(1 for relpath in kept if is_below(relpath, [folder]))
        rows = f"; its {count} stored rows are kept" if count else ""
        print(f"skipped {source.root / folder}: {reasons[folder]}{rows}", file=sys.stderr)
