"""Find the images of a source: a folder of class folders, an unlabeled folder, or a CSV manifest.

Discovery only lists directory entries (``os.scandir``) and never opens an image; whether a file
really decodes is `featurestore.images`' job.
"""

from __future__ import annotations

import csv
import gc
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import compress, islice, repeat
from operator import attrgetter, itemgetter, lt, methodcaller, not_
from pathlib import Path
from typing import Any, NamedTuple

from featurestore.errors import FeaturestoreError

__all__ = ["IMAGE_EXTENSIONS", "UNREADABLE_FOLDER", "Source", "SourceError", "SourceImage", "discover"]

# Lower-case; a file's extension is compared case-insensitively.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})

NOT_UTF8 = "file name is not valid UTF-8"
EMPTY_LABEL = ""  # a labeled manifest's row whose label is empty: reported, never stored
UNREADABLE_FOLDER = "cannot read folder"  # how a skipped folder's reason starts


class SourceError(FeaturestoreError):
    """A source that cannot be read at all; the message names the path and the reason."""


class SourceImage(NamedTuple):
    """One image of a source.

    ``location`` (and ``path``, the same as a `Path`) is absolute as found (symbolic links are
    not resolved, so it is the name the user sees); ``relpath`` is POSIX and relative to the
    source root, the store's key for the image. A tuple of strings: a million of them are made
    in a fraction of a second, and a `Path` only for the images that are read.
    """

    location: str
    relpath: str
    label: str | None

    @property
    def path(self) -> Path:
        return Path(self.location)


@dataclass(frozen=True, slots=True)
class Source:
    """The images of a source, sorted by relpath, and what was passed over and why.

    ``sizes`` and ``mtime_ns`` are each image's `stat` taken while listing (-1 where it failed),
    aligned with ``images``; None when not asked for or not known (a manifest's files).
    """

    root: Path
    class_names: tuple[str, ...]
    images: tuple[SourceImage, ...]
    skipped: tuple[tuple[str, str], ...]
    sizes: tuple[int, ...] | None = None
    mtime_ns: tuple[int, ...] | None = None

    def unreadable_folders(self) -> tuple[str, ...]:
        """Relpaths of the folders below the root that could not be listed: what they hold is
        unknown, not gone (see `featurestore.unreadable`)."""
        return tuple(rel for rel, reason in self.skipped if reason.startswith(UNREADABLE_FOLDER))


