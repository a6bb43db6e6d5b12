"""Run history: one small JSON file per job run under STORE/runs/, readable with plain `json`.

A record is written when the run starts (status "running", with its host and pid) and replaced
atomically when it ends (ok, interrupted or error, with the error's one line). A run killed so
hard that it could not write its end (SIGKILL, power loss) leaves the "running" record; a reader
on the same host that finds its pid gone reports it as "killed". Records live beside the
manifest, never in it: they do not enter the store's content digest, and a kill while one is
written leaves at most a temporary file (fsutil), never a broken history.

    with record_run(store_dir, kind="extract", engine="local") as run:
        ...
        run.update(**extract_fields(summary), **store_fields(store), drift=report.to_dict())
    list_runs(store_dir, last=10)

(`extract_fields` and `store_fields` are in featurestore.run_fields.)

Layout and fields: docs/schemas/run-record.schema.json.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from featurestore import exitcodes
from featurestore._version import __version__
from featurestore.errors import FeaturestoreError, JobInterrupted
from featurestore.format import read_manifest
from featurestore.fsutil import atomic_write_json, remove_stale_temps
from featurestore.run_fields import store_bytes

FORMAT = "featurestore.run/1"
RUNS = "runs"  # folder of the records, inside the store
KINDS = ("extract", "compact", "train", "finetune")
# Fields `update` accepts; everything else in a record is the recorder's own.
_UPDATABLE = frozenset(
    {
        "engine",
        "fingerprint_digest",
        "generation_before",
        "generation",
        "counts",
        "failed_by_reason",
        "stages",
        "bytes_added",
        "store",
        "drift",
        "exit_code",
        "extra",
    }
)
_RECORD_NAME = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-\d+(-\d+)?\.json$")


def now_iso(clock: Callable[[], float] = time.time) -> str:
    """UTC time as ISO 8601 with microseconds and an explicit offset."""
    return dt.datetime.fromtimestamp(clock(), dt.timezone.utc).isoformat(timespec="microseconds")


def parse_time(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 time written by `now_iso`."""
    return dt.datetime.fromisoformat(text).timestamp()


def process_start(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), to tell a reused pid from the
    original; None where /proc is not available or the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22, counted after the command name, which is in parentheses and may hold spaces.
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(pid: int, started: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    return started is None or process_start(pid) in (None, started)


def _committed(store_dir: Path) -> tuple[int | None, str | None]:
    """(generation, fingerprint digest) of the store's manifest; (None, None) if unreadable."""
    try:
        manifest = read_manifest(store_dir)
    except FeaturestoreError:
        return None, None
    return manifest.generation, manifest.fingerprint.digest


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as JSON types (counts often come as numpy integers)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _json_copy(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_plain, allow_nan=False))


