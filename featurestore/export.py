"""Export a store's live rows to one plain HDF5 file that anyone can open with h5py."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from featurestore.format import StoreError
from featurestore.fsutil import atomic_file
from featurestore.h5write import WriteError, h5_writing
from featurestore.store import FeatureStore


def export_store(store: FeatureStore, out: str | Path, *, batch_size: int = 4096) -> int:
    """Write datasets features, labels, ids, paths, split (+ attrs); returns the row count.

    Written to a temporary name and renamed, so OUT is either complete or absent.
    """
    out = Path(out)
    n = len(store)
    shape = store.map_shape()
    text = h5py.string_dtype("utf-8")
    try:
        with atomic_file(out) as tmp, h5_writing(tmp, "export") as f:
            features = f.create_dataset(
                "features",
                shape=(n, *shape),
                dtype=np.float32,
                chunks=(min(max(n, 1), 32), *shape),
                fletcher32=True,
            )
            columns = {name: [] for name in ("labels", "ids", "paths", "split")}
            at = 0
            for batch in store.iter_batches(None, batch_size=batch_size):
                features[at : at + len(batch)] = batch.features
                at += len(batch)
                columns["labels"].append(batch.labels)
                columns["ids"].append(batch.ids)
                columns["paths"].append(batch.paths)
                columns["split"].append(batch.splits)
            f.create_dataset("labels", data=_cat(columns["labels"], np.int64))
            for name in ("ids", "paths", "split"):
                f.create_dataset(name, data=_cat(columns[name], object).astype(str).tolist(), dtype=text)
            f.attrs["class_names"] = json.dumps(list(store.class_names))
            f.attrs["fingerprint"] = json.dumps(store.fingerprint.to_dict())
            f.attrs["fingerprint_digest"] = store.fingerprint.digest
            f.attrs["store_digest"] = store.digest
            f.attrs["layout"] = "features (N,H,W,C) float32; labels index class_names (-1 unlabeled)"
    except WriteError as exc:  # the temporary file is already removed
        raise StoreError(f"{out}: cannot write export ({exc.reason})") from None
    except OSError as exc:
        raise StoreError(f"{out}: cannot write export ({exc.strerror or exc})") from None
    return n


def _cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.array([], dtype=dtype)
