"""The on-disk format of a store: file names, columns, dataset names, and the manifest.

Everything here can be read with `json` and `h5py` alone (docs/store-format.md). The manifest
is the one source of truth and is validated in full when it is read: a wrong type, a piece
outside the store or a fingerprint that does not match its digest is refused in one line that
names the field, never trusted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
import re
import threading
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

from featurestore.errors import FeaturestoreError
from featurestore.fingerprint import Fingerprint
from featurestore.splits import SplitFractions

# /3: pieces written by `compact` hold their maps contiguous, checked by XXH3 digests that only a /3
# reader checks (featurestore.piece_maps); a /2 reader must not serve them unchecked.
FORMAT = "featurestore.store/3"
OLD_FORMATS = (
    "featurestore.store/2",
    "featurestore.store/1",
)  # read as they are; the next commit writes FORMAT
MANIFEST = "manifest.json"
REBUILD_MANIFEST = "rebuild.json"  # the commits of a rebuild in progress, beside the live ones
PIECES = "pieces"
INDEX = "index"  # folder of the index files: the small columns of all pieces, one file
TMP = ".tmp"  # pieces being written; the next writer deletes what is left
TEXT_COLUMNS = ("ids", "paths", "labels", "splits")
NUMBER_COLUMNS = ("sizes", "mtime_ns")
COLUMNS = TEXT_COLUMNS + NUMBER_COLUMNS
MAIN_MAPS = "features"  # dataset of the main layer's maps; extra layers are layers/<name>
FLIPPED = "flipped"  # group of the maps of the horizontally flipped images
VIEWS = "views"  # group of the augmented views' maps: views/<k>/features, k = 1..K

# A piece is named in the manifest by a path inside pieces/; nothing else is ever opened.
_PIECE_NAME = r"pieces/[A-Za-z0-9][A-Za-z0-9._-]*\.h5"
_SHA256_HEX = r"[0-9a-f]{64}"
_PIECE_FILE = re.compile(rf"^{_PIECE_NAME}$")
_INDEX_FILE = re.compile(r"^index/[A-Za-z0-9][A-Za-z0-9._-]*\.h5$")
_SHA256 = re.compile(rf"^{_SHA256_HEX}$")


class StoreError(FeaturestoreError):
    """A store that cannot be opened or used; the message names the store and the reason."""


def map_dataset(layer: str | None, *, main_layer: str, flipped: bool = False, view: int = 0) -> str:
    """Dataset name of a layer's maps in a piece: `features`, `layers/<name>`, `flipped/...`,
    or for augmented view k (1..K) `views/<k>/...`."""
    name = MAIN_MAPS if layer in (None, main_layer) else f"layers/{layer}"
    if flipped and view:
        raise ValueError("a map is of the flipped image or of an augmented view, not both")
    if view:
        return f"{VIEWS}/{view}/{name}"
    return f"{FLIPPED}/{name}" if flipped else name


def map_datasets(fingerprint: Fingerprint) -> list[str]:
    """Dataset names of the maps every piece of a store with this fingerprint holds, in the
    order the extractor returns them: the image's, the flipped image's, then view 1..K's."""
    names = [map_dataset(layer, main_layer=fingerprint.layer) for layer in fingerprint.layers]
    flipped = [f"{FLIPPED}/{name}" for name in names] if fingerprint.flip_views else []
    views = [f"{VIEWS}/{k}/{name}" for k in range(1, fingerprint.views + 1) for name in names]
    return names + flipped + views


