"""Issue 14, item 8: every numeric option of `extract` refuses 0, negative, NaN and huge values
before any work (no lock, no store folder, no model), in one line naming the option; the Python
API (`ExtractConfig`) refuses the same values."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from classifiers.cli import main
from featurestore.errors import ConfigError
from featurestore.extract_config import ExtractConfig

BAD_VALUES = ["0", "-3", "nan", "inf", "1e9", "1000000000000"]
INT_OPTIONS = ["--input-size", "--batch-size", "--commit-every", "--workers"]


@pytest.mark.parametrize("value", BAD_VALUES)
@pytest.mark.parametrize("option", INT_OPTIONS)
def test_numeric_extract_options_refuse_bad_values_before_any_work(
    tiny_tree: Path, tmp_path: Path, option: str, value: str
) -> None:
    store = tmp_path / "store"
    args = ["extract", str(tiny_tree), "--store", str(store), "--weights", "random", option, value]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output  # click's usage error, before the command runs
    assert f"'{option}'" in result.stderr and "Traceback" not in result.output
    assert not store.exists()


@pytest.mark.parametrize(
    "value", ["nan,0.5,0.5", "0.5,nan,0.5", "0,0,0", "-1,1,1", "1e308,0,0", "inf,0,0", "0.7,0.3", "a,b,c"]
)
def test_splits_refuse_bad_fractions_before_any_work(tiny_tree: Path, tmp_path: Path, value: str) -> None:
    store = tmp_path / "store"
    args = ["extract", str(tiny_tree), "--store", str(store), "--weights", "random", "--splits", value]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "'--splits'" in result.stderr, result.output
    assert not store.exists()


@pytest.mark.parametrize(
    ("field", "value", "option"),
    [
        ("input_size", 100_000, "--input-size"),
        ("input_size", 0, "--input-size"),
        ("batch_size", 0, "--batch-size"),
        ("batch_size", -4, "--batch-size"),
        ("batch_size", 10**9, "--batch-size"),
        ("batch_size", 2.5, "--batch-size"),
        ("workers", 0, "--workers"),
        ("workers", 10**6, "--workers"),
        ("commit_every", 0, "--commit-every"),
        ("commit_every", -3, "--commit-every"),
        ("commit_every", 10**12, "--commit-every"),
        ("commit_seconds", math.nan, "--commit-seconds"),
        ("commit_seconds", 0, "--commit-seconds"),
        ("dtype", "float64", "--dtype"),
    ],
)
def test_the_python_api_refuses_the_same_values(field: str, value: object, option: str) -> None:
    with pytest.raises(ConfigError, match=f"^{option} "):
        ExtractConfig(source=Path("images"), store=Path("store"), **{field: value})


def test_the_largest_allowed_values_are_accepted(tiny_tree: Path, tmp_path: Path) -> None:
    """The bounds refuse typos, not real settings: the maxima themselves pass validation."""
    from featurestore.extract_config import MAX_BATCH_SIZE, MAX_COMMIT_EVERY, MAX_WORKERS

    config = ExtractConfig(
        source=tiny_tree,
        store=tmp_path / "s",
        batch_size=MAX_BATCH_SIZE,
        workers=MAX_WORKERS,
        commit_every=MAX_COMMIT_EVERY,
        input_size=1024,
    )
    assert (config.batch_size, config.workers, config.commit_every) == (4096, 256, 65536)
