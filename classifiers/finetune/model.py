"""The fine-tuning networks: VGG16 conv blocks + a trained head, frozen up to a block.

One set of layers serves two functional models: `full` (raw RGB 0..255 -> probabilities, the
model that is saved and used by `predict`) and `top` (block4_pool maps -> probabilities, the
cached-block4 fast path). They share block5 and the head, so training `top` trains `full`,
and both paths save a model of the same architecture by construction.

Backend-neutral Keras 3: no TensorFlow APIs, so ``KERAS_BACKEND=jax|torch`` work too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
from keras import ops

from classifiers.finetune.config import UNFREEZE_CHOICES
from featurestore.vgg16 import BLOCKS, output_shape

#: The layer classes a warm-start head may hold: those of the dense and gap heads (whose
#: input_norm adds UnitNormalization + Rescaling) and of `linear_head_network`.
HEAD_LAYER_CLASSES = (
    "Flatten",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling2D",
    "UnitNormalization",
    "Rescaling",
    "Dense",
    "Dropout",
)
#: keras.applications.vgg16.preprocess_input (caffe): the ImageNet mean of B, G, R.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
CUSTOM_PACKAGE = "featurestore_finetune"


@keras.saving.register_keras_serializable(package=CUSTOM_PACKAGE)
class CaffePreprocess(keras.layers.Layer):
    """RGB 0..255 -> VGG16 input (BGR, ImageNet mean subtracted), as a layer.

    A registered layer instead of a Lambda: the saved model then loads in safe mode, and the
    preprocessing travels inside the model. It always computes in float32 (under mixed
    precision, 255 - 123.68 in bfloat16 would lose the fractional part).
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)

    def call(self, inputs: Any) -> Any:
        mean = ops.convert_to_tensor(CAFFE_MEAN_BGR, dtype="float32")
        return ops.flip(ops.cast(inputs, "float32"), axis=-1) - mean

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape


@dataclasses.dataclass(frozen=True)
class Networks:
    """The shared-layer models and which layers train."""

    full: keras.Model
    top: keras.Model
    trainable: tuple[str, ...]  # layer names whose weights train (and are checkpointed)
    head: tuple[str, ...]  # the head's layer names, in order


def conv_layer_names(first_block: int = 1) -> list[str]:
    """Names of the VGG16 conv layers of `first_block` and above."""
    return [
        f"block{block}_conv{conv}"
        for block, convs, _ in BLOCKS
        if block >= first_block
        for conv in range(1, convs + 1)
    ]


def head_layers(head: keras.Model) -> list[keras.layers.Layer]:
    """The head's layers after its input, checked to be a plain chain of known classes."""
    layers = [layer for layer in head.layers if not isinstance(layer, keras.layers.InputLayer)]
    unknown = sorted({type(layer).__name__ for layer in layers} - set(HEAD_LAYER_CLASSES))
    if unknown or not layers or type(layers[-1]).__name__ != "Dense":
        found = unknown or "unexpected"
        raise ValueError(f"the head's network is not a dense/gap/logreg head (layers {found})")
    return layers


