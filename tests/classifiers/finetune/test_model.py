"""The networks: preprocessing as a layer, shared layers, frozen blocks, the head's weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.classifiers.finetune.conftest import SIZE

pytestmark = pytest.mark.xdist_group("finetune")


def _networks(head_path: Path, unfreeze: str = "block5") -> tuple[Any, Any]:
    """(Networks with the random base's and the head's weights, the head's network)."""
    from classifiers.finetune.model import build_networks, load_weights
    from classifiers.model_file import load_model
    from featurestore.backbone import build_conv_base

    head = load_model(head_path).estimator.model_
    networks = build_networks(SIZE, head, unfreeze)
    load_weights(networks, build_conv_base(SIZE, None), head)
    return networks, head


def test_caffe_preprocess_layer_equals_featurestore_preprocess() -> None:
    from classifiers.finetune.model import CaffePreprocess
    from featurestore.backbone import preprocess

    images = np.random.default_rng(0).uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(CaffePreprocess()(images)), preprocess(images))


def test_head_and_conv_weights_are_loaded_not_reinitialised(dense_head: Path) -> None:
    from featurestore.backbone import build_conv_base

    networks, head = _networks(dense_head)
    theirs = [layer for layer in head.layers if layer.weights]
    assert [layer.name for layer in theirs] == ["hidden", "output"]
    for layer in theirs:
        for mine, expected in zip(
            networks.full.get_layer(layer.name).get_weights(), layer.get_weights(), strict=True
        ):
            np.testing.assert_array_equal(mine, expected)
    base = build_conv_base(SIZE, None)
    for name in ("block1_conv1", "block4_conv3", "block5_conv3"):
        for mine, expected in zip(
            networks.full.get_layer(name).get_weights(), base.get_layer(name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(mine, expected)


@pytest.mark.parametrize(("unfreeze", "first"), [("block5", 5), ("block4", 4)])
def test_only_the_chosen_blocks_and_the_head_train(dense_head: Path, unfreeze: str, first: int) -> None:
    from classifiers.finetune.model import conv_layer_names

    networks, _ = _networks(dense_head, unfreeze)
    trainable = {layer.name for layer in networks.full.layers if layer.trainable and layer.weights}
    assert trainable == {*conv_layer_names(first), "hidden", "output"}
    assert set(networks.trainable) >= trainable
    n_trainable = sum(int(np.prod(v.shape)) for v in networks.full.trainable_variables)
    assert 0 < n_trainable < networks.full.count_params()


def test_full_model_on_images_equals_top_model_on_block4_maps_and_head_on_block5_maps(
    tiny_store: Path, dense_head: Path
) -> None:
    """The saved model (images in) computes what the cached path trains (block4 maps in) and,
    before training, what the head computes on the store's block5 maps; for the flipped views
    too: preprocessing, the conv blocks and the shared layers agree with the extractor's."""
    import featurestore
    from featurestore.images import load_image

    networks, head = _networks(dense_head)
    store = featurestore.open_store(tiny_store)
    data = store.load("train", layer="block4_pool")
    flipped = store.load("train", layer="block4_pool", flipped=True)
    root = store.source_root
    images = np.stack([load_image(root / path, SIZE) for path in data.paths])
    from_images = np.asarray(networks.full(images, training=False))
    np.testing.assert_allclose(
        from_images, np.asarray(networks.top(data.features, training=False)), atol=1e-5
    )
    # The warm start is exact: before training, the model computes what the head does on the store.
    head_on_store = np.asarray(head(store.load("train").features, training=False))
    np.testing.assert_allclose(from_images, head_on_store, atol=1e-5)
    from_flipped = np.asarray(networks.full(images[:, :, ::-1], training=False))
    np.testing.assert_allclose(
        from_flipped, np.asarray(networks.top(flipped.features, training=False)), atol=1e-5
    )
    assert not np.allclose(from_images, from_flipped, atol=1e-7)


def test_mixed_precision_computes_in_bfloat16_and_exports_float32(dense_head: Path) -> None:
    from classifiers.finetune.model import build_networks, copy_weights

    networks, head = _networks(dense_head)
    mixed = build_networks(SIZE, head, "block5", "mixed_bfloat16")
    copy_weights(networks.full, mixed.full)
    assert mixed.full.get_layer("block5_conv1").compute_dtype == "bfloat16"
    assert mixed.full.get_layer("preprocess").compute_dtype == "float32"
    assert mixed.full.get_layer("output").compute_dtype == "float32"
    images = np.random.default_rng(1).uniform(0, 255, (4, SIZE, SIZE, 3)).astype(np.float32)
    expected = np.asarray(networks.full(images, training=False))
    np.testing.assert_allclose(np.asarray(mixed.full(images, training=False)), expected, atol=0.05)
    exported = build_networks(SIZE, head, "block5").full  # what the model folder gets
    copy_weights(mixed.full, exported)  # weights stay float32 under mixed precision: exact
    np.testing.assert_array_equal(np.asarray(exported(images, training=False)), expected)
