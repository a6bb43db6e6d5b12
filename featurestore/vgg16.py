"""VGG16's geometry, in one place: its blocks, conv layers and the shape of every layer's maps.

Pure arithmetic (no Keras import), so the store, the ONNX import and fine-tuning can ask for a
map shape without starting TensorFlow.
"""

from __future__ import annotations

#: (block, conv layers in the block, channels); every block ends in a 2x2/2 max pool.
BLOCKS: tuple[tuple[int, int, int], ...] = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))

#: keras.applications.VGG16's own lower bound for include_top=False (five halvings).
MIN_INPUT_SIZE = 32
#: Our upper bound: 1024 px maps of block1 take 256 MiB per image in float32; larger asks are
#: typing mistakes, not settings.
MAX_INPUT_SIZE = 1024


def _conv_layers() -> tuple[tuple[str, int, int], ...]:
    layers, channels_in = [], 3
    for block, convs, channels in BLOCKS:
        for conv in range(1, convs + 1):
            layers.append((f"block{block}_conv{conv}", channels_in, channels))
            channels_in = channels
    return tuple(layers)


#: (Keras layer name, input channels, output channels) of the 13 conv layers, in graph order.
CONV_LAYERS: tuple[tuple[str, int, int], ...] = _conv_layers()

#: The pooling layers, whose maps a store may keep.
POOL_LAYERS: tuple[str, ...] = tuple(f"block{block}_pool" for block, _, _ in BLOCKS)


#: Every layer whose maps the conv base can return.
LAYER_NAMES: tuple[str, ...] = (*(name for name, _, _ in CONV_LAYERS), *POOL_LAYERS)


def layer_shapes(input_size: int) -> dict[str, tuple[int, int, int]]:
    """Output (H, W, C) of every conv and pool layer: convs keep the size, pools floor-halve it."""
    if input_size < MIN_INPUT_SIZE:
        raise ValueError(f"input_size {input_size}: VGG16 needs at least {MIN_INPUT_SIZE}")
    shapes: dict[str, tuple[int, int, int]] = {}
    size = input_size
    for block, convs, channels in BLOCKS:
        for conv in range(1, convs + 1):
            shapes[f"block{block}_conv{conv}"] = (size, size, channels)
        size //= 2
        shapes[f"block{block}_pool"] = (size, size, channels)
    return shapes


def output_shape(layer: str, input_size: int) -> tuple[int, int, int]:
    """The (H, W, C) maps of one layer for square inputs of `input_size` pixels."""
    shapes = layer_shapes(input_size)
    if layer not in shapes:
        raise ValueError(f"unknown VGG16 layer {layer!r}; choose from {list(shapes)}")
    return shapes[layer]
