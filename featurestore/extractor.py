"""Extractor: turns RGB images into the feature maps of a frozen conv base.

Keras is imported only when a model is first needed, so that a nightly run with nothing new
finishes without paying TensorFlow's start-up.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.errors import FeaturestoreError
from featurestore.fingerprint import DEFAULT_DECODER, Fingerprint, library_versions
from featurestore.format import MAIN_MAPS, map_datasets
from featurestore.fsutil import atomic_write_bytes
from featurestore.images import INTERPOLATION, ImageError, load_image

#: Zero images after every padded batch, so that no real image is computed by the kernels' tail
#: code (see `Extractor`); measured: one is enough at 32, 48, 150 and 224 px on AVX2 oneDNN.
GUARD_IMAGES = 1


class ExtractorError(FeaturestoreError):
    """The extractor cannot be built as asked (weights that do not match, say)."""


class Extractor:
    """A frozen VGG16 conv base with its preprocessing, run in fixed-size batches.

    An image's features are bit-identical whatever shares its batch, wherever it sits in it and
    whatever the batch size: that is what lets an interrupted extraction resume into exactly the
    uninterrupted result, and the Ray engine reproduce the local one. One zero image
    (`GUARD_IMAGES`) follows every batch: the convolution kernels compute the last rows of a
    batch (the tail of their row blocking) with another instruction sequence, a few ulps away;
    the guard takes that tail, so no real image is ever in it. It costs 1/(batch_size + 1) of
    the model's time. On a GPU, where kernels are chosen by shape, partial batches are also
    padded to `batch_size`.
    """

    def __init__(
        self,
        *,
        weights: str = "imagenet",
        input_size: int = 150,
        layer: str = "block5_pool",
        extra_layers: Sequence[str] = (),
        dtype: str = "float32",
        precision: str = "float32",
        flip_views: bool = False,
        views: int = 0,
        decoder: str = DEFAULT_DECODER,
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        self.weights = weights
        self.input_size = input_size
        self.layer = layer
        self.extra_layers = tuple(extra_layers)
        self.dtype = dtype
        self.precision = precision
        self.flip_views = flip_views
        self.views = views
        self.decoder = decoder
        self.batch_size = batch_size
        self.seed = seed
        self._model: Any = None
        self._fingerprint: Fingerprint | None = None
        self._pad: bool | None = None

    @classmethod
    def from_fingerprint(
        cls, fingerprint: Fingerprint | dict[str, Any], *, weights: str = "imagenet", batch_size: int = 32
    ) -> Extractor:
        """The extractor that reproduces a recorded fingerprint; refuses other weights."""
        fp = fingerprint if isinstance(fingerprint, Fingerprint) else Fingerprint.from_dict(fingerprint)
        extractor = cls(
            weights=weights,
            input_size=fp.input_size,
            layer=fp.layer,
            extra_layers=fp.extra_layers,
            dtype=fp.dtype,
            precision=fp.precision,
            flip_views=fp.flip_views,
            views=fp.views,
            decoder=fp.decoder,
            batch_size=batch_size,
        )
        differences = extractor.fingerprint.differences(fp)
        if differences:
            raise ExtractorError(
                f"weights {weights!r} do not reproduce the recorded features: {'; '.join(differences)}"
            )
        return extractor

    # -- identity ----------------------------------------------------------------------
    @property
    def fingerprint(self) -> Fingerprint:
        """The fingerprint, computed without building the model when the weights are known."""
        if self._fingerprint is None:
            self._fingerprint = Fingerprint(
                layer=self.layer,
                input_size=self.input_size,
                interpolation=INTERPOLATION,
                weights_sha256=self._weights_sha256(),
                dtype=self.dtype,
                precision=self.precision,
                extra_layers=self.extra_layers,
                flip_views=self.flip_views,
                views=self.views,
                decoder=self.decoder,
            )
        return self._fingerprint

    def with_library_versions(self) -> Fingerprint:
        """The fingerprint with provenance filled in (imports Keras)."""
        import dataclasses

        return dataclasses.replace(self.fingerprint, library_versions=library_versions())

    def _weights_sha256(self) -> str:
        """sha256 of the weight values, memoised per weights file so that it needs no Keras."""
        from featurestore.weights import resolve_weights, weights_file_sha256, weights_sha256

        path = resolve_weights(self.weights)
        if path is None:  # random weights: hash what the seed produced
            return weights_sha256(self._full_base())
        memo = path.with_name(path.name + ".values-sha256.json")
        file_digest = weights_file_sha256(path)
        try:
            known = json.loads(memo.read_text())
            if known.get("file_sha256") == file_digest:
                return known["values_sha256"]
        except (OSError, ValueError):
            pass
        values = weights_sha256(self._full_base())
        # A read-only weights folder only costs a model build next time.
        with contextlib.suppress(OSError):
            atomic_write_bytes(
                memo, json.dumps({"file_sha256": file_digest, "values_sha256": values}).encode()
            )
        return values

    def _full_base(self) -> Any:
        """The whole conv base: a model cut at block4 holds fewer weights, but the fingerprint
        must name the same weights whichever layers a store keeps."""
        if "block5_pool" in (self.layer, *self.extra_layers):
            return self.model
        from featurestore.backbone import build_conv_base
        from featurestore.weights import resolve_weights

        return build_conv_base(self.input_size, resolve_weights(self.weights), seed=self.seed)

    # -- the model -------------------------------------------------------------------
    @property
    def model(self) -> Any:
        if self._model is None:
            import keras

            from featurestore.backbone import build_conv_base
            from featurestore.weights import resolve_weights

            previous = keras.config.dtype_policy()
            keras.config.set_dtype_policy(self.precision)  # mixed precision, if asked
            try:
                self._model = build_conv_base(
                    self.input_size,
                    resolve_weights(self.weights),
                    outputs=(self.layer, *self.extra_layers),
                    seed=self.seed,
                )
            finally:
                keras.config.set_dtype_policy(previous)
        return self._model

    def embed(self, images: np.ndarray, image_ids: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Maps of a batch of RGB float32 images in [0, 255], keyed by dataset name.

        With augmented views (`views` > 0) the images' ids are needed: they seed the views.
        """
        from featurestore.backbone import preprocess
        from featurestore.views import augment_batch

        batches = [images, images[:, :, ::-1]] if self.flip_views else [images]
        if self.views:
            if image_ids is None:
                raise ValueError("augmented views are seeded by the image ids: pass image_ids")
            batches += [augment_batch(images, image_ids, k) for k in range(1, self.views + 1)]
        names = map_datasets(self.fingerprint)
        outputs: list[np.ndarray] = []
        for batch in batches:
            outputs.extend(self._run(preprocess(np.ascontiguousarray(batch))))
        out_dtype = np.float16 if self.dtype == "float16" else np.float32
        return {name: out.astype(out_dtype, copy=False) for name, out in zip(names, outputs, strict=True)}

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        n = len(batch)
        results: list[list[np.ndarray]] = []
        for start in range(0, n, self.batch_size):
            chunk = batch[start : start + self.batch_size]
            real = len(chunk)
            pad = (self.batch_size - real if self._pads_batches() else 0) + GUARD_IMAGES
            chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            out = self.model.predict_on_batch(chunk)
            out = out if isinstance(out, list | tuple) else [out]
            results.append([np.asarray(o, np.float32)[:real] for o in out])
        return [np.concatenate(parts) for parts in zip(*results, strict=True)]

    def _pads_batches(self) -> bool:
        """Whether a partial batch is padded to `batch_size`: on a GPU, where kernels are
        chosen by the batch's shape. On a CPU the guard image alone makes an image's maps the
        same at any batch size, and a nightly run of 40 new images computes 42, not 66."""
        if self._pad is None:
            from featurestore.hardware import device_kind

            self._pad = device_kind() == "gpu"
        return self._pad

    def embed_files(self, paths: Sequence[str | Path]) -> tuple[np.ndarray, list[str | None]]:
        """Main-layer features of image files; a failed file gets zeros and its reason."""
        size = self.input_size
        images = np.zeros((len(paths), size, size, 3), np.float32)
        errors: list[str | None] = []
        for i, path in enumerate(paths):
            try:
                images[i] = load_image(path, size, decoder=self.decoder)
                errors.append(None)
            except ImageError as exc:
                errors.append(str(exc))
        features = self.embed(images)[MAIN_MAPS] if len(paths) else np.zeros((0,))
        for i, error in enumerate(errors):
            if error is not None:
                features[i] = 0
        return features, errors
