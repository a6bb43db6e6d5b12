"""Stage timings from many threads add up; stages without images record seconds only."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from featurestore.stages import StageTimes


class Ticks:
    """A clock that advances one second per reading."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_threads_add_up_and_rates_follow() -> None:
    times = StageTimes()
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert sorted(pool.map(lambda i: times.call("decode", abs, -i), range(200))) == list(range(200))
    times.add("model", 2.0, 50)
    times.add("model", 2.0, 30)
    stages = times.to_dict()
    assert stages["decode"]["images"] == 200 and stages["decode"]["seconds"] > 0
    assert stages["model"] == {"seconds": 4.0, "images": 80, "images_per_s": 20.0}


def test_a_stage_without_images_and_one_that_raises() -> None:
    times = StageTimes(clock=Ticks())
    with times.timed("plan"):
        pass
    with pytest.raises(ValueError), times.timed("write", 5):
        raise ValueError("disk full")
    assert times.to_dict() == {
        "plan": {"seconds": 1.0, "images": None, "images_per_s": None},
        "write": {"seconds": 1.0, "images": 5, "images_per_s": 5.0},  # the failed write still took time
    }
