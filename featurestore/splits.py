"""Stable train/validation/test splits from an image's content id.

The split is a pure function of the id (sha256 of the file bytes) and the fractions, so an image
never changes split as the data grows, and duplicates of one image always land together.
"""

from __future__ import annotations

import dataclasses

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SplitFractions:
    train: float = 0.7
    validation: float = 0.15
    test: float = 0.15

    def __post_init__(self) -> None:
        values = (self.train, self.validation, self.test)
        if any(v < 0 for v in values) or abs(sum(values) - 1.0) > 1e-9:
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {values}")

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
    """The split of a sha256 hex id: its first 64 bits as a uniform number in [0, 1)."""
    u = int(image_id[:16], 16) / 2**64
    if u < fractions.train:
        return "train"
    if u < fractions.train + fractions.validation:
        return "validation"
    return "test"
