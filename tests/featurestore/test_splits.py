"""The README's promise: an image never changes split as the data grows, and duplicates share one.

`split_of` is tested as a property over random sha256 ids and fractions; one extraction checks
that a store records exactly that split and keeps it when images are added.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from fractions import Fraction
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.splits import SPLITS, SplitFractions, split_of
from tests.conftest import write_image

#: Digests of random bytes, and any 64 hex digits (every one is a possible digest), which
#: reaches the extremes 0 and 2**256 - 1 that real digests almost never hit.
ids = st.binary().map(lambda data: hashlib.sha256(data).hexdigest()) | st.integers(0, 2**256 - 1).map(
    lambda n: f"{n:064x}"
)


@st.composite
def fractions(draw: st.DrawFn) -> SplitFractions:
    """Valid fractions, zeros and ones included: three non-negative weights, normalised."""
    weights = [draw(st.sampled_from([0, 1, 3]) | st.integers(0, 1000)) for _ in SPLITS]
    if sum(weights) == 0:
        weights[draw(st.integers(0, 2))] = 1
    total = sum(weights)
    return SplitFractions(**{name: weight / total for name, weight in zip(SPLITS, weights, strict=True)})


def sha256_ids(n: int, salt: str = "") -> list[str]:
    return [hashlib.sha256(f"{salt}{i}".encode()).hexdigest() for i in range(n)]


@given(ids, fractions())
def test_split_is_a_pure_function_of_the_id_and_the_fractions(image_id: str, split: SplitFractions) -> None:
    first = split_of(image_id, split)
    assert first in SPLITS
    assert split_of(image_id, split) == first
    assert split_of(image_id, SplitFractions(**split.to_dict())) == first  # as read back from a manifest


@given(st.lists(ids, min_size=1, max_size=30, unique=True), st.lists(ids, max_size=30), fractions())
def test_adding_images_never_moves_an_existing_one(
    existing: list[str], added: list[str], split: SplitFractions
) -> None:
    before = {image_id: split_of(image_id, split) for image_id in existing}
    grown = existing + added
    after = {image_id: split_of(image_id, split) for image_id in reversed(grown)}  # another order too
    assert {image_id: after[image_id] for image_id in existing} == before


@given(ids, st.text("0123456789abcdef", min_size=48, max_size=48), fractions())
def test_only_the_first_64_bits_of_an_id_decide(
    image_id: str, other_tail: str, split: SplitFractions
) -> None:
    # Duplicates share their whole id (see the store test below); ids that share only their first
    # 16 hex digits land together too, so the split needs nothing but those.
    assert split_of(image_id[:16] + other_tail, split) == split_of(image_id, split)


#: 20,000 real digests: each split's share is checked to 5 sigma (at most 1.8 points).
SAMPLE = sha256_ids(20_000, salt="sample-")


@settings(max_examples=25, deadline=None)  # 20,000 ids per example: ~30 ms each
@given(fractions())
def test_empirical_fractions_approach_the_requested_ones(split: SplitFractions) -> None:
    n = len(SAMPLE)
    counts = dict.fromkeys(SPLITS, 0)
    for image_id in SAMPLE:
        counts[split_of(image_id, split)] += 1
    for name, wanted in split.to_dict().items():
        sigma = math.sqrt(wanted * (1 - wanted) / n)
        assert abs(counts[name] / n - wanted) <= 5 * sigma + 1 / n, (name, counts, split)


@pytest.mark.parametrize(
    ("train", "validation", "test", "only"),
    [(1, 0, 0, "train"), (0, 1, 0, "validation"), (0, 0, 1, "test")],
)
@given(image_id=ids)
def test_a_fraction_of_one_takes_every_id(
    train: float, validation: float, test: float, only: str, image_id: str
) -> None:
    assert split_of(image_id, SplitFractions(train=train, validation=validation, test=test)) == only


@given(ids, fractions())
def test_a_fraction_of_zero_never_gets_an_id(image_id: str, split: SplitFractions) -> None:
    assert split.to_dict()[split_of(image_id, split)] > 0


@pytest.mark.parametrize("image_id", ["0" * 64, "f" * 64, "f" * 15 + "e" + "f" * 48])
@pytest.mark.parametrize(
    "split",
    [
        SplitFractions(train=1, validation=0, test=0),
        SplitFractions(train=0.5, validation=0.5, test=0),
        SplitFractions(train=0.3333333333, validation=0.6666666667, test=0),  # sums to 1 within 1e-9
    ],
)
def test_the_extreme_ids_stay_out_of_an_empty_test_split(image_id: str, split: SplitFractions) -> None:
    # Dividing the first 64 bits by 2**64 rounds the top 2**10 of them up to exactly 1.0, which
    # used to fall past train + validation into a test split of fraction 0.
    assert split_of(image_id, split) != "test"


@pytest.mark.parametrize("train", [0.7, 0.5, 0.15, 1 / 3])
def test_the_boundary_is_exact_at_64_bits(train: float) -> None:
    split = SplitFractions(train=train, validation=1 - train, test=0.0)
    first_not_train = math.ceil(Fraction(train) * 2**64)  # the exact boundary, no rounding
    assert split_of(f"{first_not_train - 1:016x}" + "f" * 48, split) == "train"
    assert split_of(f"{first_not_train:016x}" + "0" * 48, split) == "validation"


def test_default_fractions_are_the_readmes() -> None:
    assert SplitFractions().to_dict() == {"train": 0.7, "validation": 0.15, "test": 0.15}


@pytest.mark.parametrize(
    "text", ["0.7,0.15,0.15", "1,0,0", "0,0,1", "0.3333333333,0.3333333333,0.3333333334", " 0.5, 0.25,0.25 "]
)
def test_parse_accepts_three_fractions_summing_to_one(text: str) -> None:
    parsed = SplitFractions.parse(text)
    expected = [float(part) for part in text.split(",")]
    assert [parsed.train, parsed.validation, parsed.test] == expected
    assert SplitFractions(**parsed.to_dict()) == parsed  # what a manifest stores reads back equal


@pytest.mark.parametrize(
    "text",
    ["nan,0.5,0.5", "0.5,nan,0.5", "inf,0,0", "-inf,1,1", "-0.1,0.6,0.5", "0.7,0.2,0.2", "0.7,0.15,0.149"],
)
def test_parse_refuses_fractions_that_are_not_finite_non_negative_and_summing_to_one(text: str) -> None:
    with pytest.raises(ValueError, match=r"must be finite, >= 0 and sum to 1, got \("):
        SplitFractions.parse(text)


@pytest.mark.parametrize("text", ["0.5,0.5", "0.5,0.25,0.25,0", "a,b,c", ""])
def test_parse_refuses_what_is_not_three_numbers(text: str) -> None:
    with pytest.raises(ValueError, match=r"three numbers like 0\.7,0\.15,0\.15, not "):
        SplitFractions.parse(text)


def test_nan_is_refused_when_built_directly_too() -> None:
    # NaN passes `< 0` and the sum test, and never equals itself: a store that recorded it would
    # refuse every later run as "other settings".
    with pytest.raises(ValueError, match="must be finite"):
        SplitFractions(train=math.nan, validation=0.5, test=0.5)


def test_cli_refuses_nan_fractions_before_touching_the_store(tiny_tree: Path, tmp_path: Path) -> None:
    from classifiers.cli import main

    store = tmp_path / "s"
    result = CliRunner().invoke(
        main, ["extract", str(tiny_tree), "--store", str(store), "--splits", "nan,0.5,0.5"]
    )
    assert result.exit_code == 2  # click's usage error, naming the option
    assert "'--splits'" in result.output and "split fractions must be finite" in result.output
    assert not store.exists()


def test_a_store_keeps_each_images_split_as_the_data_grows(tiny_tree: Path, tmp_path: Path) -> None:
    """End to end: rows get `split_of(id)`; new images and copies move no existing row."""
    from featurestore.extract import ExtractConfig, run_extract
    from featurestore.extractor import Extractor
    from featurestore.store import open_store

    split = SplitFractions(train=0.5, validation=0.25, test=0.25)
    extractor = Extractor(weights="random", input_size=32)  # built once for both runs

    def extract_and_read() -> dict[str, tuple[str, str]]:
        config = ExtractConfig(
            source=tiny_tree,
            store=tmp_path / "s",
            weights="random",
            input_size=32,
            split_fractions=split,
            progress=False,
        )
        run_extract(config, extractor)
        data = open_store(tmp_path / "s").load()
        return {
            path: (image_id, split_name)
            for path, image_id, split_name in zip(data.paths, data.ids, data.splits, strict=True)
        }

    before = extract_and_read()
    assert all(name == split_of(image_id, split) for image_id, name in before.values())
    for i in range(8):
        write_image(tiny_tree / ("cats", "dogs")[i % 2] / f"new_{i}.png", seed=500 + i)
    shutil.copy(tiny_tree / "cats" / "cats_0.jpg", tiny_tree / "dogs" / "copy_of_cats_0.jpg")
    after = extract_and_read()
    assert len(after) == len(before) + 9
    assert {path: after[path] for path in before} == before
    assert after["dogs/copy_of_cats_0.jpg"] == after["cats/cats_0.jpg"]
    assert all(name == split_of(image_id, split) for image_id, name in after.values())