def dataset_layer(name: str) -> str | None:
    """The layer a map dataset holds (None: the main layer), whatever view it is of."""
    if name.startswith(f"{VIEWS}/"):
        name = name.split("/", 2)[2]
    name = name.removeprefix(f"{FLIPPED}/")
    return None if name == MAIN_MAPS else name.removeprefix("layers/")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PieceInfo:
    """A committed piece: its file (relative to the store), rows, sha256 and commit generation."""

    file: str
    rows: int
    sha256: str
    generation: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class IndexInfo:
    """The index file: the small columns of the first `pieces` pieces, live as of `generation`."""

    file: str
    sha256: str
    pieces: int
    rows: int
    generation: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetiredPiece:
    """A piece no manifest names any more, kept for readers opened before until `until` (UTC ISO)."""

    file: str
    until: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Manifest:
    generation: int
    fingerprint: Fingerprint
    class_names: tuple[str, ...]
    source_root: str
    split_fractions: SplitFractions
    pieces: tuple[PieceInfo, ...] = ()
    deleted: dict[str, int] = dataclasses.field(default_factory=dict)
    failures: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    updated: str = ""
    index: IndexInfo | None = None
    retired: tuple[RetiredPiece, ...] = ()

    def to_json(self) -> bytes:
        data = {
            "format": FORMAT,
            "generation": self.generation,
            "fingerprint": self.fingerprint.to_dict(),
            "fingerprint_digest": self.fingerprint.digest,
            "class_names": list(self.class_names),
            "source_root": self.source_root,
            "split_fractions": self.split_fractions.to_dict(),
            "pieces": [dataclasses.asdict(p) for p in self.pieces],
            "deleted": self.deleted,
            "failures": self.failures,
            "updated": self.updated,
            "index": dataclasses.asdict(self.index) if self.index else None,
            "retired": [dataclasses.asdict(r) for r in self.retired],
        }
        return json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False).encode()

    @classmethod
    def from_json(cls, raw: bytes, origin: Path) -> Manifest:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StoreError(f"{origin}: not a valid featurestore manifest (not JSON: {exc})") from None
        try:
            return _parse(data)
        except _Invalid as exc:
            raise StoreError(f"{origin}: not a valid featurestore manifest ({exc})") from None


class _Invalid(Exception):
    """A field of the manifest that is missing or wrong; the message names it."""


def _expect(value: Any, kind: type | tuple[type, ...], field: str) -> Any:
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _Invalid(f"{field} must be {_KIND_WORDS.get(names, names)}, not {value!r}"[:300])
    return value


_KIND_WORDS = {"int": "an integer", "str": "a string", "dict": "an object", "list": "a list"}


def _count(value: Any, field: str, low: int = 0, high: int | None = None) -> int:
    _expect(value, int, field)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise _Invalid(f"{field} must be {bound}, not {value}")
    return value


def _parse(data: Any) -> Manifest:
    _expect(data, dict, "the manifest")
    if data.get("format") not in (FORMAT, *OLD_FORMATS):
        raise _Invalid(f"unknown format {data.get('format')!r}, expected {FORMAT}")
    for key in ("generation", "fingerprint", "class_names", "source_root", "split_fractions", "pieces"):
        if key not in data:
            raise _Invalid(f"field {key} is missing")
    generation = _count(data["generation"], "generation")
    try:
        fingerprint = Fingerprint.from_dict(_expect(data["fingerprint"], dict, "fingerprint"))
    except (TypeError, ValueError) as exc:
        raise _Invalid(f"fingerprint: {exc}") from None
    if data.get("fingerprint_digest", fingerprint.digest) != fingerprint.digest:
        raise _Invalid("fingerprint_digest does not match the fingerprint (edited by hand?)")
    class_names = _expect(data["class_names"], list, "class_names")
    for i, name in enumerate(class_names):
        _expect(name, str, f"class_names[{i}]")
    if len(set(class_names)) != len(class_names):
        raise _Invalid("class_names repeats a name")
    fractions = _expect(data["split_fractions"], dict, "split_fractions")
    for key, value in fractions.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise _Invalid(f"split_fractions.{key} must be a finite number, not {value!r}")
    try:
        split_fractions = SplitFractions(**fractions)
    except (TypeError, ValueError) as exc:
        raise _Invalid(f"split_fractions: {exc}") from None
    pieces = _pieces(_expect(data["pieces"], list, "pieces"), generation)
    deleted = _expect(data.get("deleted", {}), dict, "deleted")
    if not _all_counts(deleted.values(), 0, generation):
        for relpath, at in deleted.items():
            _count(at, f"deleted[{relpath!r}]", 0, generation)
    failures = _expect(data.get("failures", {}), dict, "failures")
    if not (
        _all_of_type(failures.values(), dict)
        and _all_of_type([failure.get("reason") for failure in failures.values()], str)
    ):
        for relpath, failure in failures.items():
            _expect(failure, dict, f"failures[{relpath!r}]")
            _expect(failure.get("reason"), str, f"failures[{relpath!r}].reason")
    index = _parse_index(data.get("index"), generation, len(pieces))
    retired = _retired(_expect(data.get("retired", []), list, "retired"))
    return Manifest(
        generation=generation,
        fingerprint=fingerprint,
        class_names=tuple(class_names),
        source_root=_expect(data["source_root"], str, "source_root"),
        split_fractions=split_fractions,
        pieces=pieces,
        deleted=dict(deleted),
        failures=dict(failures),
        updated=_expect(data.get("updated", ""), str, "updated"),
        index=index,
        retired=retired,
    )