def discover(source: str | Path, *, labels: str | None = "inferred", stat: bool = False) -> Source:
    """List the images of ``source``: a folder or a ``.csv`` manifest (header ``path,label``).

    A folder whose non-hidden subfolders are classes (Keras' ``image_dataset_from_directory``
    convention) is labeled, unless ``labels=None`` or it has images directly in it and no
    subfolders; then every image below it is unlabeled. Raises `SourceError` when the source is
    missing, unreadable, malformed or holds no usable image. With ``stat``, a folder's images
    are stat-ed while listed (`Source.sizes`, `Source.mtime_ns`): the cheapest stat there is.
    """
    if labels not in ("inferred", None):
        raise ValueError(f"labels must be 'inferred' or None, got {labels!r}")
    path = Path(os.path.abspath(source))
    if not os.path.exists(path):
        raise SourceError(f"{path}: does not exist")
    if path.is_dir():
        with _collector_paused():
            result = _discover_folder(path, labeled=labels is not None, stat=stat)
    elif path.suffix.lower() == ".csv":
        result = _discover_manifest(path, labeled=labels is not None)
    else:
        raise SourceError(f"{path}: not a folder or a .csv manifest")
    if not result.images:
        skipped = result.skipped
        detail = f" ({len(skipped)} skipped, first: {skipped[0][1]})" if skipped else ""
        raise SourceError(f"{path}: no images found{detail}")
    return result


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector: the million tuples a large source makes hold no
    cycles, and each collection would traverse all of them again (a third of the walk's time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _discover_folder(root: Path, *, labeled: bool, stat: bool) -> Source:
    """Class folders below ``root``, or every image below it when unlabeled."""
    try:
        entries = sorted(_visible(root), key=lambda e: e.name)
    except OSError as error:
        raise SourceError(f"{root}: cannot read folder ({error.strerror or error})") from None
    class_dirs = [e for e in entries if _is_dir(e)]
    root_real = os.path.realpath(root)
    found = _Found()
    skipped: list[tuple[str, str]] = []
    class_names: tuple[str, ...] = ()
    if not labeled or not class_dirs:
        _walk(str(root), "", root_real, frozenset({root_real}), None, found, skipped, stat=stat)
    else:
        # A class name that is not UTF-8 cannot be stored; its images are skipped below.
        class_names = tuple(e.name for e in class_dirs if _is_utf8(e.name))
        for entry in class_dirs:
            real = os.path.realpath(entry.path)
            if real == root_real:
                skipped.append((_printable(entry.name), "symbolic link loop"))
                continue
            _walk(
                entry.path,
                entry.name,
                real,
                frozenset({root_real, real}),
                entry.name,
                found,
                skipped,
                stat=stat,
            )
        for entry in entries:
            if _has_image_extension(entry.name) and _is_file(entry):
                # Keras ignores these too; say so instead of dropping them silently.
                reason = "image directly in the root of a class-folder source"
                skipped.append((_printable(entry.name), reason))
    # Sorted by relpath. The walk lists each folder's names in order, files before subfolders,
    # which is relpath order in the usual tree (no name with a character below "/" beside a
    # folder's name): checked in one C-level pass. Otherwise one permutation, applied to every
    # column.
    pick: Callable[[list[Any]], tuple[Any, ...]] = tuple
    if not all(map(lt, found.relpaths, islice(found.relpaths, 1, None))):
        order = sorted(range(len(found.relpaths)), key=found.relpaths.__getitem__)
        pick = itemgetter(*order)  # (two or more: the list was out of order)
    relpaths, locations, labels, sizes, mtime_ns = map(pick, found.columns())
    # tuple.__new__ straight from C: a million SourceImage in a fraction of a second.
    images = tuple(map(tuple.__new__, repeat(SourceImage), zip(locations, relpaths, labels, strict=True)))
    # A class folder with no image (empty, unreadable, only other files) is no class: a model
    # would carry a class it never saw. Why its folder gave nothing is in `skipped`, if known.
    # (An extraction keeps an unreadable folder's stored rows and class: featurestore.unreadable.)
    present = set(labels)
    class_names = tuple(name for name in class_names if name in present)
    stats = {"sizes": sizes, "mtime_ns": mtime_ns} if stat else {}
    return Source(root, class_names, images, tuple(sorted(skipped)), **stats)


@dataclass(slots=True)
class _Found:
    """The images found by walks, one list per column; -1 for a stat not taken or failed."""

    relpaths: list[str] = field(default_factory=list)
    locations: list[str] = field(default_factory=list)
    labels: list[str | None] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    mtime_ns: list[int] = field(default_factory=list)

    def columns(self) -> tuple[list[Any], ...]:
        return self.relpaths, self.locations, self.labels, self.sizes, self.mtime_ns


def _walk(
    top: str,
    top_rel: str,
    top_real: str,
    above: frozenset[str],
    label: str | None,
    found: _Found,
    skipped: list[tuple[str, str]],
    *,
    stat: bool,
) -> None:
    """Append the image files below ``top`` to ``found``, following symbolic links.

    ``above`` holds the resolved real paths of ``top`` and the folders above it. A folder whose
    real path is already in its own chain is a link loop: skipped, not walked again. A folder
    reached twice through different links (no loop) is walked twice, as ``os.walk`` would.
    With ``stat``, each image's one `stat` is relative to the open folder (no path walk from
    the root). A folder's entries are sorted out in bulk (`_add_folder`); only a folder where
    an entry's type or stat raised is gone through entry by entry (`_add_folder_per_entry`).
    """
    already = len(found.relpaths)
    stack = [_Folder(top, top_rel, top_real, above)]
    while stack:
        where = stack.pop()
        try:
            listing = _Listing(where.path)
        except OSError as error:
            skipped.append((_printable(where.rel), f"{UNREADABLE_FOLDER} ({error.strerror or error})"))
            continue
        with listing:
            try:
                folders = _add_folder(listing.entries, where, found, skipped, stat=stat)
            except OSError:
                folders = _add_folder_per_entry(listing.entries, where, found, skipped, stat=stat)
        stack.extend(folder for folder in folders if folder is not None)
    found.labels.extend(repeat(label, len(found.relpaths) - already))


class _Folder(NamedTuple):
    """A folder being listed: its path, relpath, resolved path and the resolved chain above it
    (with itself): what `_walk` keeps on its stack."""

    path: str
    rel: str
    real: str
    chain: frozenset[str]

    @property
    def prefix(self) -> str:
        return f"{self.rel}/" if self.rel else ""

    @property
    def base(self) -> str:
        return self.path if self.path.endswith(os.sep) else self.path + os.sep


_IMAGE_SUFFIXES = tuple(IMAGE_EXTENSIONS)
_is_image_name = methodcaller("endswith", _IMAGE_SUFFIXES)  # of a lower-cased name
_is_hidden = methodcaller("startswith", ".")
_name = attrgetter("name")


def _add_folder(
    entries: list[os.DirEntry[str]],
    where: _Folder,
    found: _Found,
    skipped: list[tuple[str, str]],
    *,
    stat: bool,
) -> list[_Folder | None]:
    """Add one folder's images to ``found`` column by column (C-level passes over the entries,
    no Python statement per file), and return its subfolders to walk. Raises OSError, having
    added nothing, when an entry's type or stat cannot be read: then go entry by entry."""
    names = list(map(_name, entries))
    if any(map(_is_hidden, names)):
        entries = list(compress(entries, map(not_, map(_is_hidden, names))))
    is_dir = list(map(os.DirEntry.is_dir, entries))
    files = list(compress(entries, map(not_, is_dir)))
    lowered = map(str.lower, map(_name, files))
    candidates = list(compress(files, map(_is_image_name, lowered)))
    regular = list(map(os.DirEntry.is_file, candidates))
    images = list(compress(candidates, regular))
    images.sort(key=_name)  # in relpath order, as a rule (see `_discover_folder`)
    image_names = list(map(_name, images))
    stats = list(map(os.DirEntry.stat, images)) if stat else None
    prefix, base = where.prefix, where.base
    passed = [
        _not_an_image(e, prefix + e.name, base) for e, r in zip(candidates, regular, strict=True) if not r
    ]
    # Walked in name order: the stack pops the last one first.
    subfolders = sorted(compress(entries, is_dir), key=_name, reverse=True)
    folders = [_subfolder(entry, where, passed) for entry in subfolders]
    # Nothing has been added yet: from here on nothing raises.
    relpaths = list(map(prefix.__add__, image_names))
    if not all(map(str.isascii, relpaths)):
        utf8 = list(map(_is_utf8, relpaths))
        passed.extend((_printable(relpath), NOT_UTF8) for relpath in compress(relpaths, map(not_, utf8)))
        relpaths = list(compress(relpaths, utf8))
        image_names = list(compress(image_names, utf8))
        stats = list(compress(stats, utf8)) if stats is not None else None
    found.relpaths.extend(relpaths)
    found.locations.extend(map(base.__add__, image_names))
    if stats is not None:
        found.sizes.extend(map(_size, stats))
        found.mtime_ns.extend(map(_mtime_ns, stats))
    else:
        found.sizes.extend(repeat(-1, len(relpaths)))
        found.mtime_ns.extend(repeat(-1, len(relpaths)))
    skipped.extend(passed)
    return folders


_size = attrgetter("st_size")
_mtime_ns = attrgetter("st_mtime_ns")


def _not_an_image(entry: os.DirEntry[str], entry_rel: str, base: str) -> tuple[str, str]:
    """Why an entry with an image's name is passed over: it is no regular file."""
    if entry.is_symlink() and not os.path.exists(base + entry.name):
        return (_printable(entry_rel), "broken symbolic link")
    return (_printable(entry_rel), "not a regular file")


def _subfolder(entry: os.DirEntry[str], where: _Folder, skipped: list[tuple[str, str]]) -> _Folder | None:
    """A subfolder to walk, or None (skipped) when it leads back into its own chain: a loop.

    Only a link can lead elsewhere; a plain subfolder's real path is known without a system
    call, which keeps large trees fast."""
    name, entry_rel = entry.name, where.prefix + entry.name
    link = entry.is_symlink()
    entry_real = os.path.realpath(where.base + name) if link else os.path.join(where.real, name)
    if entry_real in where.chain:
        skipped.append((_printable(entry_rel), "symbolic link loop"))
        return None
    return _Folder(where.base + name, entry_rel, entry_real, where.chain | {entry_real})


def _add_folder_per_entry(
    entries: list[os.DirEntry[str]],
    where: _Folder,
    found: _Found,
    skipped: list[tuple[str, str]],
    *,
    stat: bool,
) -> list[_Folder | None]:
    """`_add_folder` one entry at a time, for a folder where some entry's type or stat raised:
    an unreadable entry is no folder, an image whose stat failed gets -1 (its reader says why)."""
    folders = []
    prefix, base = where.prefix, where.base
    for entry in sorted(entries, key=_name):
        name = entry.name
        if name.startswith("."):
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:  # unreadable: not a folder
            is_dir = False
        entry_rel = prefix + name
        if is_dir:
            folders.insert(0, _subfolder(entry, where, skipped))  # the stack pops the last first
            continue
        if not name.lower().endswith(_IMAGE_SUFFIXES):
            continue
        try:
            regular = entry.is_file()
        except OSError:
            regular = False
        if not regular:
            skipped.append(_not_an_image(entry, entry_rel, base))
        elif not (entry_rel.isascii() or _is_utf8(entry_rel)):
            skipped.append((_printable(entry_rel), NOT_UTF8))
        else:
            size = mtime_ns = -1
            if stat:
                try:
                    st = entry.stat()
                    size, mtime_ns = st.st_size, st.st_mtime_ns
                except OSError:  # gone since listed: its reader says why
                    pass
            found.relpaths.append(entry_rel)
            found.locations.append(base + name)
            found.sizes.append(size)
            found.mtime_ns.append(mtime_ns)
    return folders


class _Listing:
    """The entries of a folder, listed through its descriptor where the platform can: each
    entry's ``stat`` is then relative to the open folder (``fstatat``), valid until closed.
    An entry's ``path`` may be its bare name: build paths from the folder."""

    _BY_FD = os.scandir in os.supports_fd

    def __init__(self, folder: str) -> None:
        self.fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY) if self._BY_FD else None
        try:
            with os.scandir(folder if self.fd is None else self.fd) as entries:
                self.entries = list(entries)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> _Listing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _discover_manifest(manifest: Path, *, labeled: bool) -> Source:
    """Images listed in a CSV manifest; paths relative to its folder or absolute."""
    root = manifest.parent
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            # "path, label" (a space after the comma) is a common hand-written header.
            fields = [name.strip() for name in reader.fieldnames or []]
            reader.fieldnames = fields
            if "path" not in fields:
                header = ",".join(fields) if fields else "empty file"
                reason = f"malformed manifest: no 'path' column (header: {header})"
                raise SourceError(f"{manifest}: {reason}")
            rows = [(reader.line_num, row) for row in reader]
    except UnicodeDecodeError as error:
        raise SourceError(f"{manifest}: manifest is not UTF-8 text ({error.reason})") from None
    except csv.Error as error:
        raise SourceError(f"{manifest}: malformed manifest: {error}") from None
    except OSError as error:
        raise SourceError(f"{manifest}: cannot read manifest ({error.strerror or error})") from None

    # Each key once: a relpath is both skipped and an image never, so consumers can key on it.
    listed_at: dict[str, tuple[str, str | None, list[int]]] = {}
    base = str(root)
    conflicting: set[str] = set()
    # A manifest is labeled when any row has a label; then every row needs one.
    any_label = labeled and any((row.get("label") or "").strip() for _, row in rows)
    for line, row in rows:
        listed = row.get("path") or ""
        if not listed:
            raise SourceError(f"{manifest}: malformed manifest: line {line} has an empty path")
        label = ((row.get("label") or "").strip() or None) if labeled else None
        if label is None and any_label:
            label = EMPTY_LABEL  # a failure below, not an unlabeled row in a labeled store
        path = os.path.abspath(os.path.join(base, listed))  # joining an absolute path keeps it
        relpath = _manifest_key(path, base)
        _, first_label, lines = listed_at.setdefault(relpath, (path, label, []))
        lines.append(line)
        if label != first_label:
            conflicting.add(relpath)

    images: list[SourceImage] = []
    skipped: list[tuple[str, str]] = []
    for relpath, (path, label, lines) in listed_at.items():
        if relpath in conflicting:
            # Which label is right is unknowable here; keep the image out rather than guess.
            where = ", ".join(map(str, lines))
            skipped.append((relpath, f"listed with different labels (lines {where})"))
        elif label == EMPTY_LABEL:
            skipped.append((relpath, f"empty label (line {', '.join(map(str, lines))})"))
        elif not _has_image_extension(path):
            skipped.append((relpath, f"not an image extension ({os.path.splitext(path)[1]!r})"))
        elif not os.path.isfile(path):
            skipped.append((relpath, "not a file" if os.path.lexists(path) else "file not found"))
        else:  # listed twice with one label: the same image, kept once
            images.append(SourceImage(path, relpath, label))
    class_names = tuple(sorted({i.label for i in images if i.label is not None}))
    images.sort(key=itemgetter(1))
    return Source(root, class_names, tuple(images), tuple(sorted(skipped)))


