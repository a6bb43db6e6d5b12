"""What a saved model reads, made from a source: chunks of inputs with their paths and labels.

A source is an image file, a folder (class folders or not), a CSV manifest or a feature store.
Each model kind (`classifiers.model_file.ModelKind`) turns a source into its inputs with the
helpers here: models on store features read a store's maps or embed new images with the
backbone their fingerprint records; a network that starts at the pixels reads decoded images.
A file that cannot be read or decoded gets its reason instead of stopping the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from classifiers.errors import PredictError

if TYPE_CHECKING:
    from featurestore.fingerprint import Fingerprint
    from featurestore.store import FeatureStore

#: Images embedded or decoded per call: bounds memory (150x150 RGB float32: 270 KB each).
EMBED_CHUNK = 256
#: Store rows read per chunk.
STORE_CHUNK = 4096

#: (file path, label or "") of each image of a source.
Items = list[tuple[str, str]]
#: paths -> (model inputs, per path None or why it could not be used).
Embed = Callable[[list[str]], tuple[np.ndarray, list[str | None]]]


@dataclass(frozen=True)
class InputChunk:
    """Model inputs for some images: row i of `inputs` is `paths[i]`, unless `errors[i]` says
    why that image could not be used (its row is then meaningless)."""

    paths: list[str]
    labels: list[str]
    inputs: np.ndarray
    errors: list[str | None]
    flipped: np.ndarray | None = None  # the mirror images' inputs, for test-time flips
    augmented: np.ndarray | None = None  # (n, K, ...) the augmented views' inputs (--tta views)

    def __len__(self) -> int:
        return len(self.paths)


def source_images(source: Path) -> tuple[Items, Sequence[tuple[str, str]]]:
    """The images of `source` with their labels, and (path, reason) of files found but unusable.

    A store gives the images its rows point to (for a model whose input is the pixels).
    """
    import featurestore
    from featurestore.sources import discover

    if featurestore.is_store(source):
        images = featurestore.open_store(source).images()
        return [(str(image.path), image.label) for image in images], ()
    if source.is_file() and source.suffix.lower() != ".csv":
        return [(str(source), "")], ()
    found = discover(source)  # a folder (labeled or not) or a CSV manifest
    items = [(str(image.path), image.label or "") for image in found.images]
    return items, [(str(source / relpath), reason) for relpath, reason in found.skipped]


def embedded(items: Items, skipped: Sequence[tuple[str, str]], embed: Embed) -> Iterator[InputChunk]:
    """`items` turned into inputs by `embed`, `EMBED_CHUNK` at a time, then the skipped files."""
    for start in range(0, len(items), EMBED_CHUNK):
        chunk = items[start : start + EMBED_CHUNK]
        paths = [path for path, _ in chunk]
        inputs, errors = embed(paths)
        yield InputChunk(paths, [label for _, label in chunk], inputs, errors)
    if skipped:
        paths = [path for path, _ in skipped]
        yield InputChunk(paths, [""] * len(paths), np.zeros((len(paths),)), [reason for _, reason in skipped])


def decoded_images(paths: list[str], size: int) -> tuple[np.ndarray, list[str | None]]:
    """RGB images (N, size, size, 3) in 0..255 (zeros for a failed file) and each file's error."""
    from featurestore.images import ImageError, load_image

    images = np.zeros((len(paths), size, size, 3), np.float32)
    errors: list[str | None] = []
    for i, path in enumerate(paths):
        try:
            images[i] = load_image(path, size)
            errors.append(None)
        except ImageError as exc:
            errors.append(str(exc))
    return images, errors


def require_same_features(store: FeatureStore, fingerprint: Fingerprint, source: Path) -> None:
    """Refuse a store whose maps do not mean what the model's `fingerprint` says
    (`Fingerprint.feature_differences`, the one definition)."""
    differences = store.fingerprint.feature_differences(fingerprint)
    if differences:
        raise PredictError(f"{source}: store features differ from the model's ({'; '.join(differences)})")


def store_maps(fingerprint: Fingerprint, source: Path) -> Iterator[InputChunk]:
    """The main maps of every row of the store `source`, refused unless they mean what the
    model's `fingerprint` says (`Fingerprint.feature_differences`, the one definition)."""
    import featurestore

    store = featurestore.open_store(source)
    require_same_features(store, fingerprint, source)
    for batch in store.iter_batches(None, batch_size=STORE_CHUNK):
        labels = [store.class_names[i] if i >= 0 else "" for i in batch.labels]
        yield InputChunk(list(batch.paths), labels, batch.features, [None] * len(batch))


def feature_maps(fingerprint: Fingerprint | None, source: Path, weights: str) -> Iterator[InputChunk]:
    """Inputs of a model on store features: a store's maps, or new images embedded as the
    model's fingerprint records (same backbone, layer, size, dtype and precision)."""
    import featurestore

    if fingerprint is None:
        raise PredictError(f"{source}: the model records no store fingerprint: cannot compare or embed")
    if featurestore.is_store(source):
        yield from store_maps(fingerprint, source)
        return
    items, skipped = source_images(source)
    # Only the main maps: flipped views and extra layers would cost time and feed nothing.
    extractor = featurestore.Extractor.from_fingerprint(fingerprint.main_maps(), weights=weights)
    yield from embedded(items, skipped, extractor.embed_files)


