"""What computes a store's maps: `--precision auto` chosen from the hardware when the store is
created and pinned after, native precisions only, one Keras backend and device kind per store."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner

from classifiers.cli import main
from featurestore import ExtractConfig, run_extract
from featurestore.compute import ComputeError, run_precision
from featurestore.exitcodes import REFUSED
from featurestore.format import read_manifest
from featurestore.hardware import NATIVE_BF16_ENV, auto_precision, cpu_flags, native_bf16
from featurestore.info import format_info, store_info
from featurestore.run_fields import store_fields
from featurestore.store import open_store
from featurestore.writer import StoreWriter
from tests.conftest import write_image

SIZE = 32


def extract(source: Path, store: Path, **kwargs: object):
    config = ExtractConfig(
        source=source, store=store, weights="random", input_size=SIZE, batch_size=4, progress=False, **kwargs
    )
    return run_extract(config)


def test_bf16_is_native_where_the_cpu_flags_say_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NATIVE_BF16_ENV, raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n\nprocessor\t: 1\n")
    assert "avx512_bf16" in cpu_flags(cpuinfo) and native_bf16(cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 amx_tile amx_bf16\n")
    assert native_bf16(cpuinfo)
    monkeypatch.setenv(NATIVE_BF16_ENV, "0")  # the override wins over the flags
    assert not native_bf16(cpuinfo)
    assert auto_precision() == "float32"
    monkeypatch.setenv(NATIVE_BF16_ENV, "1")
    assert auto_precision() == "mixed_bfloat16"


def test_auto_on_this_machine_follows_its_own_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NATIVE_BF16_ENV, raising=False)
    has_flags = bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    if has_flags:
        assert run_precision("auto", tmp_path / "new", rebuild=False) == "mixed_bfloat16"
    else:  # no GPU in this test environment either way: the GPU probe answers for itself
        expected = "mixed_bfloat16" if native_bf16() else "float32"
        assert run_precision("auto", tmp_path / "new", rebuild=False) == expected
    assert run_precision("float32", tmp_path / "new", rebuild=False) == "float32"


def test_auto_is_pinned_by_the_store_and_refused_where_it_cannot_run_natively(
    tiny_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "s"
    monkeypatch.setenv(NATIVE_BF16_ENV, "1")  # a machine with bf16 creates the store
    extract(tiny_tree, store)
    assert open_store(store).fingerprint.precision == "mixed_bfloat16"
    assert "computed in mixed_bfloat16" in format_info(store_info(store))

    monkeypatch.setenv(NATIVE_BF16_ENV, "0")  # later, a machine without it
    assert run_precision("auto", store, rebuild=False) == "mixed_bfloat16"
    assert extract(tiny_tree, store).unchanged == 12  # nothing to compute: fine anywhere
    generation = read_manifest(store).generation
    write_image(tiny_tree / "cats" / "new.png", seed=77)
    result = CliRunner().invoke(
        main, ["extract", str(tiny_tree), "--store", str(store), "--weights", "random", "--input-size", "32"]
    )
    assert result.exit_code == REFUSED, result.output
    assert "Traceback" not in result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert "mixed_bfloat16" in line and "natively" in line and "--rebuild --precision float32" in line
    assert read_manifest(store).generation == generation  # nothing committed

    # float32 asked explicitly is another setting: refused by the fingerprint, rebuilt on request.
    with pytest.raises(Exception, match="precision: 'mixed_bfloat16' != 'float32'"):
        extract(tiny_tree, store, precision="float32")
    summary = extract(tiny_tree, store, precision="float32", rebuild=True)
    assert summary.computed == 13 and open_store(store).fingerprint.precision == "float32"


def test_a_store_refuses_maps_from_another_backend_or_device_kind(tiny_tree: Path, tmp_path: Path) -> None:
    store = tmp_path / "s"
    extract(tiny_tree, store, precision="float32")
    ours = read_manifest(store)
    versions = dict(ours.fingerprint.library_versions)
    assert versions["device"] == "cpu" and versions["keras_backend"]
    assert "on cpu" in format_info(store_info(store))
    compute = store_fields(open_store(store))["store"]["compute"]  # in every run record
    assert compute == {
        "precision": "float32",
        "decoder": "pil",
        **{k: versions[k] for k in ("keras_backend", "device")},
    }

    write_image(tiny_tree / "cats" / "new.png", seed=77)
    for key, other in (("keras_backend", "jax-elsewhere"), ("device", "gpu")):
        # The public writer records what another machine would have: same identity, other compute.
        recorded = tuple(sorted({**versions, key: other}.items()))
        with StoreWriter(
            store,
            fingerprint=dataclasses.replace(ours.fingerprint, library_versions=recorded),
            split_fractions=ours.split_fractions,
            source_root=ours.source_root,
        ) as writer:
            writer.commit()
        with pytest.raises(ComputeError, match=rf"{other!r}.* never mixes"):
            extract(tiny_tree, store, precision="float32")
        assert len(open_store(store)) == 12
        assert dict(read_manifest(store).fingerprint.library_versions)[key] == other  # kept

    summary = extract(tiny_tree, store, precision="float32", rebuild=True)
    assert summary.computed == 13
    assert dict(read_manifest(store).fingerprint.library_versions)["device"] == "cpu"