def build_networks(input_size: int, head: keras.Model, unfreeze: str, policy: str = "float32") -> Networks:
    """Fresh (untrained) VGG16 + head layers wired into `full` and `top`; see `load_weights`.

    `policy` is the Keras dtype policy of the conv and hidden layers (``mixed_bfloat16`` on a
    GPU); the preprocessing and the output layer stay float32 for numerical safety.
    """
    if unfreeze not in UNFREEZE_CHOICES:
        raise ValueError(f"unfreeze must be one of {', '.join(UNFREEZE_CHOICES)}, not {unfreeze!r}")
    first_trainable = int(unfreeze.removeprefix("block"))
    blocks: list[list[keras.layers.Layer]] = []
    for block, convs, channels in BLOCKS:
        layers = [
            keras.layers.Conv2D(
                channels, 3, padding="same", activation="relu", name=f"block{block}_conv{i}", dtype=policy
            )
            for i in range(1, convs + 1)
        ]
        layers.append(keras.layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool", dtype=policy))
        for layer in layers:
            layer.trainable = block >= first_trainable
        blocks.append(layers)
    chain = head_layers(head)
    top_layers = []
    for i, layer in enumerate(chain):
        config = layer.get_config()
        config["dtype"] = "float32" if i == len(chain) - 1 else policy
        top_layers.append(type(layer).from_config(config))  # same class/config, fresh weights

    image = keras.Input((input_size, input_size, 3), name="image")
    x = CaffePreprocess(name="preprocess")(image)
    for layer in [layer for block in blocks for layer in block]:
        x = layer(x)
    for layer in top_layers:
        x = layer(x)
    full = keras.Model(image, x, name="vgg16_finetuned")

    maps = keras.Input(output_shape("block4_pool", input_size), name="block4_maps")
    y = maps
    for layer in [*blocks[4], *top_layers]:
        y = layer(y)
    top = keras.Model(maps, y, name="vgg16_block5_head")
    trainable = [layer.name for block in blocks for layer in block if layer.trainable and layer.weights]
    names = tuple(layer.name for layer in top_layers)
    return Networks(full=full, top=top, trainable=(*trainable, *names), head=names)


def load_weights(networks: Networks, base: keras.Model, head: keras.Model) -> None:
    """Copy the conv weights from a `featurestore.backbone.build_conv_base` model and the head's."""
    for name in conv_layer_names():
        networks.full.get_layer(name).set_weights(base.get_layer(name).get_weights())
    for name, theirs in zip(networks.head, head_layers(head), strict=True):
        networks.full.get_layer(name).set_weights(theirs.get_weights())


def copy_weights(source: keras.Model, dest: keras.Model) -> None:
    """Copy every weighted layer by name (the float32 export of a mixed-precision model)."""
    for layer in dest.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed Keras' generators (initial seed-generator states of dropout and augmentation), then
    give NumPy and Python their global state back: a library call must not reseed its caller."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    keras.utils.set_random_seed(seed)
    try:
        yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def augmentation(seed: int) -> keras.Sequential:
    """Random flips, small rotations, zooms and shifts on raw RGB, active only in training."""
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomRotation(0.05, fill_mode="reflect", seed=seed + 1),  # +-18 degrees
            keras.layers.RandomZoom(0.1, fill_mode="reflect", seed=seed + 2),
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed + 3),
        ],
        name="augment",
    )


def augmented(network: keras.Model, seed: int) -> keras.Model:
    """`network` behind `augmentation(seed)`: what trains on images with --augment."""
    image = keras.Input(network.input_shape[1:], name="image")
    return keras.Model(image, network(augmentation(seed)(image)), name="augmented")


def compile_for_training(
    model: keras.Model, learning_rate: float, n_outputs: int, loss_scale: bool = False
) -> keras.Model:
    """RMSprop at `learning_rate`, the head's loss; loss scaling for float16 compute."""
    optimizer: keras.optimizers.Optimizer = keras.optimizers.RMSprop(learning_rate=learning_rate)
    if loss_scale:  # set per layer, the policy does not reach compile()'s own float16 check
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    loss = "binary_crossentropy" if n_outputs == 1 else "sparse_categorical_crossentropy"
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    return model


def predict_proba(model: keras.Model, batches: Any) -> np.ndarray:
    """(N, n_outputs or 2) float64 probabilities over an iterable of input batches."""
    # convert_to_numpy: a torch or jax tensor may live on the GPU, where np.asarray cannot read it.
    parts = [ops.convert_to_numpy(model(x, training=False)).astype(np.float64) for x in batches]
    n_outputs = int(model.output_shape[-1])
    proba = np.concatenate(parts) if parts else np.zeros((0, n_outputs))
    return np.hstack([1.0 - proba, proba]) if n_outputs == 1 else proba
