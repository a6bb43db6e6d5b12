"""End to end on real photos with the real ImageNet weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from featurestore.store import open_store

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def test_features_match_plain_keras_vgg16_on_the_same_files(real_store: Path, imagenet_weights: Path) -> None:
    import keras

    store = open_store(real_store)
    data = store.load("test")
    source = Path(store.manifest.source_root)
    paths = list(data.paths[:16])
    conv_base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(150, 150, 3))
    conv_base.load_weights(imagenet_weights)
    images = np.stack(
        [
            keras.utils.img_to_array(
                keras.utils.load_img(source / p, target_size=(150, 150), interpolation="bilinear")
            )
            for p in paths
        ]
    )
    expected = conv_base.predict(keras.applications.vgg16.preprocess_input(images), verbose=0)
    assert data.features.shape[1:] == (4, 4, 512)
    np.testing.assert_allclose(data.features[:16], expected, rtol=1e-4, atol=1e-3)


def test_logistic_regression_on_the_train_split_scores_95_on_test(real_store: Path) -> None:
    store = open_store(real_store)
    train, test = store.load("train"), store.load("test")
    assert len(train) + len(test) + len(store.load("validation")) == 400
    model = LogisticRegression(C=0.1, max_iter=2000)
    model.fit(train.features.reshape(len(train), -1), train.labels)
    accuracy = model.score(test.features.reshape(len(test), -1), test.labels)
    print(f"logistic regression: test accuracy {accuracy:.3f} on {len(test)} images")
    assert accuracy >= 0.95
