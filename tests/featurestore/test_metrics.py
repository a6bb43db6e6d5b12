"""Prometheus textfile metrics: parsed back with prometheus_client's own parser."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from featurestore.errors import ConfigError
from featurestore.metrics import metrics_text, write_metrics

RECORD = {
    "format": "featurestore.run/1",
    "kind": "extract",
    "status": "ok",
    "started": "2025-03-01T02:00:00.000000+00:00",
    "ended": "2025-03-01T02:10:00.500000+00:00",
    "seconds": 600.5,
    "exit_code": 0,
    "counts": {"new": 120, "changed": 3, "failed": 2, "removed": 1},
    "failed_by_reason": {"corrupt image data": 1, 'odd "quoted"\\reason\nline': 1},
    "stages": {"model": {"seconds": 40.0, "images": 123, "images_per_s": 3.075}},
    "bytes_added": 4_000_000,
    "generation": 17,
    "store": {"rows": 5000, "classes": {"cats": 2500, "dogs": 2500}, "bytes": 170_000_000},
    "drift": {
        "threshold": 0.75,
        "alpha": 0.01,
        "drifted": True,
        "overall": {"scope": "all", "auc": 0.91, "p_value": 0.002},
        "per_class": [
            {"scope": "cats", "auc": 0.95, "p_value": 0.002},
            {"scope": "dogs", "auc": None, "p_value": None},
        ],
    },
}


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge" and family.documentation
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def key(name: str, **labels: str) -> tuple[str, frozenset]:
    return "featurestore_" + name, frozenset({"store": "/stores/pets", "kind": "extract", **labels}.items())


def test_a_run_record_parses_back_with_its_values_and_labels() -> None:
    last = {**RECORD, "ended": "2025-02-28T02:05:00+00:00"}
    found = samples(metrics_text(RECORD, store="/stores/pets", last_success=last))
    assert found[key("run_status", status="ok")] == 1 and found[key("run_status", status="error")] == 0
    assert found[key("run_duration_seconds")] == 600.5
    assert found[key("run_end_timestamp_seconds")] == 1740795000.5
    assert found[key("run_last_success_timestamp_seconds")] == 1740708300
    assert found[key("run_images", outcome="new")] == 120
    assert found[key("run_failed_images", reason='odd "quoted"\\reason\nline')] == 1  # escaped and back
    assert found[key("run_stage_images_per_second", stage="model")] == pytest.approx(3.075)
    assert found[key("store_generation")] == 17 and found[key("store_images")] == 5000
    assert found[key("drift_auc", scope="cats")] == 0.95 and found[key("drift_detected")] == 1
    assert key("drift_auc", scope="dogs") not in found  # no value: no sample, not a fake zero


def test_each_metric_has_help_and_type_once() -> None:
    text = metrics_text(RECORD, store="s")
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(names) == len(set(names)) and len(names) > 10
    helps = [line.split()[2] for line in text.splitlines() if line.startswith("# HELP")]
    assert helps == names


def test_the_file_is_replaced_atomically_and_must_be_a_prom_file(tmp_path: Path) -> None:
    path = tmp_path / "featurestore_pets_extract.prom"
    path.write_text("old\n")
    inode = os.stat(path).st_ino
    write_metrics(path, {**RECORD, "status": "error", "exit_code": 1}, store="pets")
    assert os.stat(path).st_ino != inode  # a new file renamed over the old one
    assert (
        samples(path.read_text())[
            (
                "featurestore_run_status",
                frozenset({"store": "pets", "kind": "extract", "status": "error"}.items()),
            )
        ]
        == 1
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left
    with pytest.raises(ConfigError, match=r"\.prom"):
        write_metrics(tmp_path / "metrics.txt", RECORD, store="pets")
