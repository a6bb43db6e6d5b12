"""`finetune --metrics-file`: the run's figures in the Prometheus text format, parsed by
Prometheus' own client library; a file node_exporter would not read is refused before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from featurestore.runs import list_runs
from tests.classifiers.finetune.conftest import finetune_cli
from tests.faults import run_cli

pytestmark = pytest.mark.xdist_group("finetune")


def test_finetune_writes_its_figures_to_the_metrics_file(
    tiny_store: Path, dense_head: Path, tmp_path: Path
) -> None:
    prom = tmp_path / "textfile" / "finetune.prom"
    prom.parent.mkdir()
    report = finetune_cli(
        tiny_store, dense_head, tmp_path / "model", "--from-cache", "--metrics-file", str(prom)
    )
    record = list_runs(tiny_store, kind="finetune")[-1]
    assert record["extra"]["model"] == report["model_path"] == str(tmp_path / "model")
    figures = {
        (s.name, s.labels.get("status") or s.labels.get("stage")): s.value
        for family in text_string_to_metric_families(prom.read_text())
        for s in family.samples
        if s.labels["kind"] == "finetune" and s.labels["store"] == str(tiny_store.resolve())
    }
    assert figures[("featurestore_run_status", "ok")] == 1.0
    assert figures[("featurestore_run_exit_code", None)] == 0.0
    assert figures[("featurestore_run_stage_seconds", "total")] == pytest.approx(report["seconds"], abs=1e-3)
    assert figures[("featurestore_run_last_success_timestamp_seconds", None)] > 0
    assert list(prom.parent.iterdir()) == [prom]  # written atomically: no temporary file left


def test_finetune_refuses_a_metrics_file_node_exporter_would_not_read(
    tiny_store: Path, dense_head: Path, tmp_path: Path
) -> None:
    runs = len(list_runs(tiny_store, kind="finetune"))
    model = tmp_path / "model"
    args = [
        "--head",
        dense_head,
        "--out",
        model,
        "--weights",
        "random",
        "--metrics-file",
        tmp_path / "ft.txt",
    ]
    result = run_cli("finetune", tiny_store, *args)
    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        f"Error: --metrics-file {tmp_path / 'ft.txt'}: node_exporter's textfile collector "
        "reads only *.prom files"
    ]
    assert not model.exists() and len(list_runs(tiny_store, kind="finetune")) == runs
