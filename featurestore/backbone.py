"""The frozen VGG16 conv base, its ``preprocess_input``, and the backbone part of the fingerprint.

Keras-3 backend neutral: no TensorFlow APIs, so ``KERAS_BACKEND=jax|torch`` work too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from featurestore.vgg16 import output_shape
from featurestore.weights import WeightsError

BACKBONE = "vgg16"
PREPROCESSING = "keras.applications.vgg16.preprocess_input(mode=caffe)"


def output_shapes(
    input_size: int, outputs: Sequence[str] = ("block5_pool",)
) -> dict[str, tuple[int, int, int]]:
    """The (H, W, C) feature shape of each named layer for square inputs of ``input_size``."""
    if isinstance(outputs, str):  # a lone name is a Sequence too; don't iterate its letters
        outputs = (outputs,)
    if not outputs:
        raise ValueError("outputs: name at least one layer")
    return {name: output_shape(name, input_size) for name in outputs}


def build_conv_base(
    input_size: int = 150,
    weights: Path | None = None,
    outputs: Sequence[str] = ("block5_pool",),
    seed: int = 0,
) -> keras.Model:
    """Build the frozen VGG16 conv base returning the named layers (one tensor, or a list).

    With ``weights=None`` the weights are a seeded Glorot-uniform draw, identical for a given
    seed whatever the Keras backend.
    """
    names = tuple(output_shapes(input_size, outputs))
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(input_size, input_size, 3))
    if weights is None:
        _seeded_init(base, seed)
    else:
        try:
            base.load_weights(Path(weights))
        except Exception as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise WeightsError(f"{weights}: cannot load into VGG16 ({reason})") from exc
    base.trainable = False
    picked = [base.get_layer(name).output for name in names]
    model = keras.Model(base.inputs, picked[0] if len(picked) == 1 else picked, name="vgg16_base")
    model.trainable = False
    return model


def _seeded_init(model: keras.Model, seed: int) -> None:
    # Keras' own initializers draw from backend-specific RNGs; numpy makes the draw (and so the
    # weights sha256 in the fingerprint) the same on every backend.
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if not layer.weights:
            continue
        kernel, bias = layer.get_weights()
        fan_in = int(np.prod(kernel.shape[:-1]))
        fan_out = int(np.prod(kernel.shape[:-2])) * kernel.shape[-1]
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        new_kernel = rng.uniform(-limit, limit, size=kernel.shape).astype(kernel.dtype)
        layer.set_weights([new_kernel, np.zeros_like(bias)])


def preprocess(batch: np.ndarray) -> np.ndarray:
    """RGB float 0..255 ``(N, H, W, 3)`` → VGG16 input (caffe: BGR, ImageNet mean subtracted)."""
    array = np.array(batch, dtype=np.float32, copy=True)  # preprocess_input works in place
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"preprocess expects (N, H, W, 3) RGB, got shape {array.shape}")
    out = keras.applications.vgg16.preprocess_input(array, data_format="channels_last")
    return np.ascontiguousarray(out)