class RunRecorder:
    """Writes one run's record: at start ("running"), on `checkpoint`, and at the end.

    Use through `record_run`. The outcome comes from how the `with` block ends: normally "ok",
    `JobInterrupted` or KeyboardInterrupt "interrupted", any other exception "error" with its
    one line. Exceptions are never swallowed; a record that cannot be written is reported on
    stderr and does not mask the job's own outcome. The store's generation and size are read
    from its manifest at the start and the end, so `generation_before`, `generation`,
    `fingerprint_digest` and `bytes_added` need no call unless the job knows better.
    """

    def __init__(
        self,
        store_dir: str | Path,
        kind: str,
        *,
        engine: str = "local",
        argv: list[str] | None = None,
        checkpoint_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        self.store_dir = Path(store_dir)
        self.folder = self.store_dir / RUNS
        self.checkpoint_seconds = checkpoint_seconds
        self._clock = clock
        self._last_write = 0.0
        self._started = clock()
        self.path: Path | None = None
        self._bytes_before = 0
        pid = os.getpid()
        self.record: dict[str, Any] = {
            "format": FORMAT,
            "id": "",
            "kind": kind,
            "status": "running",
            "started": now_iso(lambda: self._started),
            "ended": None,
            "updated": None,
            "seconds": None,
            "host": socket.gethostname(),
            "pid": pid,
            "pid_start": process_start(pid),
            "engine": engine,
            "featurestore_version": __version__,
            "argv": list(sys.argv if argv is None else argv),
            "fingerprint_digest": None,
            "generation_before": None,
            "generation": None,
            "counts": {},
            "failed_by_reason": {},
            "stages": {},
            "bytes_added": None,
            "store": None,
            "drift": None,
            "exit_code": None,
            "signal": None,
            "error": None,
            "extra": {},
        }

    def __enter__(self) -> RunRecorder:
        stamp = dt.datetime.fromtimestamp(self._started, dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        name, n = f"{stamp}-{self.record['pid']}", 0
        while (self.folder / f"{name}.json").exists():  # same microsecond and pid: another host
            n += 1
            name = f"{stamp}-{self.record['pid']}-{n}"
        self.record["id"] = name
        self.path = self.folder / f"{name}.json"
        remove_stale_temps(self.folder)  # records of killed runs: each has its own name
        generation, digest = _committed(self.store_dir)
        self.record.update(generation_before=generation, fingerprint_digest=digest)
        self._bytes_before = store_bytes(self.store_dir)
        self._write()
        return self

    def update(self, **fields: Any) -> None:
        """Set record fields (counts, stages, generation, drift, ...); dicts are copied, and
        `counts`, `stages` and `extra` are merged into what is there. Written at most every
        `checkpoint_seconds`, so that a killed run shows how far it got."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise TypeError(f"unknown run record fields: {sorted(unknown)}")
        for key, value in fields.items():
            if key in ("counts", "stages", "extra") and value is not None:
                self.record[key] = {**self.record[key], **_json_copy(value)}
            else:
                self.record[key] = _json_copy(value)  # a JSON copy: no aliasing, no NaN
        if self.path is not None and self._clock() - self._last_write >= self.checkpoint_seconds:
            self._write()

    def checkpoint(self) -> None:
        """Write the record now (still "running")."""
        if self.path is not None:
            self._write()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        ended = self._clock()
        record = self.record
        record["ended"] = now_iso(lambda: ended)
        record["seconds"] = ended - self._started
        generation, digest = _committed(self.store_dir)
        if record["generation"] is None:
            record["generation"] = generation
        record["fingerprint_digest"] = record["fingerprint_digest"] or digest
        if record["bytes_added"] is None:
            record["bytes_added"] = store_bytes(self.store_dir) - self._bytes_before
        if exc is None:
            record["status"] = "ok"
            if record["exit_code"] is None:
                record["exit_code"] = exitcodes.OK
        elif isinstance(exc, JobInterrupted | KeyboardInterrupt):
            signum = getattr(exc, "signum", signal.SIGINT)
            record.update(status="interrupted", signal=int(signum), exit_code=128 + int(signum))
            record["error"] = _one_line(exc) or "interrupted"
        else:
            record["status"] = "error"
            record["error"] = _one_line(exc)
            record["exit_code"] = exitcodes.exit_code_for(exc)
        try:
            self._write()
        except (OSError, ValueError) as error:  # a full disk must not hide the job's own outcome
            print(f"warning: cannot write run record {self.path}: {error}", file=sys.stderr)

    def _write(self) -> None:
        """Write the record, once the store folder exists: a run never creates the store's
        folder itself (a mistyped path must not become a store), so the record of a run whose
        store does not exist yet is first written when the job has created it."""
        assert self.path is not None
        self._last_write = self._clock()
        if not self.store_dir.is_dir():
            return
        self.folder.mkdir(exist_ok=True)
        self.record["updated"] = now_iso(self._clock)
        atomic_write_json(self.path, self.record)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, FeaturestoreError | KeyboardInterrupt):
        return text[:500]
    return f"{type(exc).__name__}: {text}"[:500]  # a bug: say what kind


def record_run(store_dir: str | Path, kind: str, **options: Any) -> RunRecorder:
    """A `RunRecorder` for one run of `kind` on the store; use it as a context manager."""
    return RunRecorder(store_dir, kind, **options)


def read_run(path: str | Path) -> dict[str, Any]:
    """One record, with a "running" run whose process is gone on this host reported as "killed"
    (the file is left as it is: it is the evidence). An unreadable file gives status
    "unreadable" and the reason, so that one bad file never hides the rest of the history."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} record")
    except (OSError, ValueError) as exc:
        return {"format": FORMAT, "id": path.stem, "kind": None, "status": "unreadable", "error": str(exc)}
    if (
        record.get("status") == "running"
        and record.get("host") == socket.gethostname()
        and isinstance(record.get("pid"), int)
        and not _alive(record["pid"], record.get("pid_start"))
    ):
        record["status"] = "killed"
        record["error"] = record.get("error") or "the process ended without finishing its record"
    return record


def list_runs(
    store_dir: str | Path, *, last: int | None = None, kind: str | None = None
) -> list[dict[str, Any]]:
    """The store's run records, oldest first (the last `last` of them, of one `kind` if given)."""
    folder = Path(store_dir) / RUNS
    if not folder.is_dir():
        return []
    names = sorted(p.name for p in folder.iterdir() if _RECORD_NAME.match(p.name))
    records = [read_run(folder / name) for name in names]
    if kind is not None:
        records = [r for r in records if r.get("kind") == kind]
    return records[-last:] if last else records


def last_success(store_dir: str | Path, kind: str) -> dict[str, Any] | None:
    """The newest record of `kind` that ended "ok", or None."""
    ok = [r for r in list_runs(store_dir, kind=kind) if r.get("status") == "ok"]
    return ok[-1] if ok else None


def format_runs(records: list[dict[str, Any]]) -> str:
    """A table of run records for people: start, kind, status, time, counts, generation, error."""
    header = f"{'started (UTC)':<19}  {'kind':<8}  {'status':<11}  {'seconds':>8}  {'new':>6}  {'changed':>7}"
    header += f"  {'removed':>7}  {'failed':>6}  {'gen':>4}  error"
    lines = [header]
    for r in records:
        counts = r.get("counts") or {}
        seconds = "" if r.get("seconds") is None else f"{r['seconds']:.1f}"
        line = f"{(r.get('started') or '')[:19].replace('T', ' '):<19}  {r.get('kind') or '':<8}"
        line += f"  {r.get('status'):<11}  {seconds:>8}"
        for key, width in (("new", 6), ("changed", 7), ("removed", 7), ("failed", 6)):
            line += f"  {counts.get(key, ''):>{width}}"
        generation = r.get("generation")
        line += f"  {'' if generation is None else generation:>4}  {r.get('error') or ''}"
        lines.append(line.rstrip())
    return "\n".join(lines)
