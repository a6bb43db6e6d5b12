"""Which precision a run computes in, and whether this machine may add maps to a store.

A store is computed by one precision, one Keras backend and one device kind (cpu or gpu):
- `--precision auto` is resolved once, when the store is created (mixed_bfloat16 where it runs
  natively, else float32), and then pinned by the fingerprint: later auto runs use it;
- maps are computed only in a precision that this machine runs natively (float32 always is;
  emulated bfloat16 on an older CPU is slower than float32 and rounds differently);
- a store whose rows were computed by another backend or device kind is refused: the maps of
  TensorFlow and JAX on the same photos differ by up to ~5e-4, so mixing them would break the
  promise that a resumed or incremental store equals a fresh one bit for bit.
"""

from __future__ import annotations

from pathlib import Path

from featurestore import exitcodes
from featurestore.errors import FeaturestoreError
from featurestore.fingerprint import Fingerprint
from featurestore.format import is_store, read_manifest
from featurestore.hardware import BF16_CPU_FLAGS, NATIVE_BF16_ENV, auto_precision, native_precision

__all__ = ["ComputeError", "check_compute", "run_precision"]


class ComputeError(FeaturestoreError):
    """This machine may not compute maps for this store (precision, backend or device)."""

    exit_code = exitcodes.REFUSED


def run_precision(requested: str, store_dir: str | Path, *, rebuild: bool) -> str:
    """The Keras dtype policy of this run: as asked, or for "auto" the store's pinned one
    (the hardware's choice when the store is new or rebuilt)."""
    if requested != "auto":
        return requested
    if not rebuild and is_store(store_dir):
        return read_manifest(Path(store_dir)).fingerprint.precision
    return auto_precision()


def check_compute(store_dir: str | Path, fingerprint: Fingerprint, recorded: Fingerprint | None) -> None:
    """Refuse, in one line, to compute maps for a store on this machine when the precision is
    not native here, or when the store's rows were computed by another backend or device kind.

    `recorded` is the fingerprint of the rows already in the store (None when it has none).
    Imports the Keras backend.
    """
    from featurestore.hardware import compute_record

    precision = fingerprint.precision
    if not native_precision(precision):
        pinned = recorded is not None and recorded.precision == precision
        why = "the store computes in it (pinned when it was created)" if pinned else "asked"
        raise ComputeError(
            f"{store_dir}: precision {precision} ({why}) does not run natively on this machine "
            f"(no GPU, and the CPU flags have none of {', '.join(BF16_CPU_FLAGS)}); run on a "
            f"machine that has it, or --rebuild --precision float32 "
            f"({NATIVE_BF16_ENV}=1 overrides the detection)"
        )
    if recorded is None:
        return
    now = compute_record()
    for key, value in recorded.recorded_compute().items():
        if value and value != now[key]:
            what = "Keras backend" if key == "keras_backend" else "device kind"
            raise ComputeError(
                f"{store_dir}: its maps were computed with {what} {value!r}, this run would use "
                f"{now[key]!r}; a store never mixes them (maps differ by up to ~5e-4), so run "
                f"with the store's {what}, or --rebuild"
            )