def _manifest_key(path: str, root: str) -> str:
    """The store key of a listed file: POSIX relative to the root when below it, else absolute.

    String operations on normalised absolute paths: pathlib costs seconds per 100k rows.
    """
    prefix = root.rstrip(os.sep) + os.sep
    key = path[len(prefix) :] if path.startswith(prefix) else path
    return key.replace(os.sep, "/")


def _visible(folder: str | Path) -> Iterator[os.DirEntry[str]]:
    """The entries of ``folder`` that are not hidden (dot-prefixed)."""
    with os.scandir(folder) as entries:
        yield from (e for e in entries if not e.name.startswith("."))


def _is_dir(entry: os.DirEntry[str]) -> bool:
    """Whether ``entry`` is a folder, following links; unreadable entries are not."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _is_file(entry: os.DirEntry[str]) -> bool:
    """Whether ``entry`` is a regular file, following links."""
    try:
        return entry.is_file()
    except OSError:
        return False


def _has_image_extension(name: str) -> bool:
    dot = name.rfind(".")  # os.path.splitext's answer for a name that is not hidden, faster
    return dot > 0 and name[dot:].lower() in IMAGE_EXTENSIONS


def _is_utf8(name: str) -> bool:
    """False for names ``os.fsdecode`` could only decode with surrogate escapes."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(name: str) -> str:
    """``name`` with undecodable bytes shown as ``\\xNN``, so that it can be printed and stored."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")
