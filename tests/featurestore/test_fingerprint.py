"""The fingerprint names a store's features: its digest must move with every identity field and
with nothing else (not key order, not library versions), and it must read back as written."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from featurestore.fingerprint import EXTRACTOR_VERSION, Fingerprint

WEIGHTS = "ab" * 32
BASE = Fingerprint(weights_sha256=WEIGHTS)
VERSIONS = (("h5py", "3.10.0"), ("keras", "3.5.0"), ("numpy", "1.26.4"))

#: A different valid value for every identity field; a field added to Fingerprint must get one.
OTHER_VALUES = {
    "backbone": "vgg19",
    "layer": "block4_pool",
    "input_size": 224,
    "interpolation": "pil-nearest",
    "preprocessing": "keras.applications.vgg16.preprocess_input(mode=torch)",
    "weights_sha256": "cd" * 32,
    "dtype": "float16",
    "precision": "mixed_bfloat16",
    "extra_layers": ("block3_pool",),
    "flip_views": True,
    "views": 4,
    "decoder": "pil-draft",
    "extractor_version": EXTRACTOR_VERSION + 1,
}


def test_the_digest_of_a_known_fingerprint_does_not_change() -> None:
    # Stores name their features by this digest: if it moves, every existing store is refused
    # (or worse, silently rebuilt). Change it only with a plan for the stores already written.
    assert BASE.digest == "48da1a1b955846b662ccc78eddf0f5f2cf972bb394e1c6cf39d39395ec501322"


def test_the_default_decoder_leaves_the_digest_of_older_stores_alone() -> None:
    older = {k: v for k, v in BASE.to_dict().items() if k != "decoder"}  # written before decoders
    assert Fingerprint.from_dict(older).digest == BASE.digest
    assert "decoder" in Fingerprint.from_dict(older).to_dict()


def test_zero_views_leave_the_digest_of_older_stores_alone() -> None:
    older = {k: v for k, v in BASE.to_dict().items() if k != "views"}  # written before views
    assert Fingerprint.from_dict(older).digest == BASE.digest
    assert Fingerprint.from_dict(older).views == 0
    with pytest.raises(ValueError, match="views must be between 0 and"):
        dataclasses.replace(BASE, views=-1)


def test_every_identity_field_has_another_value_here() -> None:
    identity = {f.name for f in dataclasses.fields(Fingerprint)} - {"library_versions"}
    assert set(OTHER_VALUES) == identity


@pytest.mark.parametrize("field", sorted(OTHER_VALUES))
def test_the_digest_changes_with_every_identity_field(field: str) -> None:
    changed = dataclasses.replace(BASE, **{field: OTHER_VALUES[field]})
    assert changed.digest != BASE.digest
    assert changed != BASE
    assert [line.split(":")[0] for line in changed.differences(BASE)] == [field]


def test_library_versions_are_recorded_but_leave_the_digest_and_equality_alone() -> None:
    with_versions = dataclasses.replace(BASE, library_versions=VERSIONS)
    newer = dataclasses.replace(BASE, library_versions=(("numpy", "2.0.0"),))
    assert with_versions.digest == newer.digest == BASE.digest
    assert with_versions == newer == BASE
    assert with_versions.differences(newer) == []
    assert with_versions.to_dict()["library_versions"] == dict(VERSIONS)


@given(st.permutations(list(dataclasses.replace(BASE, library_versions=VERSIONS).to_dict().items())))
def test_the_digest_does_not_depend_on_the_order_of_a_dicts_keys(items: list) -> None:
    read = Fingerprint.from_dict(dict(items))
    assert read.digest == BASE.digest
    assert read.library_versions == VERSIONS  # sorted on reading, whatever the stored order
    assert (
        Fingerprint.from_dict({"library_versions": dict(reversed(VERSIONS)), "weights_sha256": WEIGHTS})
        == read
    )


@pytest.mark.parametrize(
    "fingerprint",
    [BASE, dataclasses.replace(BASE, **OTHER_VALUES), dataclasses.replace(BASE, library_versions=VERSIONS)],
)
def test_to_dict_and_from_dict_round_trip_through_json(fingerprint: Fingerprint) -> None:
    data = json.loads(json.dumps(fingerprint.to_dict()))  # as a manifest stores it
    read = Fingerprint.from_dict(data)
    assert read == fingerprint
    assert read.digest == fingerprint.digest
    assert read.library_versions == fingerprint.library_versions
    assert read.to_dict() == fingerprint.to_dict()
    assert isinstance(read.extra_layers, tuple)  # hashable, as a frozen dataclass needs


def test_from_dict_accepts_the_digest_it_is_stored_with_and_fills_defaults() -> None:
    assert Fingerprint.from_dict({**BASE.to_dict(), "digest": BASE.digest}) == BASE
    assert Fingerprint.from_dict({"weights_sha256": WEIGHTS}) == BASE


def test_unknown_fields_are_refused_by_name() -> None:
    with pytest.raises(
        ValueError, match=r"unknown fingerprint fields \['device', 'sampler'\] \(written by a newer"
    ):
        Fingerprint.from_dict({**BASE.to_dict(), "device": "gpu", "sampler": "pil"})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dtype": "float64"}, r"dtype must be one of \('float32', 'float16'\), not 'float64'"),
        ({"precision": "float16"}, r"precision must be one of .*, not 'float16'"),
        ({"input_size": 31}, r"input_size must be between 32 and 1024, not 31"),
        ({"input_size": 1025}, r"input_size must be between 32 and 1024, not 1025"),
        ({"extra_layers": ("block5_pool",)}, r"extra_layers repeats the main layer 'block5_pool'"),
        ({"weights_sha256": "ab" * 31}, "weights_sha256 must be a sha256 hex digest"),
    ],
)
def test_invalid_values_are_refused_on_creation(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Fingerprint(**{"weights_sha256": WEIGHTS, **changes})
    with pytest.raises(ValueError, match=message):  # and when read from a manifest
        Fingerprint.from_dict({**BASE.to_dict(), **changes})


def test_weights_are_required_and_the_fingerprint_is_frozen() -> None:
    with pytest.raises(TypeError, match="weights_sha256"):
        Fingerprint()  # type: ignore[call-arg]
    with pytest.raises(dataclasses.FrozenInstanceError):
        BASE.layer = "block4_pool"  # type: ignore[misc]
