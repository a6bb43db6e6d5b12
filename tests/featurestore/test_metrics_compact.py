"""`compact --metrics-file`: the compaction's figures in the Prometheus text format, parsed by
Prometheus' own client library; a file node_exporter would not read is refused before any work."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from featurestore.format import read_manifest
from featurestore.runs import list_runs
from tests.faults import run_cli
from tests.featurestore.test_compact import churned


def samples(prom: Path) -> dict[tuple[str, str | None], float]:
    families = text_string_to_metric_families(prom.read_text())
    return {
        (s.name, s.labels.get("status") or s.labels.get("outcome") or s.labels.get("stage")): s.value
        for family in families
        for s in family.samples
        if s.labels["kind"] == "compact"
    }


def test_compact_writes_its_figures_to_the_metrics_file(tmp_path: Path) -> None:
    store, prom = tmp_path / "s", tmp_path / "textfile" / "compact.prom"
    churned(store, nights=2)
    prom.parent.mkdir()
    result = run_cli("compact", store, "--retain", "0s", "--metrics-file", prom)
    assert result.returncode == 0, result.stderr
    [record] = list_runs(store, kind="compact")
    figures = samples(prom)
    assert figures[("featurestore_run_status", "ok")] == 1.0
    assert figures[("featurestore_run_exit_code", None)] == 0.0
    assert figures[("featurestore_run_images", "dropped_rows")] == record["counts"]["dropped_rows"] > 0
    assert figures[("featurestore_run_images", "live_rows")] == record["counts"]["live_rows"]
    assert figures[("featurestore_store_generation", None)] == read_manifest(store).generation
    assert list(prom.parent.iterdir()) == [prom]  # written atomically: no temporary file left


def test_compact_refuses_a_metrics_file_node_exporter_would_not_read(tmp_path: Path) -> None:
    store = tmp_path / "s"
    churned(store, nights=2)
    generation = read_manifest(store).generation
    result = run_cli("compact", store, "--metrics-file", tmp_path / "compact.txt")
    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        f"Error: --metrics-file {tmp_path / 'compact.txt'}: node_exporter's textfile collector "
        "reads only *.prom files"
    ]
    assert read_manifest(store).generation == generation and not list_runs(store, kind="compact")
    assert not (tmp_path / "compact.txt").exists()
