"""Stable train/validation/test splits from an image's content id.

The split is a pure function of the id (sha256 of the file bytes) and the fractions, so an image
never changes split as the data grows, and duplicates of one image always land together.
"""

from __future__ import annotations

import dataclasses
import math

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SplitFractions:
    train: float = 0.7
    validation: float = 0.15
    test: float = 0.15

    def __post_init__(self) -> None:
        values = (self.train, self.validation, self.test)
        # NaN fails every comparison, `< 0` and the sum test included; a store that recorded it
        # would refuse every later run, since NaN never equals the NaN it is compared with.
        if not all(math.isfinite(v) and v >= 0 for v in values) or abs(sum(values) - 1.0) > 1e-9:
            raise ValueError(f"split fractions must be finite, >= 0 and sum to 1, got {values}")

    @classmethod
    def parse(cls, text: str) -> SplitFractions:
        """Parse '0.7,0.15,0.15' (train, validation, test)."""
        try:
            train, validation, test = (float(part) for part in text.split(","))
        except ValueError:
            raise ValueError(
                f"split fractions must be three numbers like 0.7,0.15,0.15, not {text!r}"
            ) from None
        return cls(train=train, validation=validation, test=test)

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def split_of(image_id: str, fractions: SplitFractions) -> str:
    """The split of a sha256 hex id: its first 64 bits as a fraction of 2**64, uniform in [0, 1).

    Compared exactly (a Python int against a float is exact): dividing first rounded ids within
    2**-54 of 1 up to 1.0, which then fell in a split whose fraction is 0. A split with fraction
    0 never gets an id, even when the others sum to 1 only within rounding.
    """
    position = int(image_id[:16], 16)
    if position < fractions.train * 2**64 or fractions.validation == fractions.test == 0:
        return "train"
    if position < (fractions.train + fractions.validation) * 2**64 or fractions.test == 0:
        return "validation"
    return "test"
