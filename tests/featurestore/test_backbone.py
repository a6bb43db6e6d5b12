"""Backbone: the frozen VGG16 conv base, its shapes, seeding and preprocessing."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from featurestore.backbone import build_conv_base, output_shapes, preprocess
from featurestore.weights import WeightsError, weights_sha256


def test_output_shapes_match_the_built_model() -> None:
    names = ("block4_pool", "block5_pool")
    assert output_shapes(150, names) == {"block4_pool": (9, 9, 512), "block5_pool": (4, 4, 512)}
    model = build_conv_base(150, outputs=names)
    assert [tuple(o.shape) for o in model.outputs] == [(None, 9, 9, 512), (None, 4, 4, 512)]


def test_small_input_runs_and_is_frozen() -> None:
    assert output_shapes(48) == {"block5_pool": (1, 1, 512)}
    model = build_conv_base(48)
    features = model.predict(np.zeros((2, 48, 48, 3), np.float32), verbose=0)
    assert features.shape == (2, 1, 1, 512)  # one name: a single tensor, not a list
    assert model.trainable_weights == []
    assert all(not layer.trainable for layer in model.layers)


def test_seeded_init_is_deterministic() -> None:
    first = weights_sha256(build_conv_base(32, seed=0))
    assert weights_sha256(build_conv_base(32, seed=0)) == first
    assert weights_sha256(build_conv_base(32, seed=1)) != first


def test_bad_layer_or_size_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown VGG16 layer"):
        output_shapes(150, ("block6_pool",))
    with pytest.raises(ValueError, match="at least 32"):
        build_conv_base(16)


def test_bad_weights_file_is_a_weights_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.weights.h5"
    bad.write_bytes(b"junk")
    with pytest.raises(WeightsError, match=r"bad\.weights\.h5: cannot load into VGG16"):
        build_conv_base(32, weights=bad)


def test_preprocess_is_keras_caffe_and_leaves_the_input_alone() -> None:
    batch = np.random.default_rng(0).uniform(0, 255, size=(2, 5, 4, 3)).astype(np.float32)
    original = batch.copy()
    out = preprocess(batch)
    expected = keras.applications.vgg16.preprocess_input(batch.copy())
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(batch, original)
    # caffe mode: BGR order, ImageNet mean removed, no scaling.
    np.testing.assert_allclose(out[..., 0], batch[..., 2] - 103.939, rtol=1e-6)
    with pytest.raises(ValueError, match="RGB"):
        preprocess(batch[0])