def feature_map_views(fingerprint: Fingerprint | None, source: Path, weights: str) -> Iterator[InputChunk]:
    """`feature_maps` with the maps of each mirror image in `InputChunk.flipped`: a store's
    flipped views (extracted with --flip-views), or new images embedded as they are and flipped."""
    import dataclasses

    import featurestore
    from featurestore.format import FLIPPED, MAIN_MAPS

    if fingerprint is None:
        raise PredictError(f"{source}: the model records no store fingerprint: cannot compare or embed")
    if featurestore.is_store(source):
        store = featurestore.open_store(source)
        if not store.fingerprint.flip_views:
            raise PredictError(
                f"{source}: the store has no flipped views for test-time flips (extract with "
                "--flip-views, or predict on the image files)"
            )
        require_same_features(store, fingerprint, source)
        batches = store.iter_batches(None, batch_size=STORE_CHUNK)
        mirrors = store.iter_batches(None, batch_size=STORE_CHUNK, flipped=True)
        for batch, mirror in zip(batches, mirrors, strict=True):
            labels = [store.class_names[i] if i >= 0 else "" for i in batch.labels]
            yield InputChunk(list(batch.paths), labels, batch.features, [None] * len(batch), mirror.features)
        return
    items, skipped = source_images(source)
    both = dataclasses.replace(fingerprint.main_maps(), flip_views=True)
    extractor = featurestore.Extractor.from_fingerprint(both, weights=weights)

    def embed(paths: list[str]) -> tuple[np.ndarray, list[str | None]]:
        images, errors = decoded_images(paths, extractor.input_size)
        maps = extractor.embed(images)
        return np.stack([maps[MAIN_MAPS], maps[f"{FLIPPED}/{MAIN_MAPS}"]], axis=1), errors

    for chunk in embedded(items, skipped, embed):
        if chunk.inputs.ndim < 2:  # the files found but unusable: no maps at all
            yield dataclasses.replace(chunk, flipped=chunk.inputs)
        else:
            yield dataclasses.replace(chunk, inputs=chunk.inputs[:, 0], flipped=chunk.inputs[:, 1])


def feature_map_augmented(
    fingerprint: Fingerprint | None, source: Path, weights: str
) -> Iterator[InputChunk]:
    """`feature_maps` with each image's augmented views' maps in `InputChunk.augmented`: a
    store's cached views (extracted with --views K), or new images' K views computed as
    `extract --views K` would (seeded by each file's content id, `featurestore.views`), K being
    the views of the store the model was trained on."""
    import dataclasses

    import featurestore
    from featurestore.decoding import decode_file
    from featurestore.format import MAIN_MAPS, VIEWS

    if fingerprint is None:
        raise PredictError(f"{source}: the model records no store fingerprint: cannot compare or embed")
    if featurestore.is_store(source):
        store = featurestore.open_store(source)
        if not store.views:
            raise PredictError(
                f"{source}: the store has no augmented views for --tta views (extract with --views K, "
                "or predict on the image files)"
            )
        require_same_features(store, fingerprint, source)
        batches = store.iter_batches(None, batch_size=STORE_CHUNK)
        per_view = [
            store.iter_batches(None, batch_size=STORE_CHUNK, view=k) for k in range(1, store.views + 1)
        ]
        for batch, *views in zip(batches, *per_view, strict=True):
            labels = [store.class_names[i] if i >= 0 else "" for i in batch.labels]
            stacked = np.stack([view.features for view in views], axis=1)
            yield InputChunk(
                list(batch.paths), labels, batch.features, [None] * len(batch), augmented=stacked
            )
        return
    if not fingerprint.views:
        raise PredictError(
            f"{source}: the model's store kept no augmented views: --tta views has none to make"
        )
    items, skipped = source_images(source)
    with_views = dataclasses.replace(fingerprint.main_maps(), views=fingerprint.views)
    extractor = featurestore.Extractor.from_fingerprint(with_views, weights=weights)
    size, k = extractor.input_size, fingerprint.views

    def embed(paths: list[str]) -> tuple[np.ndarray, list[str | None]]:
        images = np.zeros((len(paths), size, size, 3), np.float32)
        ids, errors = [], []
        for i, path in enumerate(paths):
            decoded = decode_file(path, size, decoder=fingerprint.decoder)
            if decoded.pixels is not None:
                images[i] = decoded.pixels
            ids.append(decoded.image_id or "0" * 64)
            errors.append(decoded.error)
        maps = extractor.embed(images, ids)
        names = [MAIN_MAPS, *(f"{VIEWS}/{view}/{MAIN_MAPS}" for view in range(1, k + 1))]
        return np.stack([maps[name] for name in names], axis=1), errors

    for chunk in embedded(items, skipped, embed):
        if chunk.inputs.ndim < 2:  # the files found but unusable: no maps at all
            yield chunk
        else:
            yield dataclasses.replace(chunk, inputs=chunk.inputs[:, 0], augmented=chunk.inputs[:, 1:])