# Bulk checks of the long lists (pieces, retired pieces, deletions): a few C-level passes and one
# regex over all the names at once. Only when one fails are the entries checked one by one, for
# the message that names the first wrong field.
_PIECE_KEYS = {"file", "rows", "sha256", "generation"}
_PIECE_FILES = re.compile(rf"(?:{_PIECE_NAME}\n)*")  # names joined by newlines, each as _PIECE_FILE
_SHA256S = re.compile(rf"(?:{_SHA256_HEX}\n)*")


def _all_match(names: list[Any], pattern: re.Pattern[str]) -> bool:
    """Whether every name is a string and `pattern` (a repeat of name + newline) matches them all."""
    if not _all_of_type(names, str):
        return False
    text = "\n".join(names) + "\n" if names else ""
    # (a newline inside a name would pass as two names: counted)
    return text.count("\n") == len(names) and pattern.fullmatch(text) is not None


def _all_of_type(values: Any, kind: type) -> bool:
    """Whether every value is exactly of `kind` (a bool is no int), in one C-level pass."""
    return {kind}.issuperset(map(type, values))


def _all_counts(values: Any, low: int, high: int) -> bool:
    """Whether every value is an int (not a bool) within [low, high]."""
    values = list(values)
    return _all_of_type(values, int) and (not values or (min(values) >= low and max(values) <= high))


def _pieces(entries: list[Any], generation: int) -> tuple[PieceInfo, ...]:
    if (
        _all_of_type(entries, dict)
        and all(map(operator.eq, map(dict.keys, entries), repeat(_PIECE_KEYS)))
        and _all_match(list(map(itemgetter("file"), entries)), _PIECE_FILES)
        and _all_match(list(map(itemgetter("sha256"), entries)), _SHA256S)
        and _all_counts(map(itemgetter("rows"), entries), 1, 2**63)
        and _all_counts(map(itemgetter("generation"), entries), 1, generation)
    ):
        pieces = tuple(PieceInfo(**piece) for piece in entries)
    else:
        pieces = tuple(_piece(piece, f"pieces[{i}]", generation) for i, piece in enumerate(entries))
    if len({p.file for p in pieces}) != len(pieces):
        raise _Invalid("pieces names a file twice")
    return pieces


def _piece(piece: Any, where: str, generation: int) -> PieceInfo:
    _expect(piece, dict, where)
    if set(piece) != _PIECE_KEYS:
        raise _Invalid(f"{where} must have exactly file, rows, sha256, generation")
    file = _expect(piece["file"], str, f"{where}.file")
    if not _PIECE_FILE.match(file):
        raise _Invalid(f"{where}.file {file!r} is not a file inside {PIECES}/")
    sha256 = _expect(piece["sha256"], str, f"{where}.sha256")
    if not _SHA256.match(sha256):
        raise _Invalid(f"{where}.sha256 is not a sha256 hex digest")
    return PieceInfo(
        file=file,
        rows=_count(piece["rows"], f"{where}.rows", 1),
        sha256=sha256,
        generation=_count(piece["generation"], f"{where}.generation", 1, generation),
    )


def _retired(entries: list[Any]) -> tuple[RetiredPiece, ...]:
    if _all_of_type(entries, dict):
        files = [entry.get("file") for entry in entries]
        until = [entry.get("until") for entry in entries]
        if _all_match(files, _PIECE_FILES) and _all_of_type(until, str):
            return tuple(RetiredPiece(file=f, until=u) for f, u in zip(files, until, strict=True))
    retired = []
    for i, entry in enumerate(entries):
        _expect(entry, dict, f"retired[{i}]")
        file = _expect(entry.get("file"), str, f"retired[{i}].file")
        if not _PIECE_FILE.match(file):
            raise _Invalid(f"retired[{i}].file {file!r} is not a file inside {PIECES}/")
        retired.append(RetiredPiece(file=file, until=_expect(entry.get("until"), str, f"retired[{i}].until")))
    return tuple(retired)


def _parse_index(value: Any, generation: int, pieces: int) -> IndexInfo | None:
    if value is None:
        return None
    _expect(value, dict, "index")
    if set(value) != {"file", "sha256", "pieces", "rows", "generation"}:
        raise _Invalid("index must have exactly file, sha256, pieces, rows, generation")
    file = _expect(value["file"], str, "index.file")
    if not _INDEX_FILE.match(file):
        raise _Invalid(f"index.file {file!r} is not a file inside {INDEX}/")
    sha256 = _expect(value["sha256"], str, "index.sha256")
    if not _SHA256.match(sha256):
        raise _Invalid("index.sha256 is not a sha256 hex digest")
    return IndexInfo(
        file=file,
        sha256=sha256,
        pieces=_count(value["pieces"], "index.pieces", 0, pieces),
        rows=_count(value["rows"], "index.rows"),
        generation=_count(value["generation"], "index.generation", 0, generation),
    )


def read_manifest(store_dir: Path, name: str = MANIFEST) -> Manifest:
    """The validated manifest of a store (or its `REBUILD_MANIFEST`); `StoreError` naming the
    field otherwise.

    The file is read every time (a commit replaces it), but parsed and validated once per
    content: a run that reads the same manifest several times (extract: before, during and
    after its writer) parses it once. Keyed by the bytes themselves, not by a stat that a
    replaced file could repeat, so a reader never gets another content than the file's.
    """
    path = Path(store_dir) / name
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise StoreError(f"{store_dir}: not a feature store (no {MANIFEST})") from None
    except OSError as exc:
        raise StoreError(f"{path}: cannot read ({exc.strerror or exc})") from None
    parsed = _parsed.get(raw)
    if parsed is None:
        parsed = Manifest.from_json(raw, path)
        with _parsed_lock:  # a writer thread may read while the main thread does
            while len(_parsed) >= _PARSED_KEPT:
                del _parsed[next(iter(_parsed))]  # the oldest (dicts keep insertion order)
            _parsed[raw] = parsed
    # Its own dicts for each caller: a Manifest is frozen, its dicts are not.
    return dataclasses.replace(parsed, deleted=dict(parsed.deleted), failures=dict(parsed.failures))


#: Manifests parsed by `read_manifest`, by their bytes: the live and the rebuild manifest of a
#: run, and the one or two before them (a few MB at most).
_parsed: dict[bytes, Manifest] = {}
_PARSED_KEPT = 4
_parsed_lock = threading.Lock()


def is_store(path: str | Path) -> bool:
    """Whether `path` is a store folder (has a manifest); says nothing about its health."""
    return (Path(path) / MANIFEST).is_file()
